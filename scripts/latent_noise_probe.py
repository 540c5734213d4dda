"""How the VAE decodes latents that are a little wrong: is a sample's texture the Video DiT's or the decoder's?

    python scripts/latent_noise_probe.py --checkpoint RUN [--clips 0 40] [--variances 0.03 0.1 0.3]
        [--sample-steps 20] [--seed 0] [--split val] [--out DIR]

For held-out clips, the true future latents z (normalised, as the Video DiT sees them) are decoded as they are (the
VAE's ceiling), with Gaussian errors of each listed per-element variance added (z + e, e ~ N(0, v): an error that
carries no structure), and the last context latent frame repeated (an error with all of the frame's structure).
With `--sample-steps N` the run's Video DiT also samples the future (N steps, the run's shift) and its latent error
is decomposed per frequency: the share of its energy above half the latent grid's Nyquist frequency, beside the
same share for the true future's own change from the last context frame. Each row gives the latent mean squared
error per future latent frame and the decoded PSNR [dB] against the true frames at every second of the future.
A decoder whose PSNR at a given latent error is far lower for unstructured errors than for the repeated frame turns
a sampler's unstructured errors into texture. `--out` writes a strip of decoded frames (1 s ahead) per clip.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def high_frequency_share(x: torch.Tensor) -> float:
    """Share of the energy of x (…, h, w) above half the Nyquist frequency in either spatial axis (|f| > 1/4
    cycles per latent pixel), by the 2-D discrete Fourier transform of each map."""
    spec = torch.fft.fft2(x.float()).abs() ** 2
    fy = torch.fft.fftfreq(x.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(x.shape[-1]).abs()[None, :]
    high = (fy > 0.25) | (fx > 0.25)
    total = float(spec.sum())
    return float(spec[..., high].sum()) / total if total > 0 else 0.0


@torch.no_grad()
def main(argv=None) -> int:
    from analysis.futures import future_columns
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.video import psnr
    from reworld.models.vae import decode_latents, encode_frames, latent_split
    from reworld.pipelines import WorldActionPipeline
    from reworld.sampling import sample_future

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--clips", type=int, nargs="+", default=[0, 40], help="indices into the split")
    ap.add_argument("--split", default="val", choices=["train", "val"])
    ap.add_argument("--variances", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    ap.add_argument("--sample-steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for the strips (PNG)")
    args = ap.parse_args(argv)
    if any(v < 0 for v in args.variances):
        ap.error("--variances must be ≥ 0")
    if args.sample_steps < 0:
        ap.error("--sample-steps must be ≥ 0")
    pipe = WorldActionPipeline.from_pretrained(args.checkpoint, device="cpu", require_planner=False)
    data = pipe.config.data
    ds = NuScenesClips(data, args.split, geometry=False)
    n_ctx, _ = latent_split(data, pipe.vae)
    seconds = [float(k) for k in range(1, int(data.future_frames / data.frame_rate) + 1)] or [
        data.future_frames / data.frame_rate]
    columns = future_columns(seconds, data.frame_rate, data.future_frames)
    gen = torch.Generator().manual_seed(args.seed)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for i in args.clips:
        clip = ds[i]
        lat = encode_frames(pipe.vae, torch.cat([clip.observation.frames, clip.target.frames])[None])
        fut, ctx = lat[:, :, n_ctx:], lat[:, :, :n_ctx]
        truth = clip.target.frames
        last = ctx[:, :, -1:].expand_as(fut)
        cond, _ = pipe._cond(clip, None)
        arms = {"truth": fut, "repeat_last": last}
        arms.update({f"noise_var_{v:g}": fut + v ** 0.5 * torch.randn(fut.shape, generator=gen)
                     for v in args.variances})
        if args.sample_steps:
            arms["sample"] = sample_future(pipe.video_dit, ctx, cond, fut.shape[2], args.sample_steps,
                                           generator=torch.Generator().manual_seed(args.seed + i),
                                           shift=pipe.config.loss.shift,
                                           shift_terminal=pipe.config.loss.shift_terminal).future
        strip = []
        for name, z in arms.items():
            frames = decode_latents(pipe.vae, torch.cat([ctx, z], 2))[0, -truth.shape[0]:]
            err = z - fut
            row = {"clip": i, "arm": name,
                   "latent_mse_per_frame": [round(float(e), 4) for e in (err ** 2).mean(dim=(0, 1, 3, 4))],
                   "seconds": seconds,
                   "psnr_db": [round(float(psnr(frames[k:k + 1], truth[k:k + 1]).mean()), 2) for k in columns]}
            if name != "truth":
                row["error_high_frequency_share"] = round(high_frequency_share(err), 3)
            if name == "repeat_last":
                row["true_change_high_frequency_share"] = round(high_frequency_share(fut - last), 3)
            print(json.dumps(row))
            strip.append(frames[columns[0]])
        if out:
            from PIL import Image

            img = torch.cat(strip, dim=2).clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(img).save(out / f"clip-{i}.png")
            print(json.dumps({"clip": i, "strip": str(out / f"clip-{i}.png"), "arms": list(arms)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
