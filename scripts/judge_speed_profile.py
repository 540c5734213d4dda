"""Where a video judge's speed error comes from, on real clips (prints JSON).

    python scripts/judge_speed_profile.py --judge runs/judge [--dataroot data/synth-judgeval] [--split all]

The judge reads every clip of the split with the clips' capture times; its speed readings against the labels give:
the mean absolute error per future frame, the mean signed error (bias), the per-clip constant part of the error
(the mean over a clip's future frames, its mean absolute value) and what is left after removing it, the correlation
of the clip-mean reading with the clip-mean truth, and per scene the signed and absolute error with the true mean
speed. A reader that shrinks toward its training speeds reads slow scenes high and fast ones low.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reworld.config import load_config, replace  # noqa: E402
from reworld.evaluation.judge import load_judge, load_judge_set, read_videos  # noqa: E402
from reworld.paths import JUDGE_CONFIG, resolve_dataroot  # noqa: E402


def speed_profile(speed: np.ndarray, truth: np.ndarray, scenes: list[str]) -> dict:
    """speed, truth (N, F) [m/s] of N clips' future frames, `scenes` the clips' scene names → the figures above."""
    err = speed - truth
    clip = err.mean(1, keepdims=True)
    names = np.asarray(scenes)
    return {
        "abs_error_per_frame": np.abs(err).mean(0).round(3).tolist(),
        "abs_error": float(np.abs(err).mean()),
        "bias": float(err.mean()),
        "clip_offset_abs": float(np.abs(clip).mean()),
        "after_clip_offset_abs": float(np.abs(err - clip).mean()),
        "clip_mean_correlation": float(np.corrcoef(speed.mean(1), truth.mean(1))[0, 1]),
        "scenes": {s: {"bias": float(err[names == s].mean()), "abs_error": float(np.abs(err[names == s]).mean()),
                       "true_speed": float(truth[names == s].mean())} for s in sorted(set(scenes))},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--judge", required=True)
    p.add_argument("--dataroot", default="data/synth-judgeval")
    p.add_argument("--split", default="all")
    args = p.parse_args(argv)
    data = replace(load_config(JUDGE_CONFIG), data={"dataroot": resolve_dataroot(args.dataroot)}).data
    clips = load_judge_set(data, args.split)
    readings = read_videos(load_judge(args.judge), clips.video(slice(None)), times=clips.time)
    k0 = clips.n_context - 1
    print(json.dumps(speed_profile(readings["speed"], clips.speed[:, k0 + 1:], clips.scenes), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
