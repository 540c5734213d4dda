"""The video judge's floor per world, split and scene: its position error on the true futures at 1 / 2 / 3 / 4 s
beside the constant-velocity guess's, and per scene the error at 4 s with what makes a scene hard (speed at t = 0,
heading change over the future, the speed reading's error). docs/world4s.md, D3.

    PYTHONPATH=. python scripts/judge_floor.py [--judge DIR] [--world data/synth:val data/synth-judgeval:all …]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from reworld.config import load_config, replace
from reworld.evaluation.judge import (constant_velocity_readings, load_judge, load_judge_set, read_videos,
                                      reading_errors)

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default=str(REPO / "assets" / "checkpoints" / "judge"))
    ap.add_argument("--config", default=str(REPO / "configs" / "world4s.yaml"))
    ap.add_argument("--world", nargs="+", default=["data/synth:val", "data/synth:train", "data/synth-judgeval:all"],
                    help="DATAROOT:SPLIT pairs")
    args = ap.parse_args(argv)
    judge = load_judge(args.judge)
    for spec in args.world:
        root, _, split = spec.partition(":")
        cfg = replace(load_config(args.config), data={"dataroot": root}).data
        data = load_judge_set(cfg, split or "val")
        per_s = int(round(cfg.frame_rate))
        marks = [per_s * s - 1 for s in range(1, cfg.future_frames // per_s + 1)]
        readings = read_videos(judge, data.video(slice(None)), 16, data.time)
        err = reading_errors(readings, data)
        guess = reading_errors(constant_velocity_readings(data), data)
        print(f"{root} {split}: {len(data)} clips, {len(set(data.scenes))} scenes; position [m] at 1..4 s "
              + " / ".join(f"{err['position_m'][m]:.2f}" for m in marks) + "; guess "
              + " / ".join(f"{guess['position_m'][m]:.2f}" for m in marks))
        k0 = data.n_context - 1
        for scene in sorted(set(data.scenes)):
            idx = np.array([i for i, s in enumerate(data.scenes) if s == scene])
            e = reading_errors({k: v[idx] for k, v in readings.items()}, data.subset(idx))
            yaw = np.degrees(np.abs(data.ego_pose[idx, -1, 2])).mean()
            print(f"  {scene}: {len(idx)} clips, position at the last frame {e['position_m'][-1]:.2f} m, "
                  f"speed at t=0 {data.speed[idx, k0].mean():.1f} m/s, heading change {yaw:.1f} deg, "
                  f"speed error {np.mean(e['speed_mps']):.2f} m/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
