"""Camera frames of real nuScenes size (1600×900 JPEG) into clip frames: full decode + resize against reduced
(DCT-scaled) decode + resize, per image and per default clip (9 frames); prints JSON.

    python -m benchmarks.bench_decode [--repeats 15] [--height 64 --width 128]

The JPEG is written here (smooth gradients and mild noise, quality 90: 1600×900 in about 240 KB, the size of
a nuScenes CAM_FRONT frame; noisier, larger files cost more entropy decoding, which no DCT scaling saves);
nothing is downloaded. `max_abs_diff` is the largest pixel difference of the two paths [0, 255].
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reworld.data.loader import load_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--frames", type=int, default=9, help="frames per clip (default config: 5 + 4)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:900, 0:1600]
    img = np.stack([x / 1600 * 255, y / 900 * 255, (x + y) % 256], -1) + rng.normal(0, 4, (900, 1600, 3))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cam_front.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        out = {"jpeg_kb": path.stat().st_size // 1024}
        frames = {}
        for name, reduced in (("full", False), ("reduced", True)):
            frames[name] = load_image(path, args.height, args.width, reduced_decode=reduced)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                load_image(path, args.height, args.width, reduced_decode=reduced)
                times.append(time.perf_counter() - t0)
            out[f"{name}_ms_per_image"] = round(statistics.median(times) * 1000, 2)
            out[f"{name}_clips_per_s"] = round(1 / (statistics.median(times) * args.frames), 1)
        out["speedup"] = round(out["full_ms_per_image"] / out["reduced_ms_per_image"], 2)
        out["max_abs_diff"] = round(float((frames["full"] - frames["reduced"]).abs().max() * 127.5), 1)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
