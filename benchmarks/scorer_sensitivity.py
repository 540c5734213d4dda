"""How much the PDM score moves with the settings where our scorer cannot follow NAVSIM exactly.

`python -m benchmarks.scorer_sensitivity [--dataroot data/synth] [--split val]` scores the expert's and constant
velocity's trajectories on every clip of the split (no model needed) under NAVSIM's definition with:

- `default`: the shipped settings (15 m/s fallback speed limit, lanes and intersections from the map);
- `limit 13.4`: PDM-Closed's speed limit at 30 mph (a common urban limit) instead of the 15 m/s fallback
  (NAVSIM reads the lane's limit; nuScenes maps carry none);
- `no lanes`: without the map's lanes and intersections (the at-fault and TTC clauses never fire);
- `box +1.385 m`: the ego box placed 1.385 m ahead of the pose (nuScenes' rear-axle convention applied to a world
  whose poses are box centres: what a wrong convention costs);
- `spline`: this project's first scorer, for comparison.

Prints a markdown table (mean PDMS, EP, NC, TTC, C per planner) and writes it as JSON with `--json`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np


def main(argv=None) -> int:
    from reworld.config import load_config, replace
    from reworld.data.loader import NuScenesClips
    from reworld.paths import resolve_dataroot
    from reworld.evaluation.evaluate import constant_velocity
    from reworld.planning.pdm import PDMScorerConfig, score_trajectories
    from reworld.planning.scene import PlanningScene

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--dataroot", default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    data = replace(cfg, data={"dataroot": resolve_dataroot(args.dataroot or cfg.data.dataroot)}).data
    ds = NuScenesClips(data, split=args.split, frames=False)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    t0 = time.time()
    scenes, plans = [], {"expert": [], "constant velocity": []}
    for i in range(n):
        clip = ds[i]
        scenes.append(PlanningScene.from_clip(clip))
        plans["expert"].append(clip.target.trajectory.numpy())
        plans["constant velocity"].append(constant_velocity(clip.observation.ego_status.numpy()))
    navsim = PDMScorerConfig()
    arms = {
        "default": (navsim, lambda s: s),
        "limit 13.4": (dataclasses.replace(navsim, speed_limit_mps=13.4), lambda s: s),
        "no lanes": (navsim, lambda s: dataclasses.replace(s, lanes=[], intersections=[])),
        "box +1.385 m": (navsim, lambda s: dataclasses.replace(s, ego_center_offset=1.385)),
        "spline": (PDMScorerConfig(simulation="spline"), lambda s: s),
    }
    rows = []
    for arm, (config, change) in arms.items():
        for planner, trajs in plans.items():
            res = [score_trajectories(change(s), p[None], config)[0] for s, p in zip(scenes, trajs)]
            row = {"settings": arm, "planner": planner, "clips": n}
            row.update({k: round(float(np.mean([getattr(r, k) for r in res])), 4)
                        for k in ("pdms", "ep", "nc", "dac", "ttc", "c")})
            rows.append(row)
    print(f"{n} {args.split} clips of {data.dataroot}, {time.time() - t0:.0f} s\n")
    print("| settings | planner | PDMS | EP | NC | DAC | TTC | C |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['settings']} | {r['planner']} | {r['pdms']:.3f} | {r['ep']:.3f} | {r['nc']:.3f} | "
              f"{r['dac']:.3f} | {r['ttc']:.3f} | {r['c']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
