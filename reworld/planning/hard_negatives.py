"""Hard-negative trajectories: close to the expert, yet failing safety under the PDM scorer (docs/design.md §2).

A seeded pool of expert perturbations is scored in one batch:

- lateral: an offset along the path normal that grows with time (linear, quadratic or lane-change
  shaped), towards the road edge or into neighbours;
- speed: the expert's path driven faster (arc length scaled, or an extra constant acceleration, which
  gains more distance at the end for the same mean distance and moves even a stopping expert into what
  it stopped for);
- heading: the whole path rotated about the ego;
- mixed: all three at once, smaller.

Each candidate's label comes from the scorer (`failure_kind`): "collision" (NC = 0), else "off_road"
(DAC = 0), else "ttc" (TTC = 0); safe candidates are dropped, as are those farther than
`max_mean_l2_m` from the expert. The kinds are then taken in turn, nearest to the expert first, skipping
near-duplicates, so a scene that allows all three kinds yields a balanced set. Fewer than k come back
only when the pool (widened over `rounds`) holds no more; `counts` says how many of each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from reworld.planning.pdm import (
    FAILURE_KINDS,
    PDMResults,
    PDMScorerConfig,
    failure_kind,
    reference_progress,
    score_trajectories,
)
from reworld.planning.scene import PlanningScene, validate_poses


@dataclass(frozen=True)
class HardNegativeConfig:
    max_mean_l2_m: float = 5.0  # [m] candidates farther from the expert (mean over the 8 poses) are dropped
    min_separation_m: float = 0.3  # [m] chosen negatives differ from each other by at least this (mean L2)
    pool_per_family: int = 64  # candidates drawn per family per round
    max_lateral_m: float = 4.0  # [m] largest final lateral offset in round 0
    max_speed_scale: float = 2.0  # largest arc-length scale in round 0
    max_extra_accel_mps2: float = 3.0  # [m/s²] largest extra acceleration on top of the scale in round 0
    max_heading_deg: float = 15.0  # [deg] largest rotation of the path in round 0
    rounds: int = 3  # later rounds widen every range by one more round-0 range
    scorer: PDMScorerConfig = field(default_factory=PDMScorerConfig)


@dataclass(frozen=True)
class HardNegatives:
    trajectories: np.ndarray  # (M, 8, 3) [x, y, heading], M <= k
    labels: list[str]  # per trajectory, one of FAILURE_KINDS
    results: list[PDMResults]  # per trajectory
    mean_l2_m: np.ndarray  # (M,) [m] mean distance to the expert over the 8 poses
    counts: dict[str, int]  # per kind in FAILURE_KINDS


# --------------------------------------------------------------------------- perturbations


@dataclass(frozen=True)
class _Path:
    """The expert as a path from the origin: arc length, positions and headings (9 samples)."""

    s: np.ndarray  # (9,) [m] cumulative arc length, s[0] = 0
    xy: np.ndarray  # (9, 2)
    heading: np.ndarray  # (9,) unwrapped

    @classmethod
    def from_expert(cls, expert: np.ndarray) -> "_Path":
        xy = np.concatenate([np.zeros((1, 2)), expert[:, :2]])
        heading = np.unwrap(np.concatenate([[0.0], expert[:, 2]]))
        s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
        return cls(s, xy, heading)

    def sample(self, s_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (…, 2) and headings (…) at arc lengths s_new; straight on past the end."""
        keep = np.concatenate([[True], np.diff(self.s) > 1e-6])
        s, xy, h = self.s[keep], self.xy[keep], self.heading[keep]
        if len(s) < 2:  # a standing expert: drive straight along its heading
            s, xy, h = np.array([0.0, 1.0]), np.array([[0, 0], [np.cos(h[-1]), np.sin(h[-1])]]), np.repeat(h[-1], 2)
        x = np.interp(s_new, s, xy[:, 0])
        y = np.interp(s_new, s, xy[:, 1])
        head = np.interp(s_new, s, h)
        beyond = np.maximum(s_new - s[-1], 0.0)
        return np.stack([x + beyond * np.cos(h[-1]), y + beyond * np.sin(h[-1])], -1), head


def _perturb(path: _Path, t: np.ndarray, scale: float, extra_accel: float, lateral: float, profile: str,
             rotation: float) -> np.ndarray:
    """One candidate (8, 3): drive the expert path faster, offset it sideways, rotate it."""
    s_new = scale * path.s[1:] + 0.5 * extra_accel * t**2  # extra acceleration: moves even a stopping expert
    xy, head = path.sample(s_new)
    tau = t / t[-1]
    shape = {"linear": tau, "quadratic": tau**2, "lane_change": tau * tau * (3 - 2 * tau)}[profile]
    d = lateral * shape
    xy = xy + d[:, None] * np.stack([-np.sin(head), np.cos(head)], -1)
    ds = np.diff(np.concatenate([[0.0], s_new]))
    dd = np.diff(np.concatenate([[0.0], d]))
    head = head + np.arctan2(dd, np.maximum(ds, 1e-3))
    c, s = math.cos(rotation), math.sin(rotation)
    xy = xy @ np.array([[c, s], [-s, c]])
    return np.concatenate([xy, (head + rotation)[:, None]], -1)


def _draw_pool(path: _Path, t: np.ndarray, rng: np.random.Generator, widen: float,
               config: HardNegativeConfig) -> np.ndarray:
    n = config.pool_per_family
    profiles = ("linear", "quadratic", "lane_change")
    sign = lambda: rng.choice([-1.0, 1.0])  # noqa: E731
    lat = config.max_lateral_m * widen
    rot = math.radians(config.max_heading_deg) * widen
    out = []
    for _ in range(n):  # lateral
        out.append(_perturb(path, t, 1.0, 0.0, sign() * rng.uniform(0.3, lat), profiles[rng.integers(3)], 0.0))
    for _ in range(n):  # speed
        scale = rng.uniform(1.05, 1.0 + (config.max_speed_scale - 1.0) * widen)
        extra = rng.uniform(0.0, config.max_extra_accel_mps2 * widen) if rng.random() < 0.7 else 0.0
        out.append(_perturb(path, t, scale if extra == 0.0 else 1.0, extra, 0.0, "linear", 0.0))
    for _ in range(n):  # heading
        out.append(_perturb(path, t, 1.0, 0.0, 0.0, "linear", sign() * rng.uniform(math.radians(1.0), rot)))
    for _ in range(n):  # mixed
        out.append(_perturb(path, t, rng.uniform(1.0, 1.0 + (config.max_speed_scale - 1.0) * widen / 2),
                            rng.uniform(0.0, config.max_extra_accel_mps2 * widen / 2), rng.normal(0.0, lat / 3),
                            profiles[rng.integers(3)], rng.normal(0.0, rot / 3)))
    return np.stack(out)


# --------------------------------------------------------------------------- selection


def _select(pool: np.ndarray, labels: list[str], dist: np.ndarray, k: int, min_sep: float) -> list[int]:
    """Kinds in turn, nearest first, skipping candidates within min_sep of one already chosen."""
    queues = {kind: [i for i in np.argsort(dist, kind="stable") if labels[i] == kind] for kind in FAILURE_KINDS}
    chosen: list[int] = []
    while len(chosen) < k and any(queues.values()):
        for kind in FAILURE_KINDS:
            q = queues[kind]
            while q:
                i = q.pop(0)
                if all(np.linalg.norm(pool[i, :, :2] - pool[j, :, :2], axis=-1).mean() >= min_sep for j in chosen):
                    chosen.append(i)
                    break
            if len(chosen) == k:
                break
    return chosen


def generate_hard_negatives(scene: PlanningScene, expert, k: int = 8, seed: int = 0,
                            config: HardNegativeConfig | None = None) -> HardNegatives:
    """Up to k trajectories near `expert` (8, 3) that fail NC, DAC or TTC under the PDM scorer."""
    config = config or HardNegativeConfig()
    if config.rounds < 1 or k < 1:
        raise ValueError(f"generate_hard_negatives: need rounds >= 1 and k >= 1, got {config.rounds} and {k}")
    expert = validate_poses(expert, "expert")
    rng = np.random.default_rng(seed)
    path = _Path.from_expert(expert)
    t = np.arange(1, 9) * config.scorer.pose_interval_s
    reference = reference_progress(scene, config.scorer)
    pools, labels, results = [], [], []
    for round_ in range(config.rounds):
        pool = _draw_pool(path, t, rng, 1.0 + round_, config)
        res = score_trajectories(scene, pool, config.scorer, reference=reference)
        pools.append(pool)
        results += res
        labels += [failure_kind(r) for r in res]
        all_pool = np.concatenate(pools)
        dist = np.linalg.norm(all_pool[..., :2] - expert[None, :, :2], axis=-1).mean(-1)
        usable = np.array([lab != "safe" for lab in labels]) & (dist <= config.max_mean_l2_m)
        chosen = _select(all_pool, [lab if ok else "safe" for lab, ok in zip(labels, usable)], dist, k,
                         config.min_separation_m)
        kinds = {labels[i] for i in chosen}
        if len(chosen) == k and len(kinds) == len(FAILURE_KINDS):  # else widen, for more or other kinds
            break
    chosen_labels = [labels[i] for i in chosen]
    return HardNegatives(
        trajectories=all_pool[chosen].reshape(-1, 8, 3),
        labels=chosen_labels,
        results=[results[i] for i in chosen],
        mean_l2_m=dist[chosen],
        counts={kind: chosen_labels.count(kind) for kind in FAILURE_KINDS},
    )
