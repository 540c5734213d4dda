"""Intervals for paired differences: the one implementation behind the claims study (`analysis.guidance_toy`), the
app's checkpoint comparison and `eval`'s generated-against-baseline differences."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    mean: float
    boot_lo: float
    boot_hi: float
    t_lo: float
    t_hi: float


def paired_interval(diffs: np.ndarray, resamples: int = 10_000, seed: int = 0) -> Interval:
    """95 % percentile bootstrap over the units (numpy seed 0) and the Student-t interval of their mean."""
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(resamples, n))].mean(1)
    t_lo, t_hi = t_interval(diffs)
    return Interval(float(diffs.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)), t_lo, t_hi)


def t_interval(values) -> tuple[float, float]:
    """The 95 % Student-t interval of the mean of `values` (n − 1 degrees of freedom; (−inf, inf) for one value):
    over seeds, the interval every study reports beside its bootstrap over clips."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n) if n > 1 else float("inf")
    return float(values.mean() - half), float(values.mean() + half)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a rate of k successes in n trials (95 % at z = 1.96)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def per_clip_mean(values: np.ndarray, clip_of: np.ndarray, clips: int) -> np.ndarray:
    """(clips, …): each clip's rows of `values` averaged (its samples), so that a clip weighs once however many
    futures it has; the unit every paired-by-clip interval resamples."""
    values, clip_of = np.asarray(values), np.asarray(clip_of)
    return np.stack([values[clip_of == j].mean(0) for j in range(clips)])
