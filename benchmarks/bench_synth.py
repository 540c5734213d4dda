"""Time one 20 s synthetic scene (241 camera frames at 128x256) on one thread; prints JSON.

    python benchmarks/bench_synth.py [--scene-index 0] [--seed 0]

Phases: layout + traffic simulation, then rendering + JPEG writing of every 12 Hz frame (the budget in
docs/design.md §5 is <= 5 s for the latter), then the whole `generate_world` call for that one scene.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from reworld.data.synth import SynthParams, generate_world, plan_scenes  # noqa: E402
from reworld.data.synth.render import SceneRenderer, make_camera, random_lighting  # noqa: E402
from reworld.data.synth.traffic import simulate_scene  # noqa: E402
from reworld.data.synth.world import build_layout  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene-index", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = SynthParams()
    kind, command = plan_scenes(args.scene_index + 1)[args.scene_index]
    n_frames = int(round(p.scene_seconds * p.sweep_hz / p.keyframe_every)) * p.keyframe_every + 1
    rng = np.random.default_rng([args.seed, args.scene_index])
    t0 = time.perf_counter()
    layout = build_layout(rng, kind, command, p)
    tracks = simulate_scene(rng, layout, p, n_frames)
    t1 = time.perf_counter()
    renderer = SceneRenderer(layout, tracks, make_camera(p, (128, 256)), random_lighting(rng), p, rng)
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(n_frames):
            renderer.render(k).save(Path(tmp) / f"{k:04d}.jpg", quality=p.jpeg_quality)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        generate_world(tmp, num_scenes=1, seed=args.seed)
    t3 = time.perf_counter()
    print(json.dumps({
        "layout": kind, "command": command, "frames": n_frames, "image_size": [128, 256], "agents": len(tracks) - 1,
        "layout_and_traffic_s": round(t1 - t0, 3), "render_and_write_s": round(t2 - t1, 3),
        "ms_per_frame": round(1000 * (t2 - t1) / n_frames, 2), "generate_world_one_scene_s": round(t3 - t2, 3),
        "threads": os.environ["OMP_NUM_THREADS"]}))


if __name__ == "__main__":
    main()
