"""PDM-Closed's proposals, NAVSIM v1.1's ego-progress reference, written from its definition (docs/navsim-notes.md);
`reworld.planning.pdm.pdm_closed_trajectory` scores them and picks one.

The reference planner drives along the route centreline with IDM. It has 15 proposals: target speeds of
0.2 … 1.0 × the speed limit on the centreline and on the centreline shifted 1 m to either side. Each proposal
is tracked by the same LQR and bicycle as the evaluation and scored with the PDM formula against
constant-velocity forecasts of the agents, not their true future. The best proposal, ties going to the lowest
index, becomes the trajectory whose progress under the true future normalises EP.

IDM follows NAVSIM's batch policy:
- s* = g0 + vT + v(v − v_lead) / (2√(ab)).
- The acceleration is a[1 − (v/v_target)^10 − (s*/gap)²], clipped to [−b, a].
- Explicit Euler at 0.1 s.
- The leader is the nearest forecast agent whose box meets the path's corridor ahead. It is updated on even steps
  and, as in NAVSIM, unset at the first step (x_lead = 0).

Where we differ, by necessity or simplification:
- **Speed limit.** Our scenes carry none (nuScenes maps have none), so NAVSIM's fallback of 15 m/s is used.
- **Corridor.** The route is the scene's centreline, not a Dijkstra search over route lanes. The corridor is that
  path from the ego's projection onwards, buffered by half the ego width.
- **Proposal tracking.** Each proposal enters the tracker as its poses at 0.5 s, like a submission, rather than at
  0.1 s.
- **Red lights.** None; the scenes have no traffic lights.
"""
from __future__ import annotations

import math

import numpy as np
import shapely

from reworld.planning.scene import PlanningScene

SPEED_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)
LATERAL_OFFSETS = (0.0, -1.0, 1.0)  # [m] path-major order: centreline, right, left
FALLBACK_SPEED_LIMIT = 15.0  # [m/s]
MIN_GAP, HEADWAY, A_MAX, B_MAX, EXPONENT = 1.0, 1.5, 1.5, 3.0, 10
DT, STEPS = 0.1, 40


def _path(scene: PlanningScene) -> np.ndarray:
    """(K, 2) route centreline in the ego frame; straight ahead when the scene has none."""
    line = np.asarray(scene.centerline, dtype=np.float64)
    if len(line) < 2 or scene.centerline_geometry is None:
        return np.stack([np.linspace(-10.0, 200.0, 50), np.zeros(50)], -1)
    keep = np.r_[True, np.hypot(*np.diff(line, axis=0).T) > 1e-6]
    return line[keep]


class _Path:
    """A polyline with progress (cumulative length) and unwrapped heading, interpolated linearly."""

    def __init__(self, xy: np.ndarray):
        seg = np.diff(xy, axis=0)
        self.xy = xy
        self.s = np.r_[0.0, np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))]
        head = np.arctan2(seg[:, 1], seg[:, 0])
        self.heading = np.unwrap(np.r_[head, head[-1:]])
        self.line = shapely.LineString(xy)
        self.length = float(self.s[-1])

    def at(self, s: np.ndarray) -> np.ndarray:
        """(..., 3) [x, y, heading] at progress `s` (clipped to the path)."""
        s = np.clip(s, 1e-5, self.length)
        return np.stack([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1]),
                         np.interp(s, self.s, self.heading)], -1)

    def shifted(self, offset: float) -> "_Path":
        if offset == 0.0:
            return self
        n = np.stack([-np.sin(self.heading), np.cos(self.heading)], -1)  # left normal
        return _Path(self.xy + offset * n)

    def project(self, x, y) -> np.ndarray:
        return shapely.line_locate_point(self.line, shapely.points(np.stack([np.asarray(x), np.asarray(y)], -1)))


def forecast_scene(scene: PlanningScene, horizon_s: float = 5.0) -> PlanningScene:
    """The scene with every agent replaced by its constant-velocity forecast from its first state (static objects
    and agents present at one time only stand still): what PDM-Closed scores its proposals against. Only the agents
    seen at t = 0: those that enter later are not in the frame PDM-Closed plans from."""
    from reworld.data.types import AgentTrack

    agents = []
    for a in scene.agents:
        tr = a.track
        if tr[0, 0] > 0.05:
            continue  # not yet seen at t = 0: PDM-Closed plans from the current frame's detections, as NAVSIM's does
        if len(tr) >= 2 and a.type != "static":
            dt = tr[1, 0] - tr[0, 0]
            vx, vy = (tr[1, 1] - tr[0, 1]) / dt, (tr[1, 2] - tr[0, 2]) / dt
        else:
            vx = vy = 0.0
        t0 = tr[0, 0]
        t = np.array([t0, t0 + horizon_s])
        track = np.stack([t, tr[0, 1] + vx * (t - t0), tr[0, 2] + vy * (t - t0), np.full(2, tr[0, 3])], -1)
        agents.append(AgentTrack(a.id, a.type, a.length, a.width, track if (vx or vy) else track[:1]))
    return PlanningScene(
        ego_speed=scene.ego_speed, ego_acceleration=scene.ego_acceleration, ego_yaw_rate=scene.ego_yaw_rate,
        ego_length=scene.ego_length, ego_width=scene.ego_width, command=scene.command,
        drivable_area=scene.drivable_area, drivable_holes=scene.drivable_holes, centerline=scene.centerline,
        agents=agents, expert=scene.expert, lanes=scene.lanes, intersections=scene.intersections,
        ego_center_offset=scene.ego_center_offset)


def _agent_boxes(scene: PlanningScene, times: np.ndarray):
    """Forecast agent boxes at `times`: shapely polygons (A, T) (an object array), centres (A, T, 2), headings
    (A,), speed (A,)."""
    polys, centres, headings, speeds = [], [], [], []
    for a in scene.agents:
        tr = a.track
        x = np.interp(times, tr[:, 0], tr[:, 1])
        y = np.interp(times, tr[:, 0], tr[:, 2])
        h = float(tr[0, 3])
        v = 0.0
        if len(tr) >= 2 and a.type != "static":
            v = float(np.hypot(tr[1, 1] - tr[0, 1], tr[1, 2] - tr[0, 2]) / (tr[1, 0] - tr[0, 0]))
        c, s = math.cos(h), math.sin(h)
        hl, hw = a.length / 2, a.width / 2
        corners = np.array([[hl, hw], [-hl, hw], [-hl, -hw], [hl, -hw]])
        rings = np.stack([x[:, None] + corners[:, 0] * c - corners[:, 1] * s,
                          y[:, None] + corners[:, 0] * s + corners[:, 1] * c], -1)  # (T, 4, 2)
        polys.append(shapely.polygons(rings))
        centres.append(np.stack([x, y], -1))
        headings.append(h)
        speeds.append(v)
    polys = np.stack(polys) if polys else np.empty((0, len(times)), dtype=object)
    return polys, centres, np.array(headings), np.array(speeds)


def _ego_box(scene: PlanningScene, pose: np.ndarray):
    """The ego's box at `pose` [x, y, heading] (its centre `ego_center_offset` ahead of the pose)."""
    off = scene.ego_center_offset
    ego = shapely.box(off - scene.ego_length / 2, -scene.ego_width / 2, off + scene.ego_length / 2,
                      scene.ego_width / 2)
    ego = shapely.affinity.rotate(ego, float(pose[2]), use_radians=True, origin=(0, 0))
    return shapely.affinity.translate(ego, float(pose[0]), float(pose[1]))


def idm_unroll(scene: PlanningScene, path: _Path, target_speed: float, boxes=None) -> np.ndarray:
    """Progress along `path` at 0 … 4 s (41 values) of IDM from the ego's projection and speed. `boxes`: the
    scene's `_agent_boxes` at those times (computed when None; `proposals` computes them once for its 15)."""
    x = float(path.project(0.0, 0.0))
    v = float(scene.ego_speed)
    times = np.arange(STEPS + 1) * DT
    polys, centres, headings, speeds = _agent_boxes(scene, times) if boxes is None else boxes
    corridor = shapely.buffer(shapely.LineString(path.at(np.linspace(x, x + target_speed * 5.0, 50))[:, :2]),
                              scene.ego_width / 2, cap_style="square")
    shapely.prepare(corridor)
    # which agent boxes touch the corridor, at every step in one vectorised call (the same predicate the loop
    # below asked agent by agent; with the boxes made once, a scene's 15 proposals take 0.064 s instead of 0.20 s)
    in_corridor = shapely.intersects(corridor, polys)  # (A, T)
    centre_xy = np.stack(centres) if len(centres) else np.zeros((0, len(times), 2))  # (A, T, 2)
    out = [x]
    x_lead, v_lead, l_rear = 0.0, 0.0, 0.0  # NAVSIM never sets the leader before the first step
    sqrt_ab = 2.0 * math.sqrt(A_MAX * B_MAX)
    for k in range(1, STEPS + 1):
        if k % 2 == 0:  # the leader, refreshed every other step from the previous state
            x_lead, v_lead, l_rear = path.length, 0.0, scene.ego_length / 2
            best, ego = math.inf, None
            near = np.flatnonzero(in_corridor[:, k])
            ahead = path.project(*centre_xy[near, k].T) > x if len(near) else near  # one call for them all
            for a in near[ahead]:  # in the agents' order, as before: ties keep the first
                poly = polys[a, k]
                if ego is None:  # the ego's pose and box, made only when an agent ahead needs its distance
                    pose = path.at(np.array(x))
                    ego = _ego_box(scene, pose)
                d = float(shapely.distance(ego, poly))
                if d < best:
                    best = d
                    rel = headings[a] - float(pose[2])
                    x_lead, v_lead, l_rear = x + d, speeds[a] * math.cos(rel), 0.0
        s_star = MIN_GAP + v * HEADWAY + v * (v - v_lead) / sqrt_ab
        gap = max(x_lead - x - l_rear, MIN_GAP)
        accel = A_MAX * (1.0 - (v / max(target_speed, 1e-6)) ** EXPONENT - (s_star / gap) ** 2)
        accel = min(max(accel, -B_MAX), A_MAX)
        x, v = x + DT * v, v + DT * accel
        out.append(x)
    return np.array(out)


def proposals(scene: PlanningScene, speed_limit: float = FALLBACK_SPEED_LIMIT) -> np.ndarray:
    """(15, 8, 3) proposal poses at 0.5 … 4 s, path-major (offsets 0, −1, +1 m; fractions 0.2 … 1.0)."""
    base = _Path(_path(scene))
    boxes = _agent_boxes(scene, np.arange(STEPS + 1) * DT)  # the same for every proposal
    out = []
    for offset in LATERAL_OFFSETS:
        path = base.shifted(offset)
        for fraction in SPEED_FRACTIONS:
            progress = idm_unroll(scene, path, fraction * speed_limit, boxes)
            out.append(path.at(progress[5::5]))  # 0.5 … 4.0 s
    return np.stack(out)
