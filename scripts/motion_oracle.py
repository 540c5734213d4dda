"""Does the Video DiT render the motion it is handed? Futures from given poses (docs/world4s.md, E17).

    python scripts/motion_oracle.py --checkpoint RUN --judge JUDGE [--every 3] [--steps 20] [--seed 0]
        [--min-lateral 0.5] [--out numbers.json]

For a Video DiT with `video.motion_feedback`, on every K-th validation clip (as `eval --every K`), three futures
from the same seed, read by the video judge:
- `own`: the head's own poses fed back (what the model samples by default, at the run's motion guidance);
- `logged`: the logged ego poses at the future latent frames' times fed instead (the oracle: what the later blocks
  render of the true motion; its position error against `own`'s says how much a perfect pose reading would give);
- `mirrored`: the logged poses mirrored left-right (y and heading negated: "what if it had gone the other way").
Printed and written: the judge's position error per second for `own` and `logged`, their paired difference over
the horizon (95 % bootstrap over clips), and, on the clips whose logged lateral position at the last future frame
is at least `--min-lateral` metres from 0, the share in which the judge reads `mirrored` on the mirrored side of
`logged` at that frame (a 95 % Wilson interval) with the mean lateral gap: whether a trajectory steers the future.
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
    from reworld.data.clips import poses_at
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.judge import check_judge_reads, judge_set_of, load_judge, position_errors, read_videos
    from reworld.evaluation.stats import paired_interval, wilson
    from reworld.pipelines import WorldActionPipeline
    from reworld.training.stages.video import motion_frame_times

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--judge", required=True)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-lateral", type=float, default=0.5,
                    help="[m] clips whose logged |y| at the last future frame is at least this count for the mirror")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.every < 1 or args.steps < 1:
        ap.error("--every and --steps must be ≥ 1")
    pipe = WorldActionPipeline.from_pretrained(args.checkpoint, device="cpu")
    if pipe.video_dit.motion_embed is None:
        ap.error(f"{args.checkpoint}: its Video DiT has no motion feedback (video.motion_feedback); nothing to hand it")
    judge = load_judge(args.judge)
    cfg = pipe.config
    ds = NuScenesClips(cfg.data, "val", geometry=False)
    check_judge_reads(judge, ds.cfg)
    indices = list(range(0, len(ds), args.every))
    data = judge_set_of(ds, indices)
    n_fut = int(pipe.video_dit.motion_mean.shape[0])
    times = motion_frame_times(cfg, n_fut)
    mirror = torch.tensor([1.0, -1.0, -1.0])
    videos = {"own": [], "logged": [], "mirrored": []}
    last_y = []
    for j, i in enumerate(indices):
        clip = ds[i]
        logged = poses_at(clip.target.trajectory[None].float(), cfg.data.horizon_s, times)[0]  # (F, 3)
        last_y.append(float(logged[-1, 1]))
        for name, poses in (("own", None), ("logged", logged), ("mirrored", logged * mirror)):
            gen = pipe.generate(clip, steps=args.steps, seed=args.seed + j, motion_poses=poses).frames
            videos[name].append(torch.cat([clip.observation.frames, gen]))
        print(f"clip {j + 1}/{len(indices)}", file=sys.stderr, flush=True)
    reads = {k: read_videos(judge, torch.stack(v), times=data.time) for k, v in videos.items()}
    pos = {k: position_errors(reads[k], data) for k in ("own", "logged")}  # (N, F) [m]
    per_second = [int(round(s * cfg.data.frame_rate)) - 1 for s in (1, 2, 3, 4)
                  if s * cfg.data.frame_rate <= pos["own"].shape[1]]
    diff = paired_interval(pos["logged"].mean(1) - pos["own"].mean(1), resamples=4000)
    last_y = np.asarray(last_y)
    far = np.abs(last_y) >= args.min_lateral
    gap = reads["mirrored"]["ego_pose"][:, -1, 1] - reads["logged"]["ego_pose"][:, -1, 1]  # + is left
    toward = (np.sign(gap) == -np.sign(last_y))[far]
    k, n = int(toward.sum()), int(far.sum())
    out = {"checkpoint": args.checkpoint, "judge": args.judge, "every": args.every, "steps": args.steps,
           "seed": args.seed, "clips": len(indices), "motion_guidance": pipe.config.train.motion_guidance,
           "position_m": {k: [float(pos[k][:, f].mean()) for f in per_second] for k in pos},
           "position_m_mean": {k: float(pos[k].mean()) for k in pos},
           "logged_minus_own_m": {"mean": diff.mean, "boot": [diff.boot_lo, diff.boot_hi]},
           "mirror": {"clips": n, "min_lateral_m": args.min_lateral, "rate": k / n if n else None,
                      "rate_wilson": list(wilson(k, n)) if n else None,
                      # the mirrored reading's lateral gap to the logged one, + toward the mirrored side
                      "lateral_gap_m": float(np.mean(gap[far] * -np.sign(last_y[far]))) if n else None}}
    print(f"position error @1/2/3/4 s [m]: own {np.round(out['position_m']['own'], 2).tolist()}, logged poses "
          f"{np.round(out['position_m']['logged'], 2).tolist()}; logged − own over the horizon {diff.mean:+.2f} m "
          f"[{diff.boot_lo:+.2f}, {diff.boot_hi:+.2f}]; mirrored poses read on the mirrored side in "
          f"{k} of {n} clips", file=sys.stderr)
    return emit_json(out, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
