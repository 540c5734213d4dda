"""Traffic of one scene: the ego and other cars follow lanes with an IDM-like controller, parked and
stopped cars stand, pedestrians walk along sidewalks or cross at crosswalks.

All drivers are simulated together at the camera rate; each one looks ahead along its own route for the
nearest road user in its way (same direction, standing, or a pedestrian) and keeps an IDM gap, and it
slows for curves so that lateral acceleration stays comfortable. Crossing conflicts are not negotiated:
the finished simulation is checked box against box, and any agent that would touch another one, or come
within one second of the ego's path, is dropped and the scene simulated again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reworld.data.synth.geometry import Path, box_corners, boxes_overlap
from reworld.data.synth.layout import Layout, route_path
from reworld.data.synth.params import SynthParams

# name: (category, length range, width range, height range) [m]
VEHICLE_TYPES = {
    "car": ("vehicle.car", (3.9, 4.8), (1.75, 1.95), (1.42, 1.62)),
    "suv": ("vehicle.car", (4.6, 5.1), (1.9, 2.05), (1.7, 1.95)),
    "truck": ("vehicle.truck", (6.5, 9.0), (2.3, 2.5), (2.8, 3.4)),
    "bus": ("vehicle.bus.rigid", (10.5, 12.0), (2.5, 2.6), (3.0, 3.3)),
}
LOOK_STEP = 2  # [m] spacing of the points a driver checks ahead
VEHICLE_MIX = (("car", 0.62), ("suv", 0.2), ("truck", 0.12), ("bus", 0.06))
CAR_COLOURS = [(0.85, 0.85, 0.85), (0.12, 0.12, 0.14), (0.55, 0.08, 0.08), (0.12, 0.22, 0.5), (0.5, 0.52, 0.55),
               (0.88, 0.88, 0.9), (0.2, 0.35, 0.25), (0.75, 0.6, 0.2), (0.3, 0.3, 0.32), (0.6, 0.62, 0.66)]
SHIRT_COLOURS = [(0.7, 0.15, 0.15), (0.15, 0.3, 0.6), (0.85, 0.8, 0.3), (0.2, 0.5, 0.3), (0.9, 0.9, 0.9),
                 (0.25, 0.25, 0.28)]


@dataclass
class Track:
    """One road user over the scene (index 0 of a scene's tracks is the ego)."""

    id: str
    kind: str  # ego | car | suv | truck | bus | pedestrian
    category: str
    state: str  # moving | parked | stopped | walking
    length: float  # [m]
    width: float  # [m]
    height: float  # [m]
    colour: tuple[float, float, float]
    xy: np.ndarray  # (T, 2) [m]
    yaw: np.ndarray  # (T,) [rad]
    speed: np.ndarray  # (T,) [m/s]


@dataclass
class _Driver:
    track: Track
    path: Path
    s0: float
    v0: float
    v_des: float


def simulate_scene(rng: np.random.Generator, layout: Layout, p: SynthParams, n_steps: int) -> list[Track]:
    """Tracks of the ego (first) and every other road user, at the camera rate."""
    dt = 1.0 / p.sweep_hz
    ego = _ego_driver(rng, layout, p, n_steps)
    drivers = [ego] + _spawn_drivers(rng, layout, p, n_steps, ego)
    statics = _spawn_parked(rng, layout, p, n_steps, _ego_centre(ego)) + _spawn_stopped(rng, layout, p, n_steps)
    ego_alone = _run(drivers[:1], [], p, n_steps, dt)[0]
    peds = _spawn_pedestrians(rng, layout, p, n_steps, dt, ego_alone)
    others = statics + peds
    for _ in range(10):
        moving = _run(drivers, others, p, n_steps, dt)
        bad = _conflicts(moving + others)
        if not bad:
            break
        keep = [i for i in range(len(moving) + len(others)) if i not in bad]
        drivers = [d for i, d in enumerate(drivers) if i in keep]
        others = [o for j, o in enumerate(others) if len(moving) + j in keep]
    else:
        moving = _run(drivers[:1], [], p, n_steps, dt)
        others = []
    return moving + others


# ----------------------------------------------------------------------------------------------- spawning

def _vehicle(rng: np.random.Generator, tid: str, state: str, n_steps: int, kinds=VEHICLE_MIX) -> Track:
    names, probs = zip(*kinds)
    kind = str(rng.choice(names, p=np.array(probs) / sum(probs)))
    cat, lr, wr, hr = VEHICLE_TYPES[kind]
    colour = CAR_COLOURS[int(rng.integers(0, len(CAR_COLOURS)))]
    if kind == "bus":
        colour = [(0.85, 0.75, 0.2), (0.2, 0.4, 0.7), (0.8, 0.8, 0.82)][int(rng.integers(0, 3))]
    return Track(tid, kind, cat, state, float(rng.uniform(*lr)), float(rng.uniform(*wr)), float(rng.uniform(*hr)),
                 colour, np.zeros((n_steps, 2)), np.zeros(n_steps), np.zeros(n_steps))


def _ego_driver(rng, layout: Layout, p: SynthParams, n_steps: int) -> _Driver:
    track = Track("ego", "ego", "vehicle.ego", "moving", p.ego_length, p.ego_width, p.ego_height,
                  (0.5, 0.5, 0.5), np.zeros((n_steps, 2)), np.zeros(n_steps), np.zeros(n_steps))
    v_des = float(rng.uniform(p.ego_speed_min, p.ego_speed_max))
    return _Driver(track, route_path(layout, layout.ego_route), layout.ego_start, v_des, v_des)


def _lane_route(rng, layout: Layout, lane_id: str) -> list[str]:
    route = [lane_id]
    while layout.lanes[route[-1]].next:
        options = layout.lanes[route[-1]].next
        straight = [o for o in options if _is_straight(layout, o)]
        pick = straight[0] if straight and rng.random() < 0.6 else options[int(rng.integers(0, len(options)))]
        route.append(pick)
    return route


def _is_straight(layout: Layout, lane_id: str) -> bool:
    return all(abs(k) < 1e-9 for k in layout.lanes[lane_id].path.ks)


def _spawn_drivers(rng, layout: Layout, p: SynthParams, n_steps: int, ego: _Driver) -> list[_Driver]:
    drivers = []
    ego_lane = layout.ego_route[0]
    centre = _ego_centre(ego)
    stopped_lanes = _queued_lanes(layout)
    for road in layout.roads:
        for lane_id in road.fwd + road.bwd:
            if lane_id in stopped_lanes:
                continue
            lane = layout.lanes[lane_id]
            s = float(rng.uniform(5.0, 40.0))
            while s < lane.path.length - 20.0:
                if lane_id == ego_lane and abs(s - ego.s0) < 30.0:
                    s = ego.s0 + 30.0 + float(rng.uniform(0.0, 25.0))
                    continue
                if rng.random() < 0.45 and _near(lane.path, s, centre, 220.0):
                    track = _vehicle(rng, f"veh{len(drivers)}", "moving", n_steps)
                    route = _lane_route(rng, layout, lane_id)
                    v_des = float(rng.uniform(6.5, 12.5))
                    drivers.append(_Driver(track, route_path(layout, route), s, v_des * 0.9, v_des))
                s += float(rng.uniform(28.0, 75.0))
    return drivers


def _ego_centre(ego: _Driver) -> np.ndarray:
    """Roughly where the ego will be halfway through the scene: spawn traffic only around there."""
    return ego.path.poses_at(np.array([ego.s0 + 90.0]))[0, :2]


def _near(path: Path, s: float, centre: np.ndarray, radius: float) -> bool:
    return bool(np.linalg.norm(path.poses_at(np.array([s]))[0, :2] - centre) < radius)


def _queued_lanes(layout: Layout) -> set[str]:
    """Incoming lanes of the crossing road, held at a red light while the ego has green."""
    out = set()
    for road in layout.roads:
        if road.stop_end and road.name in ("N", "S"):
            out.update(road.bwd)
    return out


def _spawn_stopped(rng, layout: Layout, p: SynthParams, n_steps: int) -> list[Track]:
    tracks = []
    for lane_id in sorted(_queued_lanes(layout)):
        path = layout.lanes[lane_id].path
        s = path.length - 5.2
        for _ in range(int(rng.integers(0, 4))):
            t = _vehicle(rng, f"stop{len(tracks)}", "stopped", n_steps, kinds=VEHICLE_MIX[:3])
            s -= t.length / 2
            _stand(t, path, s)
            tracks.append(t)
            s -= t.length / 2 + float(rng.uniform(1.5, 3.0))
    return tracks


def _spawn_parked(rng, layout: Layout, p: SynthParams, n_steps: int, centre: np.ndarray) -> list[Track]:
    tracks = []
    for road in layout.roads:
        n = len(road.fwd)
        for side in (-1.0, 1.0):
            edge = road.ref.offset(side * (n * p.lane_width + p.shoulder_width / 2))
            path = edge if side < 0 else edge.reversed()
            s = float(rng.uniform(18.0, 60.0))
            while s < path.length - 18.0:
                if rng.random() < 0.35 and _near(path, s, centre, 200.0):
                    t = _vehicle(rng, f"park{len(tracks)}", "parked", n_steps, kinds=VEHICLE_MIX[:2])
                    t.width = min(t.width, 1.95)
                    _stand(t, path, s)
                    tracks.append(t)
                s += float(rng.uniform(8.0, 40.0))
    if layout.junction_box is not None:
        hx, hy = layout.junction_box
        tracks = [t for t in tracks if abs(t.xy[0, 0]) > hx + 14.0 or abs(t.xy[0, 1]) > hy + 14.0]
    return tracks


def _stand(t: Track, path: Path, s: float) -> None:
    x, y, h = path.poses_at(np.array([s]))[0]
    t.xy[:] = (x, y)
    t.yaw[:] = h


def _spawn_pedestrians(rng, layout: Layout, p: SynthParams, n_steps: int, dt: float, ego: Track) -> list[Track]:
    tracks = []
    times = np.arange(n_steps) * dt
    for road in layout.roads:
        for side in (-1.0, 1.0):
            for _ in range(int(rng.integers(0, 3))):
                walk = road.ref.offset(side * (road.half_width + p.sidewalk_width / 2))
                if rng.random() < 0.5:
                    walk = walk.reversed()
                v = float(rng.uniform(1.0, 1.6))
                s_ego = float(np.argmin(np.linalg.norm(walk.sample(1.0)[:, :2] - ego.xy[len(ego.xy) // 2], axis=1)))
                s = np.clip(s_ego + float(rng.uniform(-100.0, 100.0)) + v * times, 0.0, walk.length)
                tracks.append(_ped_track(rng, f"ped{len(tracks)}", walk.poses_at(s), s, dt))
    crossings = _crossing_lines(layout, p, ego)
    for a, b, t_lo, t_hi in crossings:
        if rng.random() < 0.4:
            continue
        for _ in range(int(rng.integers(1, 3))):
            v = float(rng.uniform(1.1, 1.5))
            t0 = float(rng.uniform(t_lo, t_hi))
            jitter = np.array([0.0, 0.0]) + rng.uniform(-0.8, 0.8, size=2)
            if rng.random() < 0.5:
                a, b = b, a
            length = float(np.linalg.norm(b - a))
            s = np.clip((times - t0) * v, 0.0, length)
            xy = a[None] + jitter + (b - a)[None] * (s / length)[:, None]
            h = math.atan2(b[1] - a[1], b[0] - a[0])
            poses = np.concatenate([xy, np.full((n_steps, 1), h)], axis=1)
            tracks.append(_ped_track(rng, f"ped{len(tracks)}", poses, s, dt))
    return tracks


def _crossing_lines(layout: Layout, p: SynthParams, ego: Track):
    """(start, end, earliest, latest start time) of crosswalk walks that never meet the ego.

    At a junction, walkers wait until the ego has passed their crosswalk (if it passes at all); on an open
    road they cross far ahead, where the ego (whose free drive is `ego`) can only arrive after they are done.
    """
    out = []
    if layout.junction_box is not None:
        for road in layout.roads:
            x, y, h = road.ref.poses_at(np.array([2.5]))[0]
            nrm = np.array([-math.sin(h), math.cos(h)])
            w = road.half_width + 1.0
            near = np.linalg.norm(ego.xy - np.array([x, y]), axis=1) < w + 6.0
            t_free = (np.nonzero(near)[0].max() + 1) / p.sweep_hz + 1.5 if near.any() else 0.0
            out.append((np.array([x, y]) - w * nrm, np.array([x, y]) + w * nrm, t_free, t_free + 6.0))
    else:
        road = layout.roads[0]
        grid = road.ref.sample(1.0)
        s = float(np.argmin(np.linalg.norm(grid[:, :2] - ego.xy[-1], axis=1))) + 12.0
        x, y, h = road.ref.poses_at(np.array([s]))[0]
        nrm = np.array([-math.sin(h), math.cos(h)])
        w = road.half_width + 1.0
        out.append((np.array([x, y]) - w * nrm, np.array([x, y]) + w * nrm, 0.0, 1.0))
    return out


def _ped_track(rng, tid: str, poses: np.ndarray, s: np.ndarray, dt: float) -> Track:
    speed = np.abs(np.gradient(s, dt))
    colour = SHIRT_COLOURS[int(rng.integers(0, len(SHIRT_COLOURS)))]
    return Track(tid, "pedestrian", "human.pedestrian.adult", "walking", float(rng.uniform(0.55, 0.75)),
                 float(rng.uniform(0.6, 0.75)), float(rng.uniform(1.6, 1.88)), colour,
                 poses[:, :2].copy(), poses[:, 2].copy(), speed)


# ----------------------------------------------------------------------------------------------- dynamics

def _allowed_speed(path: Path, v_des: float, p: SynthParams) -> tuple[np.ndarray, np.ndarray]:
    """Speed limit along the path (1 m grid): comfortable in curves, braking in time, stopping at its end."""
    s = np.arange(0.0, path.length, 1.0)
    k = np.abs(path.curvature_at(s))
    v = np.minimum(v_des, np.sqrt(p.lat_acc_comfort / np.maximum(k, 1e-4)))
    v[-1] = 0.0
    for i in range(len(v) - 2, -1, -1):
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2.0 * p.brake_comfort))
    return s, v


def _run(drivers: list[_Driver], others: list[Track], p: SynthParams, n_steps: int, dt: float) -> list[Track]:
    n_d = len(drivers)
    look = int(p.lookahead)
    grids = [d.path.sample(1.0) for d in drivers]
    limits = [_allowed_speed(d.path, d.v_des, p)[1] for d in drivers]
    n_max = max(len(g) for g in grids) + look + 2
    pts = np.full((n_d, n_max, 3), 1e6)
    vlim = np.zeros((n_d, n_max))
    for i, (g, lim) in enumerate(zip(grids, limits)):
        pts[i, : len(g)] = g
        pts[i, : len(g), 2] = np.unwrap(g[:, 2])
        vlim[i, : len(lim)] = lim
    lengths = np.array([d.path.length for d in drivers])
    hl_d = np.array([d.track.length / 2 for d in drivers])
    w_d = np.array([d.track.width for d in drivers])
    v_des = np.array([d.v_des for d in drivers])
    hl_o = np.array([o.length / 2 for o in others])
    w_o = np.array([o.width for o in others])
    ped_o = np.array([o.kind == "pedestrian" for o in others], dtype=bool)
    s = np.array([d.s0 for d in drivers])
    v = np.minimum([d.v0 for d in drivers], vlim[np.arange(n_d), s.astype(int)])
    acc = np.zeros(n_d)
    s_hist, v_hist = np.zeros((n_steps, n_d)), np.zeros((n_steps, n_d))
    rows = np.arange(n_d)
    win = np.arange(0, look, LOOK_STEP)
    hl_all = np.concatenate([hl_d, hl_o])
    w_all = np.concatenate([w_d, w_o])
    ped_all = np.concatenate([np.zeros(n_d, bool), ped_o])
    for t in range(n_steps):
        s_hist[t], v_hist[t] = s, v
        i0 = np.minimum(s.astype(int), n_max - look - 2)
        frac = s - i0
        here = pts[rows, i0] * (1 - frac)[:, None] + pts[rows, i0 + 1] * frac[:, None]
        xy = np.concatenate([here[:, :2], np.array([o.xy[t] for o in others]).reshape(-1, 2)])
        hh = np.concatenate([here[:, 2], np.array([o.yaw[t] for o in others])])
        vv = np.concatenate([v, np.array([o.speed[t] for o in others])])
        ahead = pts[rows[:, None], i0[:, None] + win[None]]  # (D, L, 3) every LOOK_STEP metres
        ch, sh = np.cos(ahead[:, :, 2])[:, :, None], np.sin(ahead[:, :, 2])[:, :, None]
        dx = xy[None, None, :, 0] - ahead[:, :, None, 0]  # (D, L, E)
        dy = xy[None, None, :, 1] - ahead[:, :, None, 1]
        lat = -sh * dx + ch * dy
        lon = ch * dx + sh * dy
        cos = ch * np.cos(hh)[None, None] + sh * np.sin(hh)[None, None]
        hit = (np.abs(lat) < 0.5 * (w_d[:, None, None] + w_all[None, None]) + 0.35) & (np.abs(lon) <= LOOK_STEP / 2)
        hit &= ped_all[None, None] | (vv[None, None] < 0.5) | (cos > 0.5)
        hit[rows, :, rows] = False
        gap = (win[None, :, None] - frac[:, None, None]) + lon - hl_d[:, None, None] - hl_all[None, None]
        gap = np.where(hit, gap, np.inf).reshape(n_d, -1)
        j = np.argmin(gap, axis=1)
        g = gap[rows, j]
        lead_v = np.where(np.isfinite(g), vv[j % len(vv)] * np.clip(cos.reshape(n_d, -1)[rows, j], 0, 1), 0.0)
        # curve and end-of-route limit, tracked with feed-forward of its slope
        lim0, lim1 = vlim[rows, i0], vlim[rows, i0 + 1]
        target = lim0 * (1 - frac) + lim1 * frac
        a_free = (lim1 - lim0) * v + 0.8 * (target - v)
        s_star = p.idm_min_gap + np.maximum(0.0, v * p.idm_time_gap + v * (v - lead_v)
                                             / (2 * math.sqrt(p.acc_max * p.idm_comfort_dec)))
        gsafe = np.maximum(g, 0.1)
        a_idm = p.acc_max * (1 - (v / v_des) ** 4 - np.where(np.isfinite(g), (s_star / gsafe) ** 2, 0.0))
        a_cmd = np.clip(np.minimum(a_free, a_idm), -p.dec_max, p.acc_max)
        urgent = np.isfinite(g) & (g < 0.6 * p.idm_min_gap + v * 0.5)
        jerk = p.jerk_max * dt
        acc = np.where(urgent, np.clip(np.minimum(a_free, a_idm), -6.0, p.acc_max),
                       np.clip(a_cmd, acc - jerk, acc + jerk))
        v_new = np.maximum(v + acc * dt, 0.0)
        s = np.minimum(s + 0.5 * (v + v_new) * dt, lengths)
        v = v_new
    out = []
    for i, d in enumerate(drivers):
        poses = d.path.poses_at(s_hist[:, i])
        tr = d.track
        out.append(Track(tr.id, tr.kind, tr.category, tr.state, tr.length, tr.width, tr.height, tr.colour,
                         poses[:, :2], poses[:, 2], v_hist[:, i].copy()))
    return out


def _conflicts(tracks: list[Track]) -> set[int]:
    """Indices of non-ego tracks to drop: touching another one, or within the ego's next second."""
    n = len(tracks)
    xy = np.stack([t.xy for t in tracks])  # (E, T, 2)
    yaw = np.stack([t.yaw for t in tracks])
    ln = np.array([t.length for t in tracks])
    wd = np.array([t.width for t in tracks])
    bad: set[int] = set()
    ego = tracks[0]
    ext = ego.speed * 1.0 + 0.6
    fwd = np.stack([np.cos(ego.yaw), np.sin(ego.yaw)], axis=1)
    ego_box = box_corners(ego.xy[:, 0] + fwd[:, 0] * ext / 2, ego.xy[:, 1] + fwd[:, 1] * ext / 2, ego.yaw,
                          ego.length + ext, ego.width + 0.4)
    reach = np.hypot(ln, wd) / 2
    for j in range(1, n):
        near = np.linalg.norm(xy[j] - ego.xy, axis=1) < reach[0] + reach[j] + ext + 1.0
        if near.any():
            other = box_corners(xy[j, near, 0], xy[j, near, 1], yaw[j, near], ln[j], wd[j])
            if boxes_overlap(ego_box[near], other).any():
                bad.add(j)
    for i in range(1, n):
        for j in range(i + 1, n):
            if i in bad or j in bad:
                continue
            near = np.linalg.norm(xy[i] - xy[j], axis=1) < reach[i] + reach[j] + 0.5
            if not near.any():
                continue
            a = box_corners(xy[i, near, 0], xy[i, near, 1], yaw[i, near], ln[i] + 0.3, wd[i] + 0.2)
            b = box_corners(xy[j, near, 0], xy[j, near, 1], yaw[j, near], ln[j] + 0.3, wd[j] + 0.2)
            if boxes_overlap(a, b).any():
                bad.add(j)
    return bad
