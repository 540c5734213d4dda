"""Two `eval --json` runs of the same clips, samples and seeds side by side, as docs/world4s.md's screening results
(E8, E10) compare an arm with S1's arm A: each run's fd_judge, kid_judge, position error at 1 … 4 s and its mean over
the future frames, controllability with a 95 % Wilson interval of the rate and a bootstrap interval of the mean
lateral gap; and B − A of the mean position error over the horizon, paired by clip (95 % bootstrap and t).

    python scripts/compare_judge_evals.py docs/e10-judge.json docs/s1-e4-sampler-judge.json:A_rerun_with_intervals

`FILE:KEY` reads the eval document stored under KEY of a JSON that holds several (S1's).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def read_judge(spec: str) -> dict:
    path, _, key = spec.partition(":")
    doc = json.loads(Path(path).read_text())
    if key:
        doc = doc[key]
    return doc.get("judge", doc)


def summary(j: dict) -> dict:
    from reworld.evaluation.stats import paired_interval, wilson

    pos = np.asarray(j["errors"]["position_m"])
    per_second = int(round(len(pos) / j["video_horizon_s"]))
    c = j["controllability"]
    ctrl = {"clips": c["clips"], "rate": c["rate"], "gap_m": c["lateral_gap_m"]}
    if "gaps_m" in c:  # eval documents from before 2026-12-02 kept only the rate and the mean gap
        gaps = np.asarray(c["gaps_m"])
        gap = paired_interval(gaps)
        turned = int(np.sum(gaps > 0))
        ctrl.update(turned=turned, rate_wilson=list(wilson(turned, len(gaps))), gap_boot=[gap.boot_lo, gap.boot_hi])
    return {"fd_judge": j["fd_judge"], "kid_judge": j["kid_judge"],
            "position_m_at_s": [float(pos[per_second * s - 1]) for s in range(1, int(j["video_horizon_s"]) + 1)],
            "position_m_mean": float(pos.mean()), "controllability": ctrl}


def main(argv=None) -> int:
    from reworld.evaluation.stats import paired_interval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("b", help="eval JSON of the arm (FILE or FILE:KEY)")
    ap.add_argument("a", help="eval JSON it is compared with, on the same clips and seeds")
    args = ap.parse_args(argv)
    jb, ja = read_judge(args.b), read_judge(args.a)
    pb, pa = np.asarray(jb["position_m_per_video"]), np.asarray(ja["position_m_per_video"])
    if pb.shape != pa.shape:
        ap.error(f"the two runs read different clips or samples: {pb.shape} against {pa.shape}")
    diff = paired_interval(pb.mean(1) - pa.mean(1))
    out = {"b": summary(jb), "a": summary(ja),
           "b_minus_a_position_mean_m": {"mean": diff.mean, "boot": [diff.boot_lo, diff.boot_hi],
                                         "t": [diff.t_lo, diff.t_hi], "units": len(pb)}}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
