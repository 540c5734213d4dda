"""How much of the ego's motion the ground view alone reads, with no learning (prints JSON).

    python scripts/ground_odometry_probe.py [--dataroot data/synth-judgeval] [--every 6]

The video judge's ground view (`WorldJudge.ground_motion`: the frames' road patch seen from above through the
camera's calibration, compared between consecutive frames over displacements up to the configured shift) is fixed
arithmetic. Here its peak is read by hand: for each pair of consecutive frames of every `--every`-th clip, the
displacement of the highest correlation (refined to a fraction of a cell by a parabola along x) over the frames'
interval is a speed; per future frame, the mean of the steps into and out of it, as the labels' speed is a central
difference. Reported against the labels: the mean and median absolute error, beside holding the true speed at
t = 0 (the judge's validation guess), and the share of steps whose peak sits at no forward motion (nothing on the
patch that moves visibly along the road, such as a lane mark's end, and the ground view cannot say how far).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reworld.config import load_config, replace  # noqa: E402
from reworld.data.loader import NuScenesClips  # noqa: E402
from reworld.evaluation.judge import WorldJudge, judge_set_of  # noqa: E402
from reworld.paths import JUDGE_CONFIG, resolve_dataroot  # noqa: E402


def peak_steps(corr: torch.Tensor, cell: float) -> np.ndarray:
    """corr (N, 2 sx + 1, 2 sy + 1) → (N, 2) [m] the displacement of each peak, x refined by a parabola."""
    n, nx, ny = corr.shape
    flat = corr.flatten(1).argmax(1)
    ix, iy = (flat // ny).numpy(), (flat % ny).numpy()
    c = corr.numpy()
    off = np.zeros(n)
    inner = (ix > 0) & (ix < nx - 1)
    rows = np.flatnonzero(inner)
    left, mid, right = c[rows, ix[rows] - 1, iy[rows]], c[rows, ix[rows], iy[rows]], c[rows, ix[rows] + 1, iy[rows]]
    denom = left - 2 * mid + right
    off[rows] = np.where(np.abs(denom) > 1e-9, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    return np.stack([(ix + off - (nx - 1) // 2) * cell, (iy - (ny - 1) // 2) * cell], 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", default="data/synth-judgeval")
    p.add_argument("--split", default="all")
    p.add_argument("--every", type=int, default=6, help="every this many clips")
    args = p.parse_args(argv)
    data = replace(load_config(JUDGE_CONFIG), data={"dataroot": resolve_dataroot(args.dataroot)}).data
    ds = NuScenesClips(data, split=args.split, geometry=False)
    clips = judge_set_of(ds, range(0, len(ds), args.every))
    judge = WorldJudge(context_frames=data.context_frames, future_frames=data.future_frames,
                       frame_rate=data.frame_rate, frame_size=tuple(clips.frames.shape[-2:]),
                       ground_camera=clips.camera)
    cell = judge.config.ground_area[4]
    k0 = clips.n_context - 1
    errors, guess, still = [], [], []
    for i in range(len(clips)):
        corr = judge.ground_motion(clips.video([i]))[0]  # (T − 1, …)
        steps = peak_steps(corr, cell)
        rate = np.linalg.norm(steps, axis=1) / np.diff(clips.time[i])
        speed = np.concatenate([0.5 * (rate[:-1] + rate[1:]), rate[-1:]])[k0:]  # frames k0 + 1 … T − 1
        truth = clips.speed[i, k0 + 1:]
        errors.append(np.abs(speed - truth))
        guess.append(np.abs(clips.speed[i, k0] - truth))
        still.append(np.abs(steps[:, 0]) < cell / 2)
    errors, guess = np.concatenate(errors), np.concatenate(guess)
    print(json.dumps({"clips": len(clips), "speed_abs_error_mean": float(errors.mean()),
                      "speed_abs_error_median": float(np.median(errors)),
                      "guess_abs_error_mean": float(guess.mean()),
                      "steps_without_forward_peak": float(np.concatenate(still).mean())}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
