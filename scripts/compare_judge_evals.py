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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from analysis.screen import compare_evals

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("b", help="eval JSON of the arm (FILE or FILE:KEY); several seeds: a comma-separated list")
    ap.add_argument("a", help="eval JSON it is compared with, on the same clips and seeds; several seeds: a "
                              "comma-separated list in the same seed order")
    args = ap.parse_args(argv)
    try:
        out = compare_evals(args.b.split(","), args.a.split(","))
    except ValueError as e:
        ap.error(str(e))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
