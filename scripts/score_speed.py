"""How fast the video judge sees the generated ego go, from judge-scores files alone (prints JSON).

    python scripts/score_speed.py FILE [FILE ...] [--minus FILE ...] [--pull] [--judge assets/checkpoints/judge]

Each FILE is a score file of `python -m analysis judge-scores` (the claims study's ledgers keep one per arm, seed,
checkpoint and w). The judge's speed reading of its futures minus that of their real clips [m/s] comes from the
stored embeddings, exactly (`analysis.study_convergence.speed_reader`: the speed head is linear on the per-step
features, whose mean over the future steps is the embedding's second half): each clip the mean over its futures,
then the mean over clips, with a bootstrap over clips. With `--minus` (as many files, of the same clips, in the same
order): each FILE minus its partner, paired by clip, and over the pairs (seeds, say) their mean with the t interval
over pairs and a bootstrap in which one resample of clips serves every pair. The judge must be the one that scored
the files (their embeddings' width is checked against it). With `--pull` (docs/world4s.md, D9): per file, each clip's
futures' mean reading regressed on its real clip's reading (slope: the share of a clip's speed difference from the
others that its futures keep), and with `--minus` each slope minus its partner's, paired by clip.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.study_convergence import clip_readings, clip_speed, line_fit, read_npz, speed_reader  # noqa: E402
from reworld.evaluation.stats import t_interval  # noqa: E402
from reworld.paths import JUDGE_CHECKPOINT  # noqa: E402

RESAMPLES = 2000


def speed_report(files: list[Path], minus: list[Path], read, resamples: int = RESAMPLES) -> dict:
    def iv(b: np.ndarray) -> list[float]:
        return [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]

    per = {str(p): clip_speed(read_npz(p), read) for p in [*files, *minus]}
    sizes = {len(v) for v in per.values()}
    rng = np.random.default_rng(0)
    out: dict = {"unit": "m/s: the judge's speed reading of the futures minus their real clips' (each clip the mean "
                         "over its futures; mean over clips); percentile 95 % bootstrap over clips",
                 "resamples": resamples, "files": {}}
    for name, v in per.items():
        idx = rng.integers(0, len(v), (resamples, len(v)))
        out["files"][name] = {"value": float(v.mean()), "interval": iv(v[idx].mean(1)), "clips": len(v)}
    if not minus:
        return out
    if len(minus) != len(files):
        raise ValueError(f"--minus: {len(minus)} files for {len(files)}; give one partner per file")
    if len(sizes) != 1:
        raise ValueError(f"the files hold different numbers of clips ({sorted(sizes)}): they cannot be paired by clip")
    n = sizes.pop()
    idx = rng.integers(0, n, (resamples, n))
    d = np.stack([per[str(a)] - per[str(b)] for a, b in zip(files, minus)])  # (pairs, clips)
    out["pairs"] = [{"file": str(a), "minus": str(b), "value": float(row.mean()), "interval": iv(row[idx].mean(1))}
                    for a, b, row in zip(files, minus, d)]
    per_pair = d.mean(1)
    lo, hi = t_interval(per_pair) if len(per_pair) > 1 else (None, None)
    out["over_pairs"] = {"mean": float(per_pair.mean()), "t_lo": lo, "t_hi": hi,
                         "boot": iv(np.stack([row[idx].mean(1) for row in d]).mean(0))}
    return out


def pull_report(files: list[Path], minus: list[Path], read, resamples: int = RESAMPLES) -> dict:
    """`--pull`: per file, each clip's futures' mean speed reading regressed on its real clip's reading (slope: the
    share of a clip's speed difference from the others that its futures keep; 1 = none lost), with a bootstrap over
    clips; with `minus`, each file's slope minus its partner's, paired by clip on the same resamples."""
    def iv(b: np.ndarray) -> list[float]:
        return [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]

    if minus and len(minus) != len(files):
        raise ValueError(f"--minus: {len(minus)} files for {len(files)}; give one partner per file")
    per = {str(p): clip_readings(read_npz(p), read) for p in [*files, *minus]}
    sizes = {len(x) for x, _ in per.values()}
    if minus and len(sizes) != 1:
        raise ValueError(f"the files hold different numbers of clips ({sorted(sizes)}): they cannot be paired by clip")
    rng = np.random.default_rng(0)
    idx = {n: rng.integers(0, n, (resamples, n)) for n in sorted(sizes)}
    out: dict = {"unit": "per clip, the futures' mean speed reading ≈ slope × the real clip's + intercept [m/s]; "
                         "percentile 95 % bootstrap over clips", "resamples": resamples, "files": {}}
    boot = {}
    for name, (x, y) in per.items():
        a, b = line_fit(x, y)
        i = idx[len(x)]
        boot[name] = line_fit(x[i], y[i])
        out["files"][name] = {"slope": float(a), "slope_interval": iv(boot[name][0]), "intercept": float(b),
                              "intercept_interval": iv(boot[name][1]), "clips": len(x)}
    if minus:
        out["pairs"] = []
        for a, b in zip(files, minus):
            d = out["files"][str(a)]["slope"] - out["files"][str(b)]["slope"]
            out["pairs"].append({"file": str(a), "minus": str(b), "slope_difference": d,
                                 "interval": iv(boot[str(a)][0] - boot[str(b)][0])})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="judge-scores files (.npz)")
    ap.add_argument("--minus", nargs="+", type=Path, default=[], help="one reference file per file, same clips")
    ap.add_argument("--judge", default=str(JUDGE_CHECKPOINT), help="the judge that scored the files")
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    ap.add_argument("--pull", action="store_true", help="per file, the futures' speed regressed on the real clips' "
                                                          "(slope, intercept), not the mean difference")
    args = ap.parse_args(argv)
    if args.resamples < 100:
        ap.error("--resamples must be ≥ 100")
    try:
        report = pull_report if args.pull else speed_report
        print(json.dumps(report(args.files, args.minus, speed_reader(args.judge), args.resamples), indent=1))
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"score_speed: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
