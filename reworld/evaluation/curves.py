"""Numbers read off training curves: when a curve first reaches a value (the convergence read-out of the
ablations; used by `reworld.training.ablation` and `analysis.ablation`)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _steps_values(curve) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(curve, pd.DataFrame):
        if not {"step", "value"} <= set(curve.columns):
            raise ValueError("steps_to_reach: a DataFrame curve needs 'step' and 'value' columns")
        steps, values = curve["step"].to_numpy(), curve["value"].to_numpy()
    elif isinstance(curve, pd.Series):
        steps, values = curve.index.to_numpy(), curve.to_numpy()
    else:
        steps, values = (np.asarray(a) for a in curve)
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"steps_to_reach: steps and values must be 1-D of one length, got {steps.shape}, "
                         f"{values.shape}")
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


def steps_to_reach(curve, target: float, mode: str = "min", smooth: int = 1) -> float:
    """The first step at which a curve reaches `target`: value ≤ target for mode "min" (a loss going
    down), value ≥ target for mode "max" (an accuracy/PDMS going up). NaN if it never does.

    curve: a DataFrame with step and value columns, a Series indexed by step, or (steps, values).
    smooth: trailing moving average over this many logged points first (uses no future values), so a
    single noisy dip does not count as reaching the target."""
    if mode not in ("min", "max"):
        raise ValueError(f"steps_to_reach: mode must be 'min' or 'max', got {mode!r}")
    if not isinstance(smooth, (int, np.integer)) or smooth < 1:
        raise ValueError(f"steps_to_reach: smooth must be an integer ≥ 1, got {smooth!r}")
    steps, values = _steps_values(curve)
    if len(values) == 0:
        return math.nan
    if smooth > 1:
        values = pd.Series(values).rolling(smooth, min_periods=1).mean().to_numpy()
    hit = values <= target if mode == "min" else values >= target
    idx = np.flatnonzero(hit)
    return float(steps[idx[0]]) if len(idx) else math.nan
