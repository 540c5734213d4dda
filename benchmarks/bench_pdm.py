"""PDM scorer throughput on this machine, printed as JSON (medians; absolute rates vary with load).

A straight two-lane road with `--agents` vehicles (moving and parked in
the next lane, moving ahead in the ego's) and trajectories
made from the expert by a random speed scale and a sideways drift:

- single: `score_trajectory` one at a time (reference progress computed once and passed, as a training
  loop would), and one at a time with the reference (PDM-Closed) recomputed per call (the default call);
- batched: `score_trajectories` on `--batch` trajectories at once (the default scorer: NAVSIM's, tracked);
- batched, the spline scorer (`PDMScorerConfig(simulation="spline")`), for comparison;
- hard negatives: `generate_hard_negatives` calls per second (k = 8), under each scorer.

With `--world DIR` (a synthetic or nuScenes-format world: lanes, junctions, traffic), instead: seconds per clip of
what `reworld prepare` and every scoring call do per clip, on `--clips` clips spread over the world (each scene
made afresh from its clip, as there): its hard negatives (k = 8) and its PDM-Closed reference (the 15 proposals
tracked and scored); medians over `--repeats`. `--compare-repo DIR2` times the same in a checkout of other code
(e.g. `git worktree add /tmp/before <commit>`), the two in turn in fresh processes (B A A B), with the ratio.

    .venv/bin/python -m benchmarks.bench_pdm [--batch 1024] [--agents 10] [--repeats 5]   # from the repo root
    .venv/bin/python -m benchmarks.bench_pdm --world data/synth [--clips 20] [--compare-repo /tmp/before]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reworld.data.types import AgentTrack
from reworld.planning.hard_negatives import HardNegativeConfig, generate_hard_negatives
from reworld.planning.pdm import PDMScorerConfig, reference_progress, score_trajectories, score_trajectory
from reworld.planning.scene import PlanningScene


def bench_scene(num_agents: int, seed: int = 0) -> PlanningScene:
    rng = np.random.default_rng(seed)
    t = np.arange(1, 9) * 0.5
    agents = []
    for i in range(num_agents):
        lane = rng.choice([0.0, 3.5])
        x0, v = rng.uniform(-20, 80), rng.choice([0.0, rng.uniform(4, 12)])
        if lane == 0.0:  # the ego's lane: traffic ahead, at least as fast as the expert
            x0, v = rng.uniform(12, 80), rng.uniform(8, 12)
        agents.append(AgentTrack(f"a{i}", "vehicle", 4.5, 1.9,
                                 np.array([[0.0, x0, lane, 0.0], [5.0, x0 + 5 * v, lane, 0.0]])))
    return PlanningScene(
        ego_speed=8.0, ego_acceleration=0.0, ego_yaw_rate=0.0, ego_length=4.5, ego_width=1.9, command="straight",
        drivable_area=[np.array([[-50.0, -1.75], [200.0, -1.75], [200.0, 5.25], [-50.0, 5.25]])],
        centerline=np.stack([np.linspace(-50, 200, 40), np.zeros(40)], -1),
        agents=agents, expert=np.stack([8 * t, 0 * t, 0 * t], -1),
    )


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def world_times(world: str, clips: int, repeats: int) -> dict:
    """Seconds per clip, on `clips` clips spread over the world: hard negatives (k = 8) and the PDM-Closed
    reference, each scene made afresh from its clip; medians over `repeats`."""
    from reworld.config import DataConfig
    from reworld.data.loader import NuScenesClips

    ds = NuScenesClips(DataConfig(dataroot=str(world), image_height=32, image_width=64), split="all", frames=False)
    picked = [ds[int(i)] for i in np.linspace(0, len(ds) - 1, clips).round()]

    def negatives():
        for i, clip in enumerate(picked):
            generate_hard_negatives(PlanningScene.from_clip(clip), clip.target.trajectory.numpy(), k=8, seed=i)

    def references():
        for clip in picked:
            reference_progress(PlanningScene.from_clip(clip))

    negatives()  # warm-up
    return {"clips": len(picked), "hard_negatives_s_per_clip": _median_time(negatives, repeats) / len(picked),
            "reference_s_per_clip": _median_time(references, repeats) / len(picked)}


def compare_world(world: str, clips: int, repeats: int, other: Path) -> dict:
    """This code's and `other`'s `world_times`, each in fresh processes, in turn (B A A B)."""
    here = Path(__file__).resolve().parent.parent

    def run(repo: Path) -> dict:
        env = {**os.environ, "PYTHONPATH": str(repo)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--world", str(Path(world).resolve()), "--clips",
               str(clips), "--repeats", str(repeats)]
        done = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)["world"]

    rows = {"this": [], "other": []}
    for who in ("other", "this", "this", "other"):
        rows[who].append(run(here if who == "this" else other))
    out = {"compared_repo": str(other), "sessions": "B A A B, each a fresh process"}
    for key in ("hard_negatives_s_per_clip", "reference_s_per_clip"):
        a, b = (statistics.median(r[key] for r in rows[w]) for w in ("this", "other"))
        out[key] = {"this": round(a, 4), "other": round(b, 4), "this_over_other": round(a / b, 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--single", type=int, default=100, help="trajectories scored one at a time")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--world", help="time per clip on this world's clips instead (see above)")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--compare-repo", type=Path, help="with --world: also time this checkout's code")
    args = parser.parse_args()
    if args.world:
        if args.compare_repo:
            print(json.dumps({"world": str(args.world), **compare_world(args.world, args.clips, args.repeats,
                                                                        args.compare_repo.resolve())}, indent=2))
        else:
            print(json.dumps({"world": world_times(args.world, args.clips, args.repeats)}, indent=2))
        return

    scene = bench_scene(args.agents)
    rng = np.random.default_rng(0)
    t = np.arange(1, 9) * 0.5
    scale = rng.uniform(0.6, 1.6, (args.batch, 1))  # speed scale
    lateral = rng.normal(0.0, 1.0, (args.batch, 1)) * (t / 4) ** 2  # drifting sideways
    batch = np.stack([scene.expert[None, :, 0] * scale, lateral, np.arctan2(np.gradient(lateral, t, axis=1),
                                                                              8.0 * scale)], -1)
    ref = reference_progress(scene)
    score_trajectories(scene, batch[:8], reference=ref)  # warm-up (shapely prepare, caches)

    single = batch[: args.single]
    t_single = _median_time(lambda: [score_trajectory(scene, p, reference=ref) for p in single], args.repeats)
    t_default = _median_time(lambda: [score_trajectory(scene, p) for p in single[:20]], args.repeats)
    t_batch = _median_time(lambda: score_trajectories(scene, batch, reference=ref), args.repeats)
    spline = PDMScorerConfig(simulation="spline")
    t_spline = _median_time(lambda: score_trajectories(scene, batch, spline, reference=ref), args.repeats)
    t_hn = _median_time(lambda: generate_hard_negatives(scene, scene.expert, k=8, seed=0), args.repeats)
    t_hn_spline = _median_time(lambda: generate_hard_negatives(scene, scene.expert, k=8, seed=0,
                                                               config=HardNegativeConfig(scorer=spline)), args.repeats)
    results = score_trajectories(scene, batch, reference=ref)
    print(json.dumps({
        "agents": len(scene.agents),
        "batch": args.batch,
        "single_traj_per_s": round(len(single) / t_single, 1),
        "single_with_reference_traj_per_s": round(20 / t_default, 1),
        "batched_traj_per_s": round(args.batch / t_batch, 1),
        "batched_speedup": round((args.batch / t_batch) / (len(single) / t_single), 1),
        "batched_spline_traj_per_s": round(args.batch / t_spline, 1),
        "hard_negative_scenes_per_s": round(1 / t_hn, 2),
        "hard_negative_spline_scenes_per_s": round(1 / t_hn_spline, 2),
        "batch_failure_rates": {
            "nc": float(np.mean([r.nc < 1 for r in results])),
            "dac": float(np.mean([r.dac == 0 for r in results])),
            "ttc": float(np.mean([r.ttc == 0 for r in results])),
            "c": float(np.mean([r.c == 0 for r in results])),
        },
    }, indent=2))


if __name__ == "__main__":
    main()
