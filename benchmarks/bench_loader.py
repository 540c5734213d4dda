"""Does the nuScenes loader keep a training step fed? Clips/s of `NuScenesClips` against the default stage-1
step, timed in one run; prints JSON.

    python -m benchmarks.bench_loader [--config configs/default.yaml] [--dataroot data/synth] [--repeats 6]

A batch is `train.batch_size` clips read through the devkit (JPEG decode and resize of every context and
future frame, ego poses, command); "with geometry" adds what the planner and the PDM scorer need (map patch,
agent boxes, route centreline). `load_over_step` below 1 means one loader process reads a batch faster than
the default Video DiT trains on it: the budget of `prepare` and of the VAE stage, which decode clips as they go.
"Prepared" is what stages video, action and joint read instead: one latent file per clip
(`reworld.training.prepare.LatentStore`), a batch read against the same step (`prepared_read_over_step`).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from benchmarks.bench_video import stage1_inputs  # noqa: E402
from benchmarks.timing import paired_times, ratio  # noqa: E402
from reworld.config import Config, load_config, replace  # noqa: E402
from reworld.data.loader import NuScenesClips  # noqa: E402
from reworld.losses.flow import video_training_losses  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--dataroot", help="nuScenes-format root (default: the config's, else a 2-scene world)")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    cfg = load_config(args.config) if Path(args.config).is_file() else Config()
    tmp = None
    root = Path(args.dataroot or ROOT / cfg.data.dataroot)
    if not (root / cfg.data.version).is_dir():
        from reworld.data.synth import generate_world

        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
        generate_world(root, num_scenes=2, seed=0, version=cfg.data.version)
    data = replace(cfg, data={"dataroot": str(root)}).data

    t0 = time.perf_counter()
    plain = NuScenesClips(data, split="train", geometry=False)
    open_s = time.perf_counter() - t0
    full = NuScenesClips(data, split="train", geometry=True)
    batch = cfg.train.batch_size
    cursor = [0]

    def load(ds):
        for _ in range(batch):
            ds[cursor[0] % len(ds)]
            cursor[0] += 1

    model, latents, cond, n_ctx, _, g = stage1_inputs(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)

    def step():
        losses = video_training_losses(model, latents, n_ctx, cond, cfg.loss, g)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()

    # per-clip latent files of the step's shape, as `prepare` writes them, read a batch at a time
    from reworld.training.prepare import LatentStore, write_clip_file

    files = tempfile.TemporaryDirectory()
    tokens = [f"clip{i:04d}" for i in range(64)]
    for t in tokens:
        write_clip_file(Path(files.name), t, {"latents": torch.randn(latents.shape[1:])})
    store = LatentStore(Path(files.name), tokens, "cpu")
    rng = torch.Generator().manual_seed(0)

    def read():
        store[torch.randint(len(tokens), (batch,), generator=rng).numpy()]

    step(), load(plain), load(full), read()  # warm-up (AdamW state, devkit caches)
    loads, steps = paired_times(lambda: load(plain), step, args.repeats)
    loads_geo, steps_geo = paired_times(lambda: load(full), step, args.repeats)
    reads, steps_read = paired_times(read, step, args.repeats)
    print(json.dumps({
        "dataroot": str(root), "train_clips": len(plain), "batch": batch, "threads": torch.get_num_threads(),
        "open_dataset_s": round(open_s, 2),
        "clips_per_s": round(batch / statistics.median(loads), 1),
        "clips_per_s_with_geometry": round(batch / statistics.median(loads_geo), 1),
        "step_s": round(statistics.median(steps + steps_geo), 4),
        "clips_per_s_a_step_consumes": round(batch / statistics.median(steps + steps_geo), 1),
        "load_over_step": ratio(loads, steps),
        "load_with_geometry_over_step": ratio(loads_geo, steps_geo),
        "prepared_batches_per_s": round(1 / statistics.median(reads), 1),
        "prepared_read_over_step": ratio(reads, steps_read),
    }))
    files.cleanup()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
