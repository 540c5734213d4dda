"""PDM score: NAVSIM v1.1's definition, PDMS = NC · DAC · (5·EP + 5·TTC + 2·C) / 12, computed as NAVSIM does.

Written from NAVSIM's source (definitions and file:line references in docs/navsim-notes.md); NAVSIM's devkit
(nuPlan-based) is not a dependency. `PDMScorerConfig.simulation` chooses what is scored:

**"navsim" (default).** The 8 poses become a linear reference at 0.1 s (heading unwrapped), tracked by NAVSIM's
LQR controller driving a kinematic bicycle from the logged speed and acceleration (`reworld.planning.navsim`:
its gains, horizon, limits and time constants); every sub-metric is computed on the simulated states. Comfort:
NAVSIM's filters and thresholds (whole-horizon Savitzky–Golay for accelerations and jerks, window 5 for yaw;
lateral acceleration zero after t = 0). NC: NAVSIM's collision types (stopped ego, stopped track, active rear /
front / lateral; lateral is at fault only with the ego in several lanes or off the drivable area, from the scene's
`lanes`), one ignore list per agent as NAVSIM keeps them, nothing ignored at the start. TTC: projections at 0,
0.3, 0.6, 0.9 s along the heading; agents ahead within 30°, or not behind when the ego is in several lanes, off
the drivable area or in one of the scene's `intersections`. EP: progress · NC · DAC over the larger of its own
and PDM-Closed's (`reworld.planning.pdm_closed`: 15 IDM proposals along the centreline scored against
constant-velocity forecasts, picked, then scored under the true future). DAC: all four box corners inside the
drivable polygons minus their holes, at every step from t = 0 (NAVSIM's ego areas; the spline scorer from 0.1 s).

The ego box is the scene's size placed `scene.ego_center_offset` ahead of the pose along the heading: 0 in the
synthetic world (its poses are box centres), 1.385 m on nuScenes (its ego frame is the midpoint of a Renault
Zoe's rear axle; `DataConfig.ego_center_offset_m`, set by configs/paper.yaml).

What still differs from NAVSIM, with what it does to the score (`python -m benchmarks.scorer_sensitivity`: the
expert's and constant velocity's plans on the 154 held-out clips of the default world; "CV" below):

- **Speed limit.** NAVSIM's PDM-Closed drives at fractions of the lane's mapped limit, falling back to 15 m/s;
  nuScenes maps (and our scenes) carry no limits, so the fallback always applies (`speed_limit_mps`). At 13.4
  m/s (30 mph) instead: expert PDMS 0.944 → 0.947 (EP 0.899 → 0.905), CV 0.770 → 0.769.
- **Map layers.** nuScenes' lane and lane-connector polygons stand in for nuPlan's lanes, its road segments
  flagged `is_intersection` for nuPlan's intersections, its drivable_area (with holes) for nuPlan's union of
  roadblocks, intersections and car parks; PDM-Closed follows the route centreline (the lanes under the logged
  path) where NAVSIM follows the route's roadblocks. Without the lanes and intersections at all: expert
  unchanged (0.944), CV 0.770 → 0.773 (NC 0.922 → 0.929: its lateral contacts stop counting).
- **Ego geometry.** NAVSIM's boxes are a Pacifica's (5.18 × 2.30 m, centre 1.461 m ahead of the rear axle); ours
  are the scene's. Placing the box 1.385 m ahead on our box-centre poses (the wrong convention): expert
  0.944 → 0.938 (TTC 0.968 → 0.955), CV 0.770 → 0.763 (DAC 0.890 → 0.883).
- **The tracker** equals its closed form to 1e-9 and its direct least squares (tests); it has not been run side by
  side with NAVSIM's own (no nuPlan runtime here). It lags and overshoots aggressive plans as an LQR does: a 3.5 m
  lane change within 1.5 s overshoots by 0.95 m; a stop from 10 m/s at 2.5 m/s² ends 1.75 m past its last pose.

**"spline"** is this project's first scorer, kept to compare: the 8 poses (plus the start pose, with the current
speed and yaw rate as start derivatives) interpolated by a cubic Hermite spline to 10 Hz and scored untracked;
nuPlan's closed-loop comfort windows (8 and 15) on the spline's own accelerations; a geometric at-fault rule
(an agent behind the ego, or the ego stopped, is not at fault; agents overlapping at t = 0 ignored; every lateral
contact counts); TTC only for agents ahead; EP against the expert plus constant-speed / constant-acceleration
proposals. Waypoint noise of 0.1 m fails its comfort most of the time and NAVSIM's never (tests/test_pdm.py);
on the same clips it gives the expert 0.964 (TTC 1.000, C 0.942) and CV 0.768 (EP 0.865, C 0.903).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely

from reworld.planning.navsim import savgol_operator
from reworld.planning.scene import PlanningScene, SceneFormatError, validate_poses

DYNAMIC_TYPES = ("vehicle", "pedestrian", "cyclist")
FAILURE_KINDS = ("collision", "off_road", "ttc")


@dataclass(frozen=True)
class PDMScorerConfig:
    # what is scored: "navsim" (NAVSIM v1.1: linear reference, LQR tracker, kinematic bicycle, NAVSIM's comfort
    # filters, collision types, TTC rule and PDM-Closed EP; `reworld.planning.navsim`) or "spline" (this project's
    # first scorer: the 8 poses interpolated by a cubic Hermite spline, untracked, simplified rules; kept to compare)
    simulation: str = "navsim"
    frequency_hz: float = 10.0  # [Hz] simulation / interpolation rate
    horizon_s: float = 4.0  # [s]
    pose_interval_s: float = 0.5  # [s] spacing of the 8 input poses
    # collisions (NC) and time to collision (TTC)
    static_collision_score: float = 0.5  # NC after an at-fault contact with a static object
    stop_speed_mps: float = 5e-3  # [m/s] ego below this is stopped: no fault, no TTC
    rear_angle_deg: float = 150.0  # [deg] agents at a bearing beyond this are behind (they hit the ego)
    ttc_offsets_s: tuple[float, ...] = (0.3, 0.6, 0.9)  # [s] look-ahead of the pushed ego box
    ttc_ahead_angle_deg: float = 30.0  # [deg] TTC counts agents within this bearing of the ego heading
    # ego progress (EP)
    # [m/s] PDM-Closed's speed limit (navsim): NAVSIM reads the lane's limit from the map and falls back to 15 m/s;
    # nuScenes maps and our scenes carry none, so the fallback always applies
    speed_limit_mps: float = 15.0
    ep_min_progress_m: float = 5.0  # [m] best reference progress below this gives EP = 1
    proposal_accelerations: tuple[float, ...] = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0)  # [m/s²] reference proposals
    proposal_cruise_speed_mps: float = 8.0  # [m/s] proposals accelerate up to max(v0, this)
    proposal_merge_s: float = 2.0  # [s] proposals blend from the ego position onto the centreline
    # comfort (C), docs/design.md §3 / nuPlan limits
    max_abs_lat_accel: float = 4.89  # [m/s²]
    min_lon_accel: float = -4.05  # [m/s²]
    max_lon_accel: float = 2.40  # [m/s²]
    max_abs_jerk: float = 8.37  # [m/s³] derivative of the acceleration magnitude
    max_abs_lon_jerk: float = 4.13  # [m/s³]
    max_abs_yaw_rate: float = 0.95  # [rad/s]
    max_abs_yaw_accel: float = 1.93  # [rad/s²]
    accel_window: int = 8  # [steps] Savitzky-Golay smoothing of accelerations (polyorder 2)
    jerk_window: int = 15  # [steps] Savitzky-Golay derivative window for jerks (polyorder 2)
    yaw_window: int = 5  # [steps] Savitzky-Golay window for yaw rate (polyorder 2) / yaw accel (polyorder 3)
    # PDMS weights
    weight_ep: float = 5.0
    weight_ttc: float = 5.0
    weight_c: float = 2.0
    chunk_pairs: int = 400_000  # ego-step x agent-step box pairs tested at once (memory bound)

    @property
    def dt(self) -> float:
        return 1.0 / self.frequency_hz  # [s]

    @property
    def num_steps(self) -> int:
        return int(round(self.horizon_s * self.frequency_hz))  # steps after t=0


@dataclass(frozen=True)
class PDMResults:
    nc: float  # no at-fault collision: 1, 0.5 (static object) or 0
    dac: float  # drivable-area compliance: 1 or 0
    ttc: float  # time to collision within bound: 1 or 0
    ep: float  # ego progress ratio in [0, 1]
    c: float  # comfort: 1 or 0
    pdms: float  # NC · DAC · (5 EP + 5 TTC + 2 C) / 12
    progress_m: float  # [m] along the centreline, start to final pose
    reference_progress_m: float  # [m] best progress of the safe references (NaN if none is safe)
    collision_agent_id: str | None = None  # first at-fault collision
    collision_time_s: float = math.nan  # [s]
    ttc_agent_id: str | None = None  # first TTC violation
    ttc_time_s: float = math.nan  # [s]
    off_road_time_s: float = math.nan  # [s] first step with a corner off the drivable area
    comfort_violations: tuple[str, ...] = ()  # names of the violated comfort limits

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("nc", "dac", "ttc", "ep", "c", "pdms")}


def failure_kind(result: PDMResults) -> str:
    """'collision' (NC = 0), else 'off_road' (DAC = 0), else 'ttc' (TTC = 0), else 'safe'."""
    if result.nc == 0:
        return "collision"
    if result.dac == 0:
        return "off_road"
    if result.ttc == 0:
        return "ttc"
    return "safe"


# --------------------------------------------------------------------------- interpolation


@lru_cache(maxsize=8)  # pure function of a frozen config
def _hermite_operators(config: PDMScorerConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Linear maps from the 9 knots (origin + 8 poses) and the start slope to value / 1st / 2nd derivative.

    out_d = A[d] @ knots + b[d] * start_slope at the 10 Hz times; slopes at the other knots are central
    finite differences (second-order one-sided at the last knot).
    """
    h = config.pose_interval_s
    n_knots = int(round(config.horizon_s / h)) + 1
    t = np.arange(config.num_steps + 1) * config.dt
    seg = np.minimum((t / h + 1e-9).astype(int), n_knots - 2)
    s = t / h - seg
    one, zero = np.ones_like(s), np.zeros_like(s)
    # Hermite basis (p0, m0, p1, m1) and its derivatives with respect to t
    basis = [
        (2 * s**3 - 3 * s**2 + 1, h * (s**3 - 2 * s**2 + s), -2 * s**3 + 3 * s**2, h * (s**3 - s**2)),
        ((6 * s**2 - 6 * s) / h, 3 * s**2 - 4 * s + one, (-6 * s**2 + 6 * s) / h, 3 * s**2 - 2 * s),
        ((12 * s - 6) / h**2, (6 * s - 4) / h, (-12 * s + 6) / h**2, (6 * s - 2 * one + zero) / h),
    ]
    slopes = np.zeros((n_knots, n_knots))  # slope_k = slopes[k] @ knots (k >= 1)
    for k in range(1, n_knots - 1):
        slopes[k, k + 1], slopes[k, k - 1] = 1 / (2 * h), -1 / (2 * h)
    slopes[-1, -1], slopes[-1, -2], slopes[-1, -3] = 3 / (2 * h), -4 / (2 * h), 1 / (2 * h)  # 2nd-order one-sided
    rows = np.arange(len(t))
    A, b = [], []
    for bp0, bm0, bp1, bm1 in basis:
        P = np.zeros((len(t), n_knots))
        M = np.zeros((len(t), n_knots))
        P[rows, seg], P[rows, seg + 1] = bp0, bp1
        M[rows, seg], M[rows, seg + 1] = bm0, bm1
        A.append(P + M @ slopes)
        b.append(M[:, 0].copy())
    return A, b


@dataclass(frozen=True)
class _States:
    """Interpolated ego states at 10 Hz, t = 0 ... horizon: every array (N, T+1)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    ax: np.ndarray
    ay: np.ndarray

    @property
    def speed(self) -> np.ndarray:
        return np.hypot(self.vx, self.vy)


def interpolate_trajectories(scene: PlanningScene, poses: np.ndarray, config: PDMScorerConfig) -> _States:
    """(N, 8, 3) poses → 10 Hz states starting at the origin with the scene's speed and yaw rate."""
    n = poses.shape[0]
    knots = np.concatenate([np.zeros((n, 1, 3)), poses], axis=1)  # (N, 9, 3)
    knots[..., 2] = np.unwrap(knots[..., 2], axis=1)
    start_slope = np.array([scene.ego_speed, 0.0, scene.ego_yaw_rate])  # d/dt of (x, y, heading) at t=0
    A, b = _hermite_operators(config)
    out = [A_d @ knots + b_d[None, :, None] * start_slope for A_d, b_d in zip(A, b)]  # (T+1, 9) @ (N, 9, 3)
    pos, vel, acc = out  # each (N, T+1, 3)
    return _States(pos[..., 0], pos[..., 1], pos[..., 2], vel[..., 0], vel[..., 1], acc[..., 0], acc[..., 1])


# --------------------------------------------------------------------------- agents and boxes


@dataclass(frozen=True)
class _AgentStates:
    """Agents on the 10 Hz grid extended by the largest TTC offset: arrays (A, S)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    present: np.ndarray  # bool: the agent is in NAVSIM's observation at that step
    half_length: np.ndarray  # (A,)
    half_width: np.ndarray  # (A,)
    ids: list[str]
    dynamic: np.ndarray  # (A,) bool: vehicle / pedestrian / cyclist


def agent_present(track: np.ndarray, t, tolerance: float = 0.05) -> np.ndarray:
    """Whether NAVSIM's observation has the agent of `track` at times `t`: between its first and last row (each end
    matched to `tolerance`, half a 0.1 s step), or at every time for a track of one row."""
    t = np.asarray(t, dtype=np.float64)
    if len(track) == 1:
        return np.ones(t.shape, dtype=bool)
    return (t >= track[0, 0] - tolerance) & (t <= track[-1, 0] + tolerance)


def _agent_states(scene: PlanningScene, num_steps: int, config: PDMScorerConfig) -> _AgentStates:
    """Each agent's box at the scorer's steps and whether it is there: NAVSIM's observation (its metric caching's
    `_interpolate_gt_observation`) interpolates each track linearly between its first and last annotation and
    drops it outside them; a track annotated at one time only is kept, standing, at every step. Annotation times
    are NAVSIM's nominal 0.5 s grid and real timestamps here (nuScenes' key frames jitter by tens of ms), so a
    track's ends are matched to the nearest step (half a step either side)."""
    t = np.arange(num_steps) * config.dt
    half = config.dt / 2
    rows = []
    for a in scene.agents:
        tr = a.track  # (R, 4); np.interp holds the first/last row outside the track's times
        head = np.unwrap(tr[:, 3])
        present = agent_present(tr, t, half)
        rows.append((np.interp(t, tr[:, 0], tr[:, 1]), np.interp(t, tr[:, 0], tr[:, 2]),
                     np.interp(t, tr[:, 0], head), present))
    if not rows:
        empty = np.zeros((0, num_steps))
        return _AgentStates(empty, empty, empty, empty.astype(bool), np.zeros(0), np.zeros(0), [], np.zeros(0, bool))
    x, y, h, p = (np.stack(c) for c in zip(*rows))
    return _AgentStates(
        x, y, h, p,
        half_length=np.array([a.length / 2 for a in scene.agents]),
        half_width=np.array([a.width / 2 for a in scene.agents]),
        ids=[a.id for a in scene.agents],
        dynamic=np.array([a.type in DYNAMIC_TYPES for a in scene.agents]),
    )


def boxes_overlap(cx1, cy1, h1, hl1, hw1, cx2, cy2, h2, hl2, hw2) -> np.ndarray:
    """Separating-axis test for oriented rectangles (centre, heading, half length/width); broadcasts."""
    dx, dy = cx2 - cx1, cy2 - cy1
    c1, s1, c2, s2 = np.cos(h1), np.sin(h1), np.cos(h2), np.sin(h2)
    cd = np.abs(c1 * c2 + s1 * s2)  # |cos(h2 - h1)|
    sd = np.abs(s2 * c1 - c2 * s1)  # |sin(h2 - h1)|
    sep = np.abs(dx * c1 + dy * s1) > hl1 + hl2 * cd + hw2 * sd  # axis: box 1 forward
    sep |= np.abs(-dx * s1 + dy * c1) > hw1 + hl2 * sd + hw2 * cd  # box 1 left
    sep |= np.abs(dx * c2 + dy * s2) > hl2 + hl1 * cd + hw1 * sd  # box 2 forward
    sep |= np.abs(-dx * s2 + dy * c2) > hw2 + hl1 * sd + hw1 * cd  # box 2 left
    return ~sep


def _bearing_off_heading(ex, ey, eh, ax, ay) -> np.ndarray:
    """|angle| [rad] between the ego heading and the direction from the ego centre to the agent centre."""
    ang = np.arctan2(ay - ey, ax - ex) - eh
    return np.abs((ang + np.pi) % (2 * np.pi) - np.pi)


def _ego_centres(states: _States, scene: PlanningScene) -> tuple[np.ndarray, np.ndarray]:
    """Box centres of the ego states: the poses moved `scene.ego_center_offset` ahead along the heading."""
    off = scene.ego_center_offset
    return states.x + off * np.cos(states.heading), states.y + off * np.sin(states.heading)


def _overlaps(ex, ey, eh, ag: _AgentStates, lag: int, hl: float, hw: float, config: PDMScorerConfig) -> np.ndarray:
    """(N, A, T) ego boxes at step t against agents at step t + lag, in chunks over N."""
    n, t = ex.shape
    out = np.zeros((n, len(ag.ids), t), dtype=bool)
    if not ag.ids:
        return out
    sl = slice(lag, lag + t)
    ax, ay, ah = ag.x[None, :, sl], ag.y[None, :, sl], ag.heading[None, :, sl]
    ahl, ahw = ag.half_length[None, :, None], ag.half_width[None, :, None]
    reach = math.hypot(hl, hw) + np.hypot(ahl, ahw)  # bounding circles first: most pairs end there
    chunk = max(1, config.chunk_pairs // max(1, len(ag.ids) * t))
    for i in range(0, n, chunk):
        cx, cy, ch = ex[i:i + chunk, None], ey[i:i + chunk, None], eh[i:i + chunk, None]
        near = ((ax - cx) ** 2 + (ay - cy) ** 2 <= reach**2) & ag.present[None, :, sl]
        idx = np.nonzero(near)
        if idx[0].size:
            k, a, s = idx
            hit = boxes_overlap(cx[k, 0, s], cy[k, 0, s], ch[k, 0, s], hl, hw,
                                ax[0, a, s], ay[0, a, s], ah[0, a, s], ag.half_length[a], ag.half_width[a])
            out[i + k[hit], a[hit], s[hit]] = True
    return out


# --------------------------------------------------------------------------- NAVSIM's NC and TTC rules
NAVSIM_STOPPED_COLLISION_MPS = 0.05  # [m/s] nuPlan's stopped threshold for the collision type
NAVSIM_STOPPED_TTC_MPS = 0.005  # [m/s] NAVSIM's `stopped_speed_threshold` for TTC
NAVSIM_TTC_STEPS = (0, 3, 6, 9)  # [0.1 s] projections, 0 included
NAVSIM_AHEAD_DEG, NAVSIM_BEHIND_DEG = 30.0, 150.0


def _ego_corners(states: _States, scene: PlanningScene, config: PDMScorerConfig) -> np.ndarray:
    """(N, T+1, 4, 2) corners front-left, rear-left, rear-right, front-right."""
    ex, ey = _ego_centres(states, scene)
    c, s = np.cos(states.heading), np.sin(states.heading)
    hl, hw = scene.ego_length / 2, scene.ego_width / 2
    out = []
    for fl, fw in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        out.append(np.stack([ex + fl * hl * c - fw * hw * s, ey + fl * hl * s + fw * hw * c], -1))
    return np.stack(out, axis=2)


def ego_areas(scene: PlanningScene, states: _States, config: PDMScorerConfig):
    """NAVSIM's per-step ego areas (N, T+1) bool each: in several lanes (corners in more than one lane polygon and
    no lane holding all four), off the drivable area (a corner outside it), rear axle in an intersection.
    Point tests are strict, as NAVSIM's."""
    corners = _ego_corners(states, scene, config)  # (N, T1, 4, 2)
    cx, cy = corners[..., 0], corners[..., 1]
    non_drivable = ~shapely.contains_xy(scene.drivable_geometry, cx, cy).all(-1)
    hit_any = np.zeros(cx.shape[:2], dtype=int)
    one_holds_all = np.zeros(cx.shape[:2], dtype=bool)
    for inside in scene.lane_geometries.contains(cx, cy):  # (N, T1, 4) per lane polygon
        hit_any += inside.any(-1)
        one_holds_all |= inside.all(-1)
    multiple_lanes = (hit_any > 1) & ~one_holds_all
    in_intersection = np.zeros(cx.shape[:2], dtype=bool)
    for inside in scene.intersection_geometries.contains(states.x, states.y):  # the rear axle (the pose)
        in_intersection |= inside
    return multiple_lanes, non_drivable, in_intersection


def _angle_to(x, y, heading, ax, ay) -> np.ndarray:
    """[deg] between a heading and the direction from (x, y) to (ax, ay)."""
    return np.degrees(_bearing_off_heading(x, y, heading, ax, ay))


def _segment_hits_box(p0, p1, bx, by, bh, bhl, bhw) -> np.ndarray:
    """Whether segments p0→p1 ((..., 2) each) touch oriented boxes (centre, heading, half sizes); broadcasts.
    Liang–Barsky clipping in each box's frame."""
    c, s = np.cos(bh), np.sin(bh)

    def local(p):
        dx, dy = p[..., 0] - bx, p[..., 1] - by
        return dx * c + dy * s, -dx * s + dy * c

    x0, y0 = local(p0)
    x1, y1 = local(p1)
    dx, dy = x1 - x0, y1 - y0
    t0, t1 = np.zeros_like(x0), np.ones_like(x0)
    ok = np.ones_like(x0, dtype=bool)
    for pk, qk in ((-dx, x0 + bhl), (dx, bhl - x0), (-dy, y0 + bhw), (dy, bhw - y0)):
        parallel = np.abs(pk) < 1e-12
        ok &= ~(parallel & (qk < 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(parallel, 0.0, qk / np.where(parallel, 1.0, pk))
        t0 = np.where(~parallel & (pk < 0), np.maximum(t0, r), t0)
        t1 = np.where(~parallel & (pk > 0), np.minimum(t1, r), t1)
    return ok & (t0 <= t1)


def _first_present(ag: _AgentStates) -> np.ndarray:
    return ag.present.argmax(1)


def _agent_first_speed(ag: _AgentStates, dt: float) -> np.ndarray:
    """[m/s] each agent's speed at its first observed step (NAVSIM reuses the first occurrence's velocity)."""
    if not ag.ids:
        return np.zeros(0)
    vx, vy = np.gradient(ag.x, dt, axis=1), np.gradient(ag.y, dt, axis=1)
    f = _first_present(ag)
    a = np.arange(len(ag.ids))
    return np.hypot(vx[a, f], vy[a, f])


def _collisions_navsim(scene, states, ag, areas, config):
    """NAVSIM's NC: every step from t = 0, each contact typed (stopped ego, stopped track, active rear, active
    front, active lateral); at fault: stopped track, active front, and active lateral while the ego is in several
    lanes or off the drivable area. Contacts that are not at fault put the agent on an ignore list."""
    multiple_lanes, non_drivable, _ = areas
    ex, ey = _ego_centres(states, scene)
    hl, hw = scene.ego_length / 2, scene.ego_width / 2
    over = _overlaps(ex, ey, states.heading, ag, 0, hl, hw, config)  # (N, A, T+1)
    n, n_agents, t_all = over.shape
    nc = np.ones(n)
    first_agent, first_step = np.full(n, -1), np.full(n, -1)
    if not n_agents:
        return nc, first_agent, first_step
    corners = _ego_corners(states, scene, config)
    stopped_track = ~ag.dynamic | (_agent_first_speed(ag, config.dt) <= NAVSIM_STOPPED_COLLISION_MPS)
    ignore = np.zeros((n, n_agents), dtype=bool)
    for t in range(t_all):
        k, a = np.nonzero(over[:, :, t] & ~ignore)
        if not k.size:
            continue
        stopped_ego = states.speed[k, t] <= NAVSIM_STOPPED_COLLISION_MPS
        behind = _angle_to(states.x[k, t], states.y[k, t], states.heading[k, t], ag.x[a, t], ag.y[a, t]) \
            > NAVSIM_BEHIND_DEG
        front = _segment_hits_box(corners[k, t, 0], corners[k, t, 3], ag.x[a, t], ag.y[a, t], ag.heading[a, t],
                                  ag.half_length[a], ag.half_width[a])
        lateral_fault = multiple_lanes[k, t] | non_drivable[k, t]
        fault = ~stopped_ego & (stopped_track[a] | (~behind & (front | lateral_fault)))
        ignore[k[~fault], a[~fault]] = True
        if fault.any():
            kf, af = k[fault], a[fault]
            np.minimum.at(nc, kf, np.where(ag.dynamic[af], 0.0, config.static_collision_score))
            new = first_step[kf] < 0
            first_step[kf[new]], first_agent[kf[new]] = t, af[new]
    return nc, first_agent, first_step


def _time_to_collision_navsim(scene, states, ag, areas, config):
    """NAVSIM's TTC: the ego box pushed along its heading by speed·{0, 0.3, 0.6, 0.9} s against the agents at that
    later time; a hit counts when the agent is ahead (< 30°) or, with the ego in several lanes, off the drivable
    area or in an intersection, when it is not behind (> 150°); other hits put the agent on an ignore list. Every
    step 0 … 4 s is checked, against agents up to 4.9 s (v1.1; v2 stops at 3.1 s)."""
    multiple_lanes, non_drivable, in_intersection = areas
    ex, ey = _ego_centres(states, scene)
    hl, hw = scene.ego_length / 2, scene.ego_width / 2
    n, t_all = ex.shape
    ttc = np.ones(n)
    first_agent, first_step = np.full(n, -1), np.full(n, -1)
    if not ag.ids:
        return ttc, first_agent, first_step
    c, s = np.cos(states.heading), np.sin(states.heading)
    pushed = {lag: _overlaps(ex + states.speed * lag * config.dt * c, ey + states.speed * lag * config.dt * s,
                             states.heading, ag, lag, hl, hw, config) for lag in NAVSIM_TTC_STEPS}
    moving = states.speed >= NAVSIM_STOPPED_TTC_MPS
    wide = multiple_lanes | non_drivable | in_intersection
    ignore = np.zeros((n, len(ag.ids)), dtype=bool)
    failed = np.zeros(n, dtype=bool)
    for t in range(t_all):
        for lag in NAVSIM_TTC_STEPS:
            hit = pushed[lag][:, :, t] & ~ignore & (moving[:, t] & ~failed)[:, None]
            k, a = np.nonzero(hit)
            if not k.size:
                continue
            angle = _angle_to(states.x[k, t], states.y[k, t], states.heading[k, t], ag.x[a, t + lag],
                              ag.y[a, t + lag])
            counts = (angle < NAVSIM_AHEAD_DEG) | (wide[k, t] & (angle <= NAVSIM_BEHIND_DEG))
            ignore[k[~counts], a[~counts]] = True
            for kk, aa in zip(k[counts], a[counts]):
                if not failed[kk]:
                    failed[kk], first_step[kk], first_agent[kk] = True, t, aa
    ttc[failed] = 0.0
    return ttc, first_agent, first_step


# --------------------------------------------------------------------------- sub-metrics


def _collisions(scene, states, ag, ignored, config):
    """NC per trajectory, plus (first at-fault agent index, step) or -1."""
    ex, ey = _ego_centres(states, scene)
    hl, hw = scene.ego_length / 2, scene.ego_width / 2
    over = _overlaps(ex, ey, states.heading, ag, 0, hl, hw, config)  # (N, A, T+1)
    over[:, ignored, :] = False
    n = over.shape[0]
    nc = np.ones(n)
    first_agent, first_step = np.full(n, -1), np.full(n, -1)
    if not ag.ids:
        return nc, first_agent, first_step
    touched = over.any(-1)  # (N, A)
    step = over.argmax(-1)  # first contact per agent: only that one is judged (as in NAVSIM)
    k = np.arange(n)[:, None]
    moving = states.speed[k, step] >= config.stop_speed_mps
    ai = np.arange(len(ag.ids))[None, :]
    behind = _bearing_off_heading(ex[k, step], ey[k, step], states.heading[k, step],
                                  ag.x[ai, step], ag.y[ai, step]) > math.radians(config.rear_angle_deg)
    fault = touched & moving & ~behind  # (N, A)
    nc = np.where((fault & ~ag.dynamic).any(1), config.static_collision_score, 1.0)
    nc = np.where((fault & ag.dynamic).any(1), 0.0, nc)
    fault_step = np.where(fault, step, np.iinfo(np.int64).max)
    first_agent = np.where(fault.any(1), fault_step.argmin(1), -1)
    first_step = np.where(fault.any(1), fault_step.min(1), -1)
    return nc, first_agent, first_step


def _time_to_collision(scene, states, ag, ignored, config):
    """TTC per trajectory, plus (first agent index, step) or -1."""
    ex, ey = _ego_centres(states, scene)
    hl, hw = scene.ego_length / 2, scene.ego_width / 2
    n, t = ex.shape
    first_step = np.full((n, max(1, len(ag.ids))), np.iinfo(np.int64).max)
    moving = states.speed >= config.stop_speed_mps  # (N, T+1)
    for offset in config.ttc_offsets_s:
        lag = int(round(offset / config.dt))
        over = _overlaps(ex + offset * states.vx, ey + offset * states.vy, states.heading, ag, lag, hl, hw, config)
        over[:, ignored, :] = False
        k, a, i = np.nonzero(over & moving[:, None, :])  # bearings only where boxes meet
        if not k.size:
            continue
        ahead = _bearing_off_heading(ex[k, i], ey[k, i], states.heading[k, i], ag.x[a, i + lag],
                                     ag.y[a, i + lag]) <= math.radians(config.ttc_ahead_angle_deg)
        k, a, i = k[ahead], a[ahead], i[ahead]
        np.minimum.at(first_step, (k, a), i)
    violated = first_step.min(1) < np.iinfo(np.int64).max
    return (np.where(violated, 0.0, 1.0), np.where(violated, first_step.argmin(1), -1),
            np.where(violated, first_step.min(1), -1))


def _drivable(scene, states, config):
    """DAC per trajectory and first off-road step (or -1), corners tested for steps 1 ... T (the spline scorer's;
    the navsim one is `_drivable_navsim`)."""
    ex, ey = _ego_centres(states, scene)
    h = states.heading[:, 1:]
    c, s = np.cos(h), np.sin(h)
    hl, hw = scene.ego_length / 2, scene.ego_width / 2
    inside = np.ones(h.shape, dtype=bool)
    for fl, fw in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        cx = ex[:, 1:] + fl * hl * c - fw * hw * s
        cy = ey[:, 1:] + fl * hl * s + fw * hw * c
        inside &= shapely.intersects_xy(scene.drivable_geometry, cx, cy)
    off = ~inside
    return np.where(off.any(1), 0.0, 1.0), np.where(off.any(1), off.argmax(1) + 1, -1)


def _drivable_navsim(non_drivable: np.ndarray):
    """NAVSIM's DAC from its ego areas: 0 where a box corner lies outside the drivable area (strictly) at any step,
    t = 0 included (`non_drivable` (N, T+1), `ego_areas`); and the first such step (or -1)."""
    off = non_drivable.any(1)
    return np.where(off, 0.0, 1.0), np.where(off, non_drivable.argmax(1), -1)


def _comfort(states, config):
    """C per trajectory and, per trajectory, the names of the violated limits."""
    n_t = states.x.shape[1]
    c, s = np.cos(states.heading), np.sin(states.heading)

    def smooth(v, window, poly=2, deriv=0):  # Savitzky-Golay along time, as a precomputed matrix
        return v @ savgol_operator(n_t, window, poly, deriv, config.dt)

    lon = smooth(states.ax * c + states.ay * s, config.accel_window)
    lat = smooth(-states.ax * s + states.ay * c, config.accel_window)
    mag = smooth(np.hypot(states.ax, states.ay), config.accel_window)
    checks = {
        "lat_accel": np.abs(lat) <= config.max_abs_lat_accel,
        "lon_accel": (lon >= config.min_lon_accel) & (lon <= config.max_lon_accel),
        "jerk": np.abs(smooth(mag, config.jerk_window, deriv=1)) <= config.max_abs_jerk,
        "lon_jerk": np.abs(smooth(lon, config.jerk_window, deriv=1)) <= config.max_abs_lon_jerk,
        "yaw_rate": np.abs(smooth(states.heading, config.yaw_window, deriv=1)) <= config.max_abs_yaw_rate,
        "yaw_accel": np.abs(smooth(states.heading, config.yaw_window, poly=3, deriv=2)) <= config.max_abs_yaw_accel,
    }
    ok = {k: v.all(-1) for k, v in checks.items()}
    comfortable = np.logical_and.reduce(list(ok.values()))
    violations = [tuple(k for k, v in ok.items() if not v[i]) for i in range(len(comfortable))]
    return comfortable.astype(float), violations


def _progress(scene: PlanningScene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[m] progress of final positions along the centreline from the origin's projection (x if none)."""
    line = scene.centerline_geometry
    if line is None:
        return x.copy()
    start = shapely.line_locate_point(line, shapely.points(0.0, 0.0))
    return shapely.line_locate_point(line, shapely.points(np.stack([x, y], -1))) - start


def simulated_trajectories(scene: PlanningScene, poses: np.ndarray, config: PDMScorerConfig):
    """NAVSIM's tracked states as `_States` (world-frame velocities and accelerations), and the simulation."""
    from reworld.planning.navsim import TrackerConfig, simulate

    tracker = TrackerConfig(dt=config.dt, horizon_s=config.horizon_s, pose_interval_s=config.pose_interval_s)
    sim = simulate(poses, scene.ego_speed, scene.ego_acceleration, 0.0, tracker)
    c, s = np.cos(sim.heading), np.sin(sim.heading)
    states = _States(sim.x, sim.y, sim.heading, sim.speed * c, sim.speed * s, sim.lon_accel * c - sim.lat_accel * s,
                     sim.lon_accel * s + sim.lat_accel * c)
    return states, sim


def _safety(scene: PlanningScene, poses: np.ndarray, config: PDMScorerConfig):
    if config.simulation == "navsim":
        states, _ = simulated_trajectories(scene, poses, config)
    elif config.simulation == "spline":
        states = interpolate_trajectories(scene, poses, config)
    else:
        raise ValueError(f"PDMScorerConfig.simulation must be 'spline' or 'navsim', got {config.simulation!r}")
    lag_max = max((int(round(o / config.dt)) for o in config.ttc_offsets_s), default=0)
    if config.simulation == "navsim":
        lag_max = max(lag_max, *NAVSIM_TTC_STEPS)
    ag = _agent_states(scene, config.num_steps + 1 + lag_max, config)
    if config.simulation == "navsim":  # NAVSIM's collision types, which read the ego's map areas (kept for TTC)
        areas = ego_areas(scene, states, config)
        return states, ag, _collisions_navsim(scene, states, ag, areas, config), _drivable_navsim(areas[1]), areas
    # agents overlapping the ego's box at t=0 are ignored entirely (not the planner's doing)
    ox, oy = scene.ego_center_offset, 0.0
    ignored = boxes_overlap(ox, oy, 0.0, scene.ego_length / 2, scene.ego_width / 2,
                            ag.x[:, 0], ag.y[:, 0], ag.heading[:, 0], ag.half_length, ag.half_width) & ag.present[:, 0]
    return states, ag, _collisions(scene, states, ag, ignored, config), _drivable(scene, states, config), ignored


# --------------------------------------------------------------------------- reference progress


def _centerline_poses(scene: PlanningScene, dist: np.ndarray, config: PDMScorerConfig) -> np.ndarray:
    """Poses (P, 8, 3) driving `dist` (P, 8) metres along the centreline, merging from the ego position."""
    line = scene.centerline_geometry
    t = np.arange(1, dist.shape[1] + 1) * config.pose_interval_s
    if line is None:
        return np.stack([dist, np.zeros_like(dist), np.zeros_like(dist)], -1)
    pts = np.asarray(line.coords)
    seg = np.diff(pts, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    keep = seg_len > 1e-9
    seg, seg_len = seg[keep], seg_len[keep]
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    s0 = float(shapely.line_locate_point(line, shapely.points(0.0, 0.0)))
    s = s0 + dist
    i = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)  # beyond the ends: extrapolate
    u = (s - cum[i]) / seg_len[i]
    base = pts[:-1][keep]
    px = base[i, 0] + u * seg[i, 0]
    py = base[i, 1] + u * seg[i, 1]
    head = np.arctan2(seg[i, 1], seg[i, 0])
    start = np.asarray(line.interpolate(s0).coords[0])
    w = np.clip(1 - t / config.proposal_merge_s, 0, 1)
    w = w * w * (3 - 2 * w)  # smoothstep: lateral offset of the ego fades out
    return np.stack([px - w * start[0], py - w * start[1], np.unwrap(head, axis=-1)], -1)


def reference_proposals(scene: PlanningScene, config: PDMScorerConfig | None = None) -> np.ndarray:
    """(P, 8, 3) constant-speed / constant-acceleration proposals along the centreline (expert excluded)."""
    config = config or PDMScorerConfig()
    v0 = scene.ego_speed
    vmax = max(v0, config.proposal_cruise_speed_mps)
    fine = np.arange(config.num_steps + 1) * config.dt
    dists = []
    for a in config.proposal_accelerations:
        v = np.clip(v0 + a * fine, 0.0, vmax)
        d = np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) / 2 * config.dt)])
        dists.append(np.interp(np.arange(1, 9) * config.pose_interval_s, fine, d))
    return _centerline_poses(scene, np.array(dists), config)


def pdm_closed_trajectory(scene: PlanningScene, config: PDMScorerConfig | None = None,
                          speed_limit: float | None = None) -> np.ndarray:
    """PDM-Closed's trajectory (8, 3): the best of its 15 IDM proposals (`reworld.planning.pdm_closed`) scored
    with NAVSIM's simulation against constant-velocity forecasts of the agents, EP over the proposals, ties to
    the lowest index."""
    from reworld.planning import pdm_closed as closed

    config = config or PDMScorerConfig(simulation="navsim")
    props = closed.proposals(scene, config.speed_limit_mps if speed_limit is None else speed_limit)
    results = score_trajectories(closed.forecast_scene(scene), props, config, ep_over_batch=True)
    return props[int(np.argmax([r.pdms for r in results]))]


def reference_progress(scene: PlanningScene, config: PDMScorerConfig | None = None,
                       proposals: np.ndarray | None = None) -> float:
    """[m] best progress among safe (NC = DAC = 1) references: the expert plus the proposals.

    `proposals` (P, 8, 3) replaces the default constant-speed/acceleration set. NaN when none is safe.
    """
    config = config or PDMScorerConfig()
    if config.simulation == "navsim" and proposals is None:
        # NAVSIM: PDM-Closed's trajectory, scored under the true future: its progress · NC · DAC
        ref = score_trajectories(scene, pdm_closed_trajectory(scene, config)[None], config, reference=0.0)[0]
        return ref.progress_m * ref.nc * ref.dac
    refs = reference_proposals(scene, config) if proposals is None else np.asarray(proposals, np.float64)
    if scene.expert is not None:
        refs = np.concatenate([scene.expert[None], refs.reshape(-1, 8, 3)])
    states, _, (nc, _, _), (dac, _), _ = _safety(scene, refs, config)
    progress = _progress(scene, states.x[:, -1], states.y[:, -1])
    safe = (nc == 1) & (dac == 1)
    return float(progress[safe].max()) if safe.any() else math.nan


# --------------------------------------------------------------------------- public scorers


def score_trajectories(scene: PlanningScene, poses_batch, config: PDMScorerConfig | None = None,
                       reference: float | None = None, ep_over_batch: bool = False) -> list[PDMResults]:
    """Score (N, 8, 3) trajectories [x, y, heading] at 0.5 ... 4.0 s in one vectorised pass.

    `reference`: the reference progress [m] from `reference_progress(scene, config)` (in the navsim mode: the
    PDM-Closed trajectory's progress · NC · DAC under the true future); computed when None (pass it when scoring
    many batches of one scene). `ep_over_batch` (navsim mode): EP normalised by the best of the batch itself,
    as PDM-Closed scores its proposals.
    """
    config = config or PDMScorerConfig()
    if hasattr(poses_batch, "detach"):
        poses_batch = poses_batch.detach().cpu().numpy()
    try:
        poses = np.asarray(poses_batch, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneFormatError("poses: expected an (N, 8, 3) array of [x, y, heading]") from None
    if poses.ndim != 3 or poses.shape[1:] != (8, 3):
        raise SceneFormatError(f"poses: expected shape (N, 8, 3) [x, y, heading], got {poses.shape}")
    bad = ~np.isfinite(poses).all(axis=(1, 2))
    if bad.any():
        raise SceneFormatError(f"poses[{int(bad.argmax())}]: contains NaN or inf")
    if len(poses) == 0:
        return []
    if reference is None and not ep_over_batch:
        reference = reference_progress(scene, config)
    elif reference is None:
        reference = 0.0
    # the last item is the ignore mask of the agents at t = 0 (spline), or the ego's map areas (navsim)
    states, ag, (nc, col_agent, col_step), (dac, off_step), context = _safety(scene, poses, config)
    if config.simulation == "navsim":  # NAVSIM's TTC rule, on the simulated states
        ttc, ttc_agent, ttc_step = _time_to_collision_navsim(scene, states, ag, context, config)
    else:
        ttc, ttc_agent, ttc_step = _time_to_collision(scene, states, ag, context, config)
    if config.simulation == "navsim":
        from reworld.planning.navsim import ComfortLimits, SimulatedStates, navsim_comfort

        lon = states.ax * np.cos(states.heading) + states.ay * np.sin(states.heading)
        lat = -states.ax * np.sin(states.heading) + states.ay * np.cos(states.heading)
        sim = SimulatedStates(states.x, states.y, states.heading, states.speed, lon, lat, np.zeros_like(lon))
        comfort, violations = navsim_comfort(sim, config.dt, ComfortLimits(
            config.min_lon_accel, config.max_lon_accel, config.max_abs_lat_accel, config.max_abs_jerk,
            config.max_abs_lon_jerk, config.max_abs_yaw_rate, config.max_abs_yaw_accel))
    else:
        comfort, violations = _comfort(states, config)
    if config.simulation == "navsim":
        # NAVSIM: the box centre's progress along the centreline (end − start, ≥ 0) times NC · DAC, over the larger
        # of its own and the reference's; below 5 m every safe trajectory gets EP = 1
        cx, cy = _ego_centres(states, scene)
        progress = np.maximum(_progress(scene, cx[:, -1], cy[:, -1]) - _progress(scene, cx[:, 0], cy[:, 0]), 0.0)
        raw = progress * nc * dac
        m = np.full_like(raw, raw.max()) if ep_over_batch else np.maximum(0.0 if math.isnan(reference)
                                                                           else reference, raw)
        ep = np.where(m > config.ep_min_progress_m, raw / np.maximum(m, 1e-9), np.where(nc * dac > 0, 1.0, 0.0))
    else:
        progress = _progress(scene, states.x[:, -1], states.y[:, -1])
        ref = -math.inf if math.isnan(reference) else reference
        best = np.maximum(ref, progress * nc * dac)  # the scored trajectory counts too when it is safe
        ep = np.where(best < config.ep_min_progress_m, 1.0,
                      np.clip(progress / np.maximum(best, 1e-9), 0.0, 1.0))
    w = config.weight_ep + config.weight_ttc + config.weight_c
    pdms = nc * dac * (config.weight_ep * ep + config.weight_ttc * ttc + config.weight_c * comfort) / w
    dt = config.dt
    return [
        PDMResults(
            nc=float(nc[i]), dac=float(dac[i]), ttc=float(ttc[i]), ep=float(ep[i]), c=float(comfort[i]),
            pdms=float(pdms[i]), progress_m=float(progress[i]), reference_progress_m=float(reference),
            collision_agent_id=ag.ids[col_agent[i]] if col_agent[i] >= 0 else None,
            collision_time_s=col_step[i] * dt if col_step[i] >= 0 else math.nan,
            ttc_agent_id=ag.ids[ttc_agent[i]] if ttc_agent[i] >= 0 else None,
            ttc_time_s=ttc_step[i] * dt if ttc_step[i] >= 0 else math.nan,
            off_road_time_s=off_step[i] * dt if off_step[i] >= 0 else math.nan,
            comfort_violations=violations[i],
        )
        for i in range(len(poses))
    ]


def score_trajectory(scene: PlanningScene, poses, config: PDMScorerConfig | None = None,
                     reference: float | None = None) -> PDMResults:
    """Score one (8, 3) trajectory; see `score_trajectories` and the module docstring."""
    return score_trajectories(scene, validate_poses(poses)[None], config, reference)[0]
