"""Two `eval --json` runs of the same clips, samples and seeds side by side, as docs/world4s.md's screening results
(E8, E10) compare an arm with S1's arm A: each run's fd_judge, kid_judge, position error at 1 … 4 s and its mean over
the future frames, controllability with a 95 % Wilson interval of the rate and a bootstrap interval of the mean
lateral gap; and B − A of the mean position error over the horizon, paired by clip (95 % bootstrap and t).

    python scripts/compare_judge_evals.py docs/e10-judge.json docs/s1-e4-sampler-judge.json:A_rerun_with_intervals

`FILE:KEY` reads the eval document stored under KEY of a JSON that holds several (S1's).

Several training seeds per arm (a screen that is to resolve effects the size of a retrain's init noise, E12): give
each arm as a comma-separated list of eval documents, one per seed, in the same seed order (arm B's seed i was
trained from arm A's seed-i init), every one of the same clips and samples:

    python scripts/compare_judge_evals.py b-s0.json,b-s1.json,b-s2.json a-s0.json,a-s1.json,a-s2.json

Then each seed's B − A is shown as above, and the pooled B − A is the mean over seeds and clips of the per-clip
differences d[s, c], with two intervals: the Student-t interval over the seeds' means (n − 1 degrees of freedom; the
one a decision over few seeds rests on, since the seeds are the units a retrain varies) and a two-level bootstrap
(seeds drawn with replacement, then clips, the same clips for every drawn seed). `init_spread_m` is the standard
deviation over seeds of each arm's own mean position error: what a retrain of one recipe moves by itself.
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


def seed_intervals(d: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict:
    """Pooled B − A over (seeds, clips) differences `d`: the mean, the t interval over the seeds' means and the
    two-level bootstrap (seeds with replacement, then clips, numpy seed `seed`)."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    n_seeds, n_clips = d.shape
    per_seed = d.mean(1)
    mean = float(per_seed.mean())
    if n_seeds > 1:
        half = stats.t.ppf(0.975, n_seeds - 1) * per_seed.std(ddof=1) / np.sqrt(n_seeds)
    else:
        half = float("inf")
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    c_idx = rng.integers(0, n_clips, size=(resamples, n_clips))
    means = np.array([d[s][:, c].mean() for s, c in zip(s_idx, c_idx)])
    return {"mean": mean, "t_over_seeds": [mean - half, mean + half],
            "boot_seeds_clips": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "per_seed": per_seed.tolist(), "seeds": n_seeds, "clips": n_clips}


def main(argv=None) -> int:
    from reworld.evaluation.stats import paired_interval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("b", help="eval JSON of the arm (FILE or FILE:KEY); several seeds: a comma-separated list")
    ap.add_argument("a", help="eval JSON it is compared with, on the same clips and seeds; several seeds: a "
                              "comma-separated list in the same seed order")
    args = ap.parse_args(argv)
    specs_b, specs_a = args.b.split(","), args.a.split(",")
    if len(specs_b) != len(specs_a):
        ap.error(f"B has {len(specs_b)} seeds and A {len(specs_a)}: give one eval of each arm per seed, paired")
    rows, diffs, means = [], [], {"b": [], "a": []}
    for sb, sa in zip(specs_b, specs_a):
        jb, ja = read_judge(sb), read_judge(sa)
        pb, pa = np.asarray(jb["position_m_per_video"]), np.asarray(ja["position_m_per_video"])
        if pb.shape != pa.shape or (diffs and pb.shape[0] != len(diffs[0])):
            ap.error(f"the runs read different clips or samples: {sb} {pb.shape} against {sa} {pa.shape}")
        d = pb.mean(1) - pa.mean(1)
        diff = paired_interval(d)
        diffs.append(d)
        means["b"].append(float(pb.mean()))
        means["a"].append(float(pa.mean()))
        rows.append({"b": summary(jb), "a": summary(ja),
                     "b_minus_a_position_mean_m": {"mean": diff.mean, "boot": [diff.boot_lo, diff.boot_hi],
                                                   "t": [diff.t_lo, diff.t_hi], "units": len(pb)}})
    if len(rows) == 1:
        out = rows[0]
    else:
        out = {"seeds": rows, "b_minus_a_position_mean_m": seed_intervals(np.stack(diffs)),
               "init_spread_m": {k: float(np.std(v, ddof=1)) for k, v in means.items()},
               "position_m_mean": {k: float(np.mean(v)) for k, v in means.items()}}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
