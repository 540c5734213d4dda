"""UMAP speed of `analysis.representations.umap_embedding`, printed as JSON.

Features: `--points` vectors of `--dim` dimensions, a mixture of 4 Gaussian clusters (like experts and
three failure kinds). One warm-up fit on a small set pays numba's JIT first (not counted, but reported),
then `--repeats` fits of the full set with a fixed random_state (no cache) are timed; the target is a
median ≤ `--target` seconds (10 s for 2,000 points on 2 shared CPU cores).

    .venv/bin/python -m benchmarks.bench_umap [--points 2000] [--dim 256] [--repeats 3]   # from the repo root
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np


def features(points: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(4, dim))
    return (centres[rng.integers(4, size=points)] + rng.normal(size=(points, dim))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-components", type=int, default=2, choices=[2, 3])
    parser.add_argument("--target", type=float, default=10.0, help="[s] median fit time to pass")
    args = parser.parse_args()

    from analysis.representations import umap_embedding

    t0 = time.perf_counter()
    import umap  # noqa: F401  first import fills numba's cache

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    umap_embedding(features(200, args.dim, seed=1), n_components=args.n_components, random_state=0)
    warmup_s = time.perf_counter() - t0
    x = features(args.points, args.dim)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        coords = umap_embedding(x, n_components=args.n_components, random_state=0)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({
        "benchmark": "umap_embedding", "points": args.points, "dim": args.dim, "n_components": args.n_components,
        "n_neighbors": 15, "random_state": 0, "import_s": round(import_s, 2), "warmup_fit_s": round(warmup_s, 2),
        "fit_s": [round(t, 2) for t in times], "median_fit_s": round(median, 2), "target_s": args.target,
        "ok": median <= args.target, "finite": bool(np.isfinite(coords).all()), "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
