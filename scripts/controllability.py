"""Does "what if it turned left?" turn the imagined future? Controllability at several command-guidance scales.

    python scripts/controllability.py --checkpoint RUN --judge JUDGE [--every 3] [--command-guidance 0 2 5]
        [--steps 20] [--guidance W] [--seed 0] [--out numbers.json]

On the clips whose logged command turns, among every K-th clip of the validation split (as `eval --every K`): the
future generated with "left" and with "right" from the same seed, read by the video judge (`controllability` of
`reworld.evaluation.evaluate`: the share of clips read further left under "left", the mean lateral gap), at each
command-guidance scale s (`sample_future`'s contrast with the other commands; 0 = off). For each s also: a 95 %
Wilson interval of the rate, a 95 % bootstrap interval of the mean gap, and how far from the truth the judge reads
the ego in the future generated under the *logged* command (position error at the last future frame and averaged
over the horizon), paired by clip with s = 0 when 0 is among the scales: the price, if any, of steering harder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@torch.no_grad()
def main(argv=None) -> int:
    from analysis.output import emit_json
    from reworld.data.loader import NuScenesClips
    from reworld.data.types import COMMANDS
    from reworld.evaluation.evaluate import controllability
    from reworld.evaluation.judge import check_judge_reads, judge_set_of, load_judge, position_errors, read_videos
    from reworld.evaluation.stats import paired_interval, wilson
    from reworld.pipelines import WorldActionPipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--judge", required=True)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--command-guidance", type=float, nargs="+", default=[0.0, 2.0, 5.0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=None, help="w (default: the checkpoint's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    pipe = WorldActionPipeline.from_pretrained(args.checkpoint, device="cpu")
    judge = load_judge(args.judge)
    ds = NuScenesClips(pipe.config.data, "val", geometry=False)
    check_judge_reads(judge, ds.cfg)
    indices = list(range(0, len(ds), args.every))
    data = judge_set_of(ds, indices)
    w = pipe.default_guidance if args.guidance is None else args.guidance
    turning = [j for j in range(len(indices)) if COMMANDS[int(data.command[j])] in ("left", "right")]
    if not turning:
        ap.error(f"none of the {len(indices)} clips turns (left/right): nothing to steer")
    sub = data.subset(turning)
    out = {"checkpoint": args.checkpoint, "judge": args.judge, "every": args.every, "steps": args.steps,
           "guidance": w, "seed": args.seed, "turning_clips": len(turning), "scales": {}}
    per_scale = {}
    for s in args.command_guidance:
        pairs = []
        c = controllability(pipe, ds, indices, judge, data, args.steps, w, args.seed, command_guidance=s,
                            videos=pairs)
        # the logged command's future of each turning clip is one of its pair (same seed, command and s): how far
        # from the truth it reads
        logged = torch.stack([pair[0 if COMMANDS[int(data.command[j])] == "left" else 1] for j, pair in pairs])
        pos = position_errors(read_videos(judge, logged, times=sub.time), sub)  # (N, F)
        per_scale[s] = (np.asarray(c["gaps_m"]), pos)
        k, n = int(np.sum(np.asarray(c["gaps_m"]) > 0)), c["clips"]
        gap = paired_interval(c["gaps_m"], resamples=4000)
        out["scales"][f"{s:g}"] = {**c, "rate_wilson": list(wilson(k, n)),
                                   "lateral_gap_boot": [gap.boot_lo, gap.boot_hi],
                                   "logged_position_m_last": float(pos[:, -1].mean()),
                                   "logged_position_m_mean": float(pos.mean())}
        print(f"s = {s:g}: rate {c['rate']:.0%} of {n} {list(np.round(wilson(k, n), 2))}, gap "
              f"{c['lateral_gap_m']:+.2f} m [{gap.boot_lo:+.2f}, {gap.boot_hi:+.2f}], logged-command position "
              f"error {pos[:, -1].mean():.2f} m at the last frame, {pos.mean():.2f} m mean", file=sys.stderr,
              flush=True)
    if 0.0 in per_scale:
        base = per_scale[0.0][1]
        for s, (_, pos) in per_scale.items():
            if s == 0.0:
                continue
            d_last = paired_interval(pos[:, -1] - base[:, -1], resamples=4000)
            d_mean = paired_interval(pos.mean(1) - base.mean(1), resamples=4000)
            out["scales"][f"{s:g}"]["logged_position_minus_s0"] = {
                "last": [d_last.mean, d_last.boot_lo, d_last.boot_hi],
                "mean": [d_mean.mean, d_mean.boot_lo, d_mean.boot_hi]}
    return emit_json(out, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
