"""The VAE's 3-D convolutions on the CPU: PyTorch's own choice of kernel (`nn.Conv3d`) against oneDNN
(`reworld.models.vae.OneDNNConv3d`, what the pipeline uses), on the shipped world's VAE, one clip encoded and
decoded as the app does; timed interleaved (A B B A) in one process, so the ratio is load-robust. Prints JSON with
the medians, the ratios and the largest difference of the decoded frames ([-1, 1] scale).

    .venv/bin/python -m benchmarks.bench_conv3d [--vae assets/checkpoints/reworld] [--repeats 9] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from benchmarks.timing import paired_times, ratio
from reworld.models.vae import OneDNNConv3d, decode_latents, encode_frames, load_pretrained_vae, use_onednn_conv3d
from reworld.pipelines.run_folder import read_run_config, vae_folder

ROOT = Path(__file__).resolve().parents[1]


def _plain(vae) -> None:
    for m in vae.modules():
        if type(m) is OneDNNConv3d:
            m.__class__ = torch.nn.Conv3d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", default=str(ROOT / "assets" / "checkpoints" / "reworld"), help="a run folder")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.vae)
    cfg = read_run_config(run)
    vae = load_pretrained_vae(vae_folder(run, cfg)).eval()
    d = cfg.data
    torch.manual_seed(0)
    clip = torch.rand(1, d.context_frames + d.future_frames, 3, d.image_height, d.image_width) * 2 - 1
    with torch.no_grad():
        latents = encode_frames(vae, clip)
        n_conv = sum(type(m) is torch.nn.Conv3d for m in vae.modules())

        def job(onednn: bool, what: str):
            def run_it():
                (use_onednn_conv3d if onednn else _plain)(vae)
                return decode_latents(vae, latents) if what == "decode" else encode_frames(vae, clip)
            return run_it

        out = {"vae": str(run), "conv3d_layers": n_conv, "clip": list(clip.shape), "threads": torch.get_num_threads()}
        for what in ("decode", "encode"):
            job(False, what)(), job(True, what)()  # warm-up
            plain, onednn = paired_times(job(False, what), job(True, what), args.repeats)
            out[what] = {"pytorch_ms": round(1e3 * statistics.median(plain), 1),
                         "onednn_ms": round(1e3 * statistics.median(onednn), 1),
                         "onednn_over_pytorch": ratio(onednn, plain)}
        a, b = job(False, "decode")(), job(True, "decode")()
        out["decode_max_abs_diff"] = float((a - b).abs().max())
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
