"""Two `python -m analysis plan-scores` CSVs of the same clips and seeds side by side: each one's mean PDMS and
sub-scores over clips and plans, and B − A of each clip's PDMS (the mean over its plans), in points, paired by clip
(95 % bootstrap over clips, numpy seed 0, and the Student-t interval), as the claims study reads a planner
difference (docs/study.md §4). Used by docs/world4s.md's PL1 (the planner's σ grid).

    python scripts/compare_plan_scores.py A.csv B.csv [--labels a b] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def compare(a_csv: Path, b_csv: Path) -> dict:
    from analysis.study_planner import METRICS, read_scores
    from reworld.evaluation.stats import paired_interval

    a, b = read_scores(a_csv), read_scores(b_csv)
    if set(a) != set(b):
        raise ValueError(f"{a_csv} and {b_csv} score different clips ({len(set(a) ^ set(b))} not in both)")
    tokens = sorted(a)
    for t in tokens:
        if a[t].shape != b[t].shape:
            raise ValueError(f"clip {t}: {a[t].shape[0]} plans in {a_csv}, {b[t].shape[0]} in {b_csv}")
    out = {"clips": len(tokens), "plans_per_clip": int(a[tokens[0]].shape[0])}
    for name, s in (("a", a), ("b", b)):
        rows = np.concatenate([s[t] for t in tokens])
        out[name] = {m: float(rows[:, i].mean()) for i, m in enumerate(METRICS)}
    diffs = 100 * np.array([b[t][:, 0].mean() - a[t][:, 0].mean() for t in tokens])
    iv = paired_interval(diffs)
    out["pdms_b_minus_a_points"] = {"mean": iv.mean, "boot": [iv.boot_lo, iv.boot_hi], "t": [iv.t_lo, iv.t_hi]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--labels", nargs=2, default=["A", "B"])
    p.add_argument("--json", type=Path, help="also write the comparison here")
    args = p.parse_args(argv)
    out = compare(args.a, args.b)
    la, lb = args.labels
    print(f"{out['clips']} clips × {out['plans_per_clip']} plans")
    for key, label in (("a", la), ("b", lb)):
        print(f"{label:>12}: " + ", ".join(f"{m} {v:.4f}" for m, v in out[key].items()))
    d = out["pdms_b_minus_a_points"]
    print(f"PDMS {lb} − {la}: {d['mean']:+.2f} points, bootstrap [{d['boot'][0]:+.2f}, {d['boot'][1]:+.2f}], "
          f"t [{d['t'][0]:+.2f}, {d['t'][1]:+.2f}] (paired over clips)")
    if args.json:
        out["labels"] = [la, lb]
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
