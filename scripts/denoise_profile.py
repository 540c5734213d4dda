"""How well a Video DiT predicts the clean future at each noise level, against what needs no model.

    python scripts/denoise_profile.py --checkpoint RUN [--clips 0 40] [--sigmas 0.05 0.2 0.5 0.9 1.0] [--seed 0]
        [--split val] [--pixels [--horizons 1 2 3 4]] [--sample-steps 20]

For held-out clips: the true future latents, noised to σ with the context clean (as in training), one forward; the
mean squared error of the model's x0 = x_t − σ v against the truth, beside the error of x_t itself (no model), of
repeating the last context latent frame, and the future latents' variance (≈ the error of predicting their mean); and
the model's x0 when it is given the next listed clip's context instead of its own (a model that reads its context
does worse with another's; one that only denoises x_t does not notice).
At σ = 1 a model that learned anything beats the variance; the sampler's first step is made there.
Latent errors of models on different VAEs are in different units: `--pixels` also decodes each x0 (with the clip's
own context latents) and reports its PSNR against the true frames at each `--horizons` [s] (default: every whole
second of the future, or its last frame when it is shorter), beside
repeating the last context frame and the VAE's own reconstruction (the ceiling), all in pixels.
Every row also gives the errors per future latent frame (`…_per_frame`, nearest first): a model that has not learned
to carry its context forward loses to repeating the last frame on the first future frames, where that copy is close.
`--sample-steps N` adds a row per clip with the per-frame error of one N-step sample of the plain sampler (w = 1, the
run's time shift) from the clip's context. `--split train` profiles training clips (is a failure generalisation?).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


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
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.2, 0.5, 0.9, 1.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pixels", action="store_true", help="also decode x0 and score it in pixels (PSNR per horizon)")
    ap.add_argument("--horizons", type=float, nargs="+", default=None, help="[s] after t = 0, for --pixels")
    ap.add_argument("--sample-steps", type=int, default=0, help="also sample each clip's future with this many steps")
    args = ap.parse_args(argv)
    pipe = WorldActionPipeline.from_pretrained(args.checkpoint, device="cpu", require_planner=False)
    ds = NuScenesClips(pipe.config.data, args.split, geometry=False)
    n_ctx, _ = latent_split(pipe.config.data, pipe.vae)
    gen = torch.Generator().manual_seed(args.seed)
    if args.sample_steps < 0:
        ap.error("--sample-steps must be ≥ 0")
    if len(args.clips) < 2:
        ap.error("--clips needs at least two clips (each is also read with the next one's context)")
    data = pipe.config.data
    whole = [float(k) for k in range(1, int(data.future_frames / data.frame_rate) + 1)]
    horizons = args.horizons or whole or [data.future_frames / data.frame_rate]
    try:
        columns = future_columns(horizons, data.frame_rate, data.future_frames)
    except ValueError as e:
        ap.error(str(e))
    clips = [ds[i] for i in args.clips]
    latents = [encode_frames(pipe.vae, torch.cat([c.observation.frames, c.target.frames])[None]) for c in clips]
    rows = []
    for j, (i, clip, lat) in enumerate(zip(args.clips, clips, latents)):
        fut = lat[:, :, n_ctx:]
        other = latents[(j + 1) % len(latents)][:, :, :n_ctx]  # the next clip's context: does the model read its own?
        cond, _ = pipe._cond(clip, None)
        last = lat[:, :, n_ctx - 1:n_ctx].expand_as(fut)
        truth = clip.target.frames  # (F, 3, H, W)

        def per_frame(x):  # mean squared error per future latent frame, nearest first
            return [round(float(e), 4) for e in ((x - fut) ** 2).mean(dim=(0, 1, 3, 4))]

        def psnr_at(frames):
            return [round(float(psnr(frames[k:k + 1], truth[k:k + 1]).mean()), 2) for k in columns]

        if args.pixels:  # what needs no Video DiT, once per clip
            fixed = {"horizons_s": [(k + 1) / data.frame_rate for k in columns],
                     "repeat_last_psnr_db": psnr_at(clip.observation.frames[-1:].expand_as(truth)),
                     "vae_psnr_db": psnr_at(decode_latents(pipe.vae, lat)[0, -truth.shape[0]:])}

        def pixel_scores(x0):
            frames = decode_latents(pipe.vae, torch.cat([lat[:, :, :n_ctx], x0], 2))[0, -truth.shape[0]:]
            return {"x0_psnr_db": psnr_at(frames), **fixed}

        for s in args.sigmas:
            x_t = (1 - s) * fut + s * torch.randn(fut.shape, generator=gen)

            def x0_with(context):
                v = pipe.video_dit(torch.cat([context, x_t], 2), torch.tensor([s]), cond, n_ctx).sample
                return x_t - s * v[:, :, n_ctx:]

            x0, x0_other = x0_with(lat[:, :, :n_ctx]), x0_with(other)
            rows.append({"clip": i, "sigma": s, "model_x0_mse": float(((x0 - fut) ** 2).mean()),
                         "other_context_x0_mse": float(((x0_other - fut) ** 2).mean()),
                         "noisy_input_mse": float(((x_t - fut) ** 2).mean()),
                         "repeat_last_mse": float(((last - fut) ** 2).mean()), "future_variance": float(fut.var()),
                         "model_x0_mse_per_frame": per_frame(x0), "repeat_last_mse_per_frame": per_frame(last)})
            if args.pixels:
                rows[-1].update(pixel_scores(x0))
            print(json.dumps(rows[-1]))
        if args.sample_steps:
            sample = sample_future(pipe.video_dit, lat[:, :, :n_ctx], cond, fut.shape[2], args.sample_steps,
                                   generator=torch.Generator().manual_seed(args.seed + i),
                                   shift=pipe.config.loss.shift,
                                   shift_terminal=pipe.config.loss.shift_terminal).future
            rows.append({"clip": i, "sample_steps": args.sample_steps, "sample_mse_per_frame": per_frame(sample),
                         "repeat_last_mse_per_frame": per_frame(last)})
            print(json.dumps(rows[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
