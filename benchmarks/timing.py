"""Timing helpers shared by the benchmarks: paired A/B timings and load-robust ratios."""
from __future__ import annotations

import statistics
import time


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired_times(fn_a, fn_b, repeats: int) -> tuple[list[float], list[float]]:
    """Times of a and b in A B B A order, so that drift in machine load (other jobs on 2 shared cores)
    falls on both alike."""
    a, b = [], []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(timed(fn_a)), b.append(timed(fn_b))
        else:
            b.append(timed(fn_b)), a.append(timed(fn_a))
    return a, b


def ratio(num: list[float], den: list[float]) -> dict[str, float]:
    """Ratio of medians, and of minima (the least load-disturbed runs)."""
    return {"median": round(statistics.median(num) / statistics.median(den), 3), "min": round(min(num) / min(den), 3)}
