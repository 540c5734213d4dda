"""NAVSIM v1.1's front-end of the PDM score, written from its definition (navsim tag v1.1, commit 0811876;
nuPlan devkit v1.2 for the interpolation and vehicle): what is scored is not the planner's poses but the states
of a kinematic bicycle driven by an LQR tracker along them.

1. **Reference** (`reference_states`): the start pose (the origin, heading 0) and the 8 poses are 9 knots at
   0, 0.5, …, 4 s; x and y are interpolated linearly in time, the heading is unwrapped over the knots and then
   interpolated linearly; 41 states at 0.1 s. NAVSIM does this in the global frame; a rigid transform commutes
   with all of it, so we stay in the ego frame of t = 0.
2. **Tracker profiles** (`tracker_profiles`), fitted once per trajectory over its 40 reference displacements:
   a speed profile `v_i = v0 + dt Σ_{j<i} a_j` by least squares on `Δp_i = dt v_i (cos θ_i, sin θ_i)` with a
   jerk penalty 1e-4 on the first differences of `a`, and a curvature profile `κ_i = κ0 + dt Σ_{j<i} κ̇_j`
   by least squares on the wrapped heading steps `Δθ_i = dt v_i κ_i`, regularised by diag(1e-10, 1e-2, …).
3. **LQR** (`lqr_commands`), per 0.1 s step k from the simulated state: the reference index
   `min(k + 10, 39)`; longitudinal `a = q B (v_ref − v) / (q B² + r)` with q = 10, r = 1, B = 10 · 0.1;
   lateral: the error `[e_lat, e_θ, δ]` against reference pose k, propagated 10 steps with the speeds
   `v + j dt a` and the curvature window `κ[k:k+10]` (padded with its last value) through the linearised
   bicycle, and the steering rate `u = −BᵀQe / (BᵀQB + R)` with Q = diag(1, 10, 0), R = 1. Below 0.2 m/s of
   both speed and reference speed it brakes proportionally (`a = −0.5 (v − v_ref)`, no steering). No
   command is clipped (NAVSIM clips none).
4. **Kinematic bicycle** (`propagate`), wheel base 3.089 m (nuPlan's Pacifica): the commands pass first-order
   lags (0.2 s for acceleration, 0.05 s for steering); explicit Euler with the old speed and steering angle;
   the steering angle clipped to ±π/3; the speed is not clamped; lateral acceleration is zero.
5. **Start state**: the logged speed and longitudinal acceleration, steering angle and rate 0 (as NAVSIM
   builds it); the logged lateral acceleration enters comfort at t = 0 only.

`navsim_comfort` is NAVSIM's comfort check on those states: Savitzky–Golay over the whole horizon (41 states)
for the longitudinal and lateral acceleration and the jerks (whose accelerations are first smoothed with
window 8), window 5 for yaw rate (order 2) and yaw acceleration (order 3), strict bounds at every state.

Everything is vectorised over a batch of trajectories (numpy); `reworld.planning.pdm` scores the simulated
states when `PDMScorerConfig.simulation == "navsim"`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import savgol_filter

WHEEL_BASE = 3.089  # [m] nuPlan's Pacifica, which NAVSIM's tracker and bicycle use
REAR_AXLE_TO_CENTER = 1.461  # [m] Pacifica: length / 2 − rear overhang = 2.588 − 1.127


@dataclass(frozen=True)
class TrackerConfig:
    dt: float = 0.1  # [s] simulation step (NAVSIM: the proposal sampling interval)
    horizon_s: float = 4.0
    pose_interval_s: float = 0.5
    q_lon: float = 10.0
    r_lon: float = 1.0
    q_lat: tuple[float, float, float] = (1.0, 10.0, 0.0)  # lateral error, heading error, steering angle
    r_lat: float = 1.0
    tracking_horizon: int = 10  # [steps]
    jerk_penalty: float = 1e-4
    curvature_rate_penalty: float = 1e-2
    stopping_gain: float = 0.5
    stopping_velocity: float = 0.2  # [m/s]
    wheel_base: float = WHEEL_BASE
    max_steering_angle: float = np.pi / 3
    accel_time_constant: float = 0.2  # [s]
    steering_time_constant: float = 0.05  # [s]

    @property
    def num_steps(self) -> int:
        return int(round(self.horizon_s / self.dt))


@dataclass(frozen=True)
class SimulatedStates:
    """Simulated rear-axle states at 0.1 s, t = 0 … horizon: every array (N, T+1)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray  # unwrapped along time
    speed: np.ndarray  # [m/s] along the heading (may go negative, as in NAVSIM)
    lon_accel: np.ndarray  # [m/s²] the lagged acceleration the bicycle applied (t = 0: logged)
    lat_accel: np.ndarray  # [m/s²] zero after t = 0 (the bicycle has none); t = 0: logged
    steering: np.ndarray  # [rad]


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.arctan2(np.sin(a), np.cos(a))


def reference_states(poses: np.ndarray, config: TrackerConfig = TrackerConfig()) -> np.ndarray:
    """(N, 8, 3) poses → (N, T+1, 3) reference [x, y, heading] at `dt`, starting at the origin."""
    n = poses.shape[0]
    knots = np.concatenate([np.zeros((n, 1, 3)), poses], axis=1)  # (N, 9, 3)
    knot_t = np.arange(knots.shape[1]) * config.pose_interval_s
    t = np.minimum(np.arange(config.num_steps + 1) * config.dt, knot_t[-1])
    heading = np.unwrap(knots[..., 2], axis=1)
    out = np.empty((n, len(t), 3))
    for c, values in enumerate((knots[..., 0], knots[..., 1], heading)):
        # linear in time between knots, each trajectory on the same time grid
        seg = np.clip(np.searchsorted(knot_t, t, side="right") - 1, 0, len(knot_t) - 2)
        w = (t - knot_t[seg]) / (knot_t[seg + 1] - knot_t[seg])
        out[..., c] = values[:, seg] * (1 - w) + values[:, seg + 1] * w
    return out


@lru_cache(maxsize=8)
def _profile_operators(m: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """C (m, m): value_i = C[i] @ [x0, rate_0 … rate_{m−2}] (x0 + dt Σ_{j<i} rate_j); D: first differences of
    the rates (m−2, m), zero on x0."""
    C = np.zeros((m, m))
    C[:, 0] = 1.0
    for i in range(1, m):
        C[i, 1:i + 1] = dt
    D = np.zeros((max(m - 2, 0), m))
    for j in range(m - 2):
        D[j, j + 1], D[j, j + 2] = -1.0, 1.0
    return C, D


@lru_cache(maxsize=8)
def _speed_operator(m: int, dt: float, jerk_penalty: float) -> np.ndarray:
    """(dt² CᵀC + λ DᵀD)⁺: the speed fit's regularised normal matrix, inverted (it does not depend on the data)."""
    C, D = _profile_operators(m, dt)
    return np.linalg.pinv(dt**2 * C.T @ C + jerk_penalty * D.T @ D)


def tracker_profiles(reference: np.ndarray, config: TrackerConfig = TrackerConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Speed and curvature profiles (N, M) of the reference's M = T displacements (regularised least squares)."""
    dt = config.dt
    dxy = np.diff(reference[..., :2], axis=1)  # (N, M, 2)
    theta = reference[:, :-1, 2]  # heading at the start of each displacement
    n, m = theta.shape
    C, D = _profile_operators(m, dt)
    # displacement i = dt v_i (cos θ_i, sin θ_i), v = C x: least squares A x = y with rows dt cos θ_i C_i and
    # dt sin θ_i C_i. Since cos² + sin² = 1, AᵀA = dt² CᵀC whatever the headings: the regularised normal matrix
    # is one constant, inverted once; only Aᵀy = dt Cᵀ (cos θ ⊙ Δx + sin θ ⊙ Δy) depends on the trajectory
    along = np.cos(theta) * dxy[..., 0] + np.sin(theta) * dxy[..., 1]  # (N, M)
    x = (dt * along) @ C @ _speed_operator(m, dt, config.jerk_penalty).T  # (N, M)
    speed = x @ C.T  # (N, M)
    # heading step i = dt v_i κ_i with κ = C z, z = [κ0, κ̇_0 …] regularised by diag(1e-10, λ, …). In κ itself
    # (C is invertible: z_0 = κ_0, z_j = (κ_j − κ_{j−1}) / dt) the normal equations are tridiagonal:
    # (diag(dt² v²) + 1e-10 e₀e₀ᵀ + λ/dt² DᵀD) κ = dt v ⊙ Δθ, solved for every trajectory at once (Thomas)
    dtheta = _wrap(np.diff(reference[..., 2], axis=1))  # (N, M)
    lam = config.curvature_rate_penalty / dt**2
    diag = (dt * speed) ** 2 + lam * np.r_[1.0, np.full(m - 2, 2.0), 1.0][None]
    diag[:, 0] += 1e-10
    off = -lam  # the sub- and super-diagonal, constant
    curvature = _tridiagonal_solve(diag, off, dt * speed * dtheta)
    return speed, curvature


def _tridiagonal_solve(diag: np.ndarray, off: float, rhs: np.ndarray) -> np.ndarray:
    """Solve symmetric tridiagonal systems (one per row of `diag`, (N, M); constant off-diagonal) by the Thomas
    algorithm, vectorised over N (the matrices are diagonally dominant: no pivoting needed)."""
    n, m = diag.shape
    c = np.empty((n, m))
    d = np.empty((n, m))
    c[:, 0] = off / diag[:, 0]
    d[:, 0] = rhs[:, 0] / diag[:, 0]
    for i in range(1, m):
        denom = diag[:, i] - off * c[:, i - 1]
        c[:, i] = off / denom
        d[:, i] = (rhs[:, i] - off * d[:, i - 1]) / denom
    x = np.empty((n, m))
    x[:, -1] = d[:, -1]
    for i in range(m - 2, -1, -1):
        x[:, i] = d[:, i] - c[:, i] * x[:, i + 1]
    return x


def lqr_commands(state: dict, reference: np.ndarray, speed_profile: np.ndarray, curvature_profile: np.ndarray,
                 k: int, config: TrackerConfig = TrackerConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Acceleration and steering-rate commands (N,) at step k from the simulated `state`
    (x, y, heading, speed, steering: (N,) each)."""
    dt, horizon = config.dt, config.tracking_horizon
    m = speed_profile.shape[1]
    ref_idx = min(k + horizon, m - 1)
    v, delta = state["speed"], state["steering"]
    v_ref = speed_profile[:, ref_idx]
    b_lon = horizon * dt
    accel = -b_lon * config.q_lon * (v - v_ref) / (b_lon * config.q_lon * b_lon + config.r_lon)
    # lateral error against reference pose k
    xr, yr, hr = reference[:, k, 0], reference[:, k, 1], reference[:, k, 2]
    dx, dy = state["x"] - xr, state["y"] - yr
    e = np.stack([-dx * np.sin(hr) + dy * np.cos(hr), _wrap(state["heading"] - hr), delta], axis=-1)  # (N, 3)
    window = curvature_profile[:, k:ref_idx]
    if window.shape[1] < horizon:
        pad = np.repeat(curvature_profile[:, ref_idx:ref_idx + 1], horizon - window.shape[1], axis=1)
        window = np.concatenate([window, pad], axis=1)  # (N, horizon)
    # The error after `horizon` steps is linear in e: err = A e + g, and the steering rate enters through Bv. Each
    # step's transition M_j = [[1, v_j dt, 0], [0, 1, v_j dt / L], [0, 0, 1]] is unit upper triangular, so
    # A = M_{H−1} ⋯ M_0, Bv_{j+1} = M_j Bv_j + (0, 0, dt) and g_{j+1} = M_j g_j − (0, v_j κ_j dt, 0) are kept as
    # their few non-constant entries (the products written out; g's last entry stays 0).
    zero = np.zeros_like(v)
    a01, a02, a12 = zero, zero, zero
    b0, b1, b2 = zero, zero, zero
    g0, g1 = zero, zero
    for j in range(horizon):
        vj = v + j * dt * accel
        m01, m12 = vj * dt, vj * dt / config.wheel_base
        a02, a01, a12 = a02 + m01 * a12, a01 + m01, a12 + m12
        b0, b1, b2 = b0 + m01 * b1, b1 + m12 * b2, b2 + dt
        g0, g1 = g0 + m01 * g1, g1 - vj * window[:, j] * dt
    Bv = np.stack([b0, b1, b2], axis=-1)
    err = np.stack([e[:, 0] + a01 * e[:, 1] + a02 * e[:, 2] + g0, e[:, 1] + a12 * e[:, 2] + g1, e[:, 2]], axis=-1)
    err[:, 1], err[:, 2] = _wrap(err[:, 1]), _wrap(err[:, 2])
    q = np.asarray(config.q_lat)
    steer_rate = -(Bv * q * err).sum(-1) / ((Bv * q * Bv).sum(-1) + config.r_lat)
    stop = (v_ref <= config.stopping_velocity) & (v <= config.stopping_velocity)
    accel = np.where(stop, -config.stopping_gain * (v - v_ref), accel)
    steer_rate = np.where(stop, 0.0, steer_rate)
    return accel, steer_rate


def propagate(state: dict, accel_cmd: np.ndarray, steer_rate_cmd: np.ndarray,
              config: TrackerConfig = TrackerConfig()) -> dict:
    """One explicit-Euler step of the kinematic bicycle with first-order lags on the commands."""
    dt = config.dt
    accel = state["accel"] + dt / (dt + config.accel_time_constant) * (accel_cmd - state["accel"])
    ideal = state["steering"] + dt * steer_rate_cmd
    steering = state["steering"] + dt / (dt + config.steering_time_constant) * (ideal - state["steering"])
    v, h, delta = state["speed"], state["heading"], state["steering"]
    return {
        "x": state["x"] + v * np.cos(h) * dt,
        "y": state["y"] + v * np.sin(h) * dt,
        "heading": h + v * np.tan(delta) / config.wheel_base * dt,  # kept unwrapped here
        "speed": v + accel * dt,
        "accel": accel,
        "steering": np.clip(steering, -config.max_steering_angle, config.max_steering_angle),
    }


def simulate(poses: np.ndarray, speed: float, lon_accel: float = 0.0, lat_accel: float = 0.0,
             config: TrackerConfig = TrackerConfig()) -> SimulatedStates:
    """Track (N, 8, 3) planned poses from the logged start state (speed, accelerations) with NAVSIM's LQR and
    kinematic bicycle; every state, the start included."""
    poses = np.asarray(poses, dtype=np.float64)
    n = poses.shape[0]
    reference = reference_states(poses, config)
    speed_profile, curvature_profile = tracker_profiles(reference, config)
    state = {"x": np.zeros(n), "y": np.zeros(n), "heading": np.zeros(n), "speed": np.full(n, float(speed)),
             "accel": np.full(n, float(lon_accel)), "steering": np.zeros(n)}
    rows = [state]
    for k in range(config.num_steps):
        a, u = lqr_commands(state, reference, speed_profile, curvature_profile, k, config)
        state = propagate(state, a, u, config)
        rows.append(state)

    def stack(key):
        return np.stack([r[key] for r in rows], axis=1)

    lat = np.zeros((n, config.num_steps + 1))
    lat[:, 0] = lat_accel
    return SimulatedStates(stack("x"), stack("y"), stack("heading"), stack("speed"), stack("accel"), lat,
                           stack("steering"))


# --------------------------------------------------------------------------- comfort
@dataclass(frozen=True)
class ComfortLimits:
    """NAVSIM's (nuPlan's) comfort bounds, strict."""

    min_lon_accel: float = -4.05  # [m/s²]
    max_lon_accel: float = 2.40
    max_abs_lat_accel: float = 4.89
    max_abs_jerk: float = 8.37  # [m/s³]
    max_abs_lon_jerk: float = 4.13
    max_abs_yaw_rate: float = 0.95  # [rad/s]
    max_abs_yaw_accel: float = 1.93  # [rad/s²]
    accel_window: int = 8  # accelerations smoothed before the jerks are taken
    yaw_window: int = 5


@lru_cache(maxsize=32)
def savgol_operator(n: int, window: int, poly: int, deriv: int, dt: float) -> np.ndarray:
    """(n, n) matrix S with scipy's `savgol_filter(v, window, poly, deriv, delta=dt)` along the last axis equal to
    v @ S (the filter is linear in v, its polynomial edges included; `window` is capped at n)."""
    return savgol_filter(np.eye(n), min(window, n), poly, deriv=deriv, delta=dt, axis=-1)


def _savgol(v: np.ndarray, window: int, poly: int, deriv: int = 0, dt: float = 1.0) -> np.ndarray:
    """NAVSIM's `savgol_filter` along time, as one product with the filter's matrix (the same values to float
    rounding; no convolution and no least-squares fit of each edge per call)."""
    return v @ savgol_operator(v.shape[-1], window, poly, deriv, dt)


def navsim_comfort(states: SimulatedStates, dt: float = 0.1, limits: ComfortLimits = ComfortLimits()
                   ) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """C (N,) in {0, 1} and the names of the violated bounds per trajectory."""
    whole = states.x.shape[1]  # NAVSIM's window: every state
    lon, lat = states.lon_accel, states.lat_accel
    heading = states.heading

    def jerk(a):
        smoothed = np.round(_savgol(a, limits.accel_window, 2), 8)
        return _savgol(smoothed, whole, 2, deriv=1, dt=dt)

    checks = {
        "lon_accel": lambda: (lambda a: (a > limits.min_lon_accel) & (a < limits.max_lon_accel))(
            np.round(_savgol(lon, whole, 2), 8)),
        "lat_accel": lambda: np.abs(np.round(_savgol(lat, whole, 2), 8)) < limits.max_abs_lat_accel,
        "jerk": lambda: np.abs(np.round(jerk(np.hypot(lon, lat)), 8)) < limits.max_abs_jerk,
        "lon_jerk": lambda: np.abs(np.round(jerk(lon), 8)) < limits.max_abs_lon_jerk,
        "yaw_rate": lambda: np.abs(np.round(_savgol(heading, limits.yaw_window, 2, 1, dt), 8))
        < limits.max_abs_yaw_rate,
        "yaw_accel": lambda: np.abs(np.round(_savgol(heading, limits.yaw_window, 3, 2, dt), 8))
        < limits.max_abs_yaw_accel,
    }
    ok = {k: f().all(-1) for k, f in checks.items()}
    comfortable = np.logical_and.reduce(list(ok.values()))
    violations = [tuple(k for k, v in ok.items() if not v[i]) for i in range(len(comfortable))]
    return comfortable.astype(float), violations
