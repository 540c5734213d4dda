"""Stage `vae`: the AutoencoderKLLTXVideo trained from scratch on the clips (L1 + MSE + a tiny KL), then its
latent statistics fitted so the Video DiT sees unit-scale latents."""
from __future__ import annotations

from pathlib import Path

import torch

from reworld.config import Config
from reworld.data.clips import ClipFrames, load_clip_tensors
from reworld.evaluation.video import psnr
from reworld.models.layers import load_model_strict, save_model_atomic
from reworld.models.vae import build_vae, fit_latent_stats
from reworld.training.loop import StageSpec


def bicubic_reconstruction(videos: torch.Tensor, ratio: int) -> torch.Tensor:
    """Videos (B, T, 3, H, W) area-downsampled by the VAE's spatial ratio and upsampled bicubically, per frame: the
    validation's reference codec (`psnr_bicubic`). A VAE below it has not learned the detail its ratio keeps."""
    import torch.nn.functional as F

    b, t, c, h, w = videos.shape
    small = F.interpolate(videos.flatten(0, 1), scale_factor=1 / ratio, mode="area")
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1).view_as(videos)


def vae_stage(config: Config, out: Path, device) -> StageSpec:
    train = ClipFrames(config.data, "train")  # decoded a batch at a time: the split is never held in memory
    val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)
    vae = build_vae(config.vae).to(device)
    kl_weight = 1e-6  # a near-deterministic autoencoder; the KL only keeps latents bounded
    window = config.vae.train_window
    n_frames = config.data.context_frames + config.data.future_frames
    r = vae.temporal_compression_ratio
    if window and (window > n_frames or (window - 1) % r):
        raise ValueError(f"vae.train_window={window} must be 1 + k·{r} (the temporal ratio) and at most the clip's "
                         f"{n_frames} frames")

    def step_fn(idx, generator):
        x = train.video(idx).to(device).permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        if window:
            start = int(torch.randint(n_frames - window + 1, (1,), generator=generator))
            x = x[:, :, start:start + window]
        posterior = vae.encode(x).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=generator).to(device)
        z = posterior.mean + posterior.std * eps
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = ((rec - x) ** 2).mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return {"l1": l1, "mse": mse, "kl": kl, "total": l1 + mse + kl_weight * kl}

    baseline: dict[str, float] = {}

    @torch.no_grad()
    def validate(step):
        vae.eval()
        x = val.video(slice(None)).to(device)
        rec = vae.decode(vae.encode(x.permute(0, 2, 1, 3, 4)).latent_dist.mode()).sample.permute(0, 2, 1, 3, 4)
        if not baseline:  # the same clips through a codec that learns nothing: what a VAE must beat
            baseline["psnr_bicubic"] = float(psnr(bicubic_reconstruction(x, vae.spatial_compression_ratio), x).mean())
        rec = rec.clamp(-1, 1)
        # the first frame is encoded alone (causal): its PSNR is the spatial compression's, the rest add the temporal
        return {"psnr": float(psnr(rec, x).mean()), "psnr_frame0": float(psnr(rec[:, :1], x[:, :1]).mean()),
                "psnr_later": float(psnr(rec[:, 1:], x[:, 1:]).mean()), **baseline}

    @torch.no_grad()
    def export(models):
        final = models["vae"].to(device).eval()
        fit_latent_stats(final, train.video(slice(0, min(len(train), 64))).to(device))
        save_model_atomic(final, out / "vae")

    def load(ckpt: Path):
        vae.load_state_dict(load_model_strict(type(vae), ckpt / "vae").state_dict())

    return StageSpec("vae", {"vae": vae}, [{"params": list(vae.parameters())}], len(train), step_fn,
                     validate, export, load)
