"""Per-clip PDM sub-scores of the expert and constant velocity under NAVSIM's settings, with the code of the
checkout it runs from, and the clips two such files disagree on: how a scorer or loader change moves the score.

    python scripts/score_clips.py --out /tmp/after.npy [--dataroot data/synth] [--split val]
    (cd <worktree of the old commit> && python <this checkout>/scripts/score_clips.py --out /tmp/before.npy)
    python scripts/score_clips.py --compare /tmp/before.npy /tmp/after.npy

Run in the old code's worktree, the script imports that tree's `reworld` (the working directory goes first on the
path). Used for the agents' change of 2026-12-04 (README, "PDM score").
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

METRICS = ("pdms", "ep", "nc", "dac", "ttc", "c")
PLANNERS = ("expert", "constant velocity")


def score(dataroot: str, split: str, out: str) -> None:
    sys.path.insert(0, os.getcwd())
    from reworld.config import load_config, replace
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.evaluate import constant_velocity
    from reworld.paths import resolve_dataroot
    from reworld.planning.pdm import PDMScorerConfig, score_trajectories
    from reworld.planning.scene import PlanningScene

    cfg = load_config("configs/default.yaml")
    data = replace(cfg, data={"dataroot": resolve_dataroot(dataroot)}).data
    ds = NuScenesClips(data, split=split, frames=False)
    t0, rows, late = time.time(), [], 0
    for i in range(len(ds)):
        clip = ds[i]
        scene = PlanningScene.from_clip(clip)
        plans = np.stack([clip.target.trajectory.numpy(), constant_velocity(clip.observation.ego_status.numpy())])
        rows.append([[getattr(r, m) for m in METRICS] for r in score_trajectories(scene, plans, PDMScorerConfig())])
        late += sum(a.track[0, 0] > 0.05 for a in scene.agents)
    np.save(out, np.array(rows))
    print(f"{len(rows)} {split} clips in {time.time() - t0:.0f} s; agents entering after t = 0: {late}")


def compare(a_path: str, b_path: str) -> None:
    a, b = np.load(a_path), np.load(b_path)
    for p, planner in enumerate(PLANNERS):
        changed = np.nonzero(np.abs(a[:, p] - b[:, p]).max(1) > 1e-9)[0]
        means = " ".join(f"{m} {a[:, p, i].mean():.3f}→{b[:, p, i].mean():.3f}" for i, m in enumerate(METRICS))
        print(f"{planner}: {means}; clips changed: {len(changed)} of {len(a)} {changed.tolist()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    ap.add_argument("--dataroot", default="data/synth")
    ap.add_argument("--split", default="val")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
    elif args.out:
        score(args.dataroot, args.split, args.out)
    else:
        ap.error("give --out or --compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
