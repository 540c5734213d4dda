"""Does a Video DiT use the driving command? The denoising error with the logged command against another command.

    python scripts/command_use.py --checkpoint RUN [--split val --every 3] [--sigmas 0.3 0.6 0.9 1.0] [--seed 0]
        [--out numbers.json]

For each clip (every K-th of the split): its true future latents noised to σ (the context clean, as in training),
one forward per command with the same x_t; the mean squared error of the model's x0 = x_t − σ v against the truth.
A model that reads the command predicts worse when given a wrong one: per clip, the error with each other command
minus the error with the logged one (> 0: the logged command helps). Reported by the clip's logged command (turning
clips are where it should matter most), per σ and averaged over σ, with 95 % bootstrap intervals over clips; and,
as a scale, the same difference when the clip's ego status (speed, acceleration, yaw rate) is replaced by the next
listed clip's. Latent MSE is in the VAE's units: compare rows of one checkpoint, not across VAEs.
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
    from reworld.evaluation.stats import paired_interval
    from reworld.models.vae import encode_frames, latent_split
    from reworld.models.video_dit import VideoCond
    from reworld.pipelines import WorldActionPipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--split", default="val", choices=["train", "val"])
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 0.6, 0.9, 1.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    if args.every < 1:
        ap.error("--every must be ≥ 1")
    pipe = WorldActionPipeline.from_pretrained(args.checkpoint, device="cpu", require_planner=False)
    ds = NuScenesClips(pipe.config.data, args.split, geometry=False)
    n_ctx, _ = latent_split(pipe.config.data, pipe.vae)
    indices = list(range(0, len(ds), args.every))
    gen = torch.Generator().manual_seed(args.seed)
    logged, wrong, other_ego = [], [], []  # per clip: (S,) errors; (S, 2) with the two other commands; (S,)
    egos = [ds[i].observation.ego_status for i in indices]
    for j, i in enumerate(indices):
        clip = ds[i]
        lat = encode_frames(pipe.vae, torch.cat([clip.observation.frames, clip.target.frames])[None])
        fut = lat[:, :, n_ctx:]
        cmd = int(clip.observation.command)
        others = [c for c in range(len(COMMANDS)) if c != cmd]
        ego = clip.observation.ego_status[None]
        rows = {"logged": [], "wrong": [], "ego": []}
        for s in args.sigmas:
            x_t = (1 - s) * fut + s * torch.randn(fut.shape, generator=gen)

            def err(command: int, ego_status) -> float:
                cond = VideoCond(command=torch.tensor([command]), ego_status=ego_status)
                v = pipe.video_dit(torch.cat([lat[:, :, :n_ctx], x_t], 2), torch.tensor([s]), cond, n_ctx).sample
                return float(((x_t - s * v[:, :, n_ctx:] - fut) ** 2).mean())

            rows["logged"].append(err(cmd, ego))
            rows["wrong"].append([err(c, ego) for c in others])
            rows["ego"].append(err(cmd, egos[(j + 1) % len(egos)][None]))
        logged.append(rows["logged"])
        wrong.append(rows["wrong"])
        other_ego.append(rows["ego"])
        print(f"clip {i} ({COMMANDS[cmd]}): logged {np.mean(rows['logged']):.4f}, wrong command "
              f"{np.mean(rows['wrong']):.4f}, other ego status {np.mean(rows['ego']):.4f}", file=sys.stderr, flush=True)
    logged, wrong, other_ego = np.array(logged), np.array(wrong), np.array(other_ego)
    cmds = np.array([int(ds[i].observation.command) for i in indices])
    out = {"checkpoint": args.checkpoint, "split": args.split, "every": args.every, "clips": len(indices),
           "sigmas": args.sigmas, "seed": args.seed, "groups": {}}

    def interval(x):
        iv = paired_interval(x, resamples=4000)
        return {"mean": iv.mean, "boot": [iv.boot_lo, iv.boot_hi]}

    groups = {"all": np.ones(len(indices), bool), "turning (left/right)": cmds != COMMANDS.index("straight"),
              "straight": cmds == COMMANDS.index("straight")}
    for name, m in groups.items():
        if m.sum() < 2:
            continue
        d_cmd = (wrong[m].mean(2) - logged[m])  # (N, S)
        d_ego = other_ego[m] - logged[m]
        out["groups"][name] = {
            "clips": int(m.sum()), "logged_mse": float(logged[m].mean()),
            "wrong_command_minus_logged": interval(d_cmd.mean(1)),
            "wrong_command_minus_logged_relative": float(d_cmd.mean() / logged[m].mean()),
            "wrong_command_minus_logged_per_sigma": [interval(d_cmd[:, k]) for k in range(len(args.sigmas))],
            "other_ego_minus_logged": interval(d_ego.mean(1)),
            "other_ego_minus_logged_relative": float(d_ego.mean() / logged[m].mean())}
    return emit_json(out, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
