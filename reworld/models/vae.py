"""Video VAE: diffusers `AutoencoderKLLTXVideo`, frames (B, T, 3, H, W) in [-1, 1] ⇄ latents (B, C, t, h, w).

Latents handed to the Video DiT are normalised per channel, `z = (μ − mean) / std · scaling_factor`, with
`mean`/`std` the VAE's own `latents_mean`/`latents_std` buffers (saved with its weights; set them with
`fit_latent_stats` after training) and `scaling_factor` from its config.

Time: the encoder is causal. Latent frame 0 comes from frame 0 alone and latent frame j ≥ 1 from frames
r(j−1)+1 … rj (r = temporal ratio), so a clip needs `T = 1 + k·r` frames. With `context_frames = 1 + a·r`
and `future_frames = b·r` the first `1 + a` latent frames are pure context and the last `b` pure future
(e.g. 5 + 4 frames, r = 4: latent frames 0, 1 are context, 2 is future).
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLLTXVideo

from reworld.config import DataConfig, VAEConfig
from reworld.models.layers import CheckpointError, diffusers_component, load_model_strict


def vae_ratios(cfg: VAEConfig) -> tuple[int, int]:
    """(spatial, temporal) compression of the VAE that `build_vae(cfg)` builds (patch_size_t = 1)."""
    n = sum(bool(s) for s in cfg.spatio_temporal_scaling)
    return cfg.patch_size * 2**n, 2**n


def build_vae(cfg: VAEConfig) -> AutoencoderKLLTXVideo:
    """The VAE of `cfg`: loaded strictly from `cfg.pretrained` when set, else a new small one (3 → 3
    channels, decoder mirroring the encoder, no timestep conditioning, no noise injection)."""
    if cfg.pretrained:
        return load_pretrained_vae(cfg.pretrained)
    n_blocks = len(cfg.block_out_channels)
    if len(cfg.spatio_temporal_scaling) != n_blocks or len(cfg.layers_per_block) != n_blocks + 1:
        raise ValueError(
            f"VAEConfig: need len(spatio_temporal_scaling) == len(block_out_channels) = {n_blocks} and "
            f"len(layers_per_block) == {n_blocks + 1}; got {len(cfg.spatio_temporal_scaling)} and "
            f"{len(cfg.layers_per_block)}"
        )
    return AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=cfg.latent_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=("LTXVideoDownBlock3D",) * n_blocks,
        decoder_block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=tuple(cfg.layers_per_block),
        decoder_layers_per_block=tuple(cfg.layers_per_block),
        spatio_temporal_scaling=tuple(cfg.spatio_temporal_scaling),
        decoder_spatio_temporal_scaling=tuple(cfg.spatio_temporal_scaling),
        decoder_inject_noise=(False,) * (n_blocks + 1),
        downsample_type=("conv",) * n_blocks,
        upsample_residual=(False,) * n_blocks,
        upsample_factor=(1,) * n_blocks,
        timestep_conditioning=False,
        patch_size=cfg.patch_size,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )


def load_pretrained_vae(path: str | Path, torch_dtype: torch.dtype | None = None) -> AutoencoderKLLTXVideo:
    """A VAE from a local diffusers folder, loaded strictly: the component folder (e.g. LTX-Video's `vae/`) or
    the pipeline folder around it (`model_index.json`); `torch_dtype` casts its weights (e.g. bfloat16). A
    missing folder or key is a `CheckpointError`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    return load_model_strict(AutoencoderKLLTXVideo, diffusers_component(path, "vae", "AutoencoderKLLTXVideo"),
                             dtype=torch_dtype)


def configure_vae(vae: AutoencoderKLLTXVideo, cfg: VAEConfig) -> AutoencoderKLLTXVideo:
    """Batch slicing always (a batch of clips is decoded one clip at a time, so validation and evaluation never
    decode all their clips in one call) and spatial tiling when `cfg.tiling`, with diffusers' own switches."""
    vae.enable_slicing()
    if cfg.tiling:
        vae.enable_tiling()
    return vae


class OneDNNConv3d(torch.nn.Conv3d):
    """`nn.Conv3d` that runs float32 inference on the CPU through oneDNN (`torch.mkldnn_convolution`), with the same
    weights, state dict and result (to float rounding). PyTorch sends a single clip's small 3×3×3 convolutions to its
    naive `slow_conv3d` (its heuristic wants a batch > 1 or N·C·T·H > 20480), which is 3–3.5× slower there on the
    VAE decoder's [1, 64, 13, 18, 34] activations (`benchmarks/bench_conv3d.py`: a whole decode 0.43×, encode 0.32×). Anything else (a GPU, bf16, a
    graph that needs gradients, another padding mode, no oneDNN) takes `nn.Conv3d`'s own path."""

    def _conv_forward(self, input, weight, bias):
        if (input.device.type == "cpu" and input.dtype == torch.float32 and weight.dtype == torch.float32
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return torch.mkldnn_convolution(input.contiguous(), weight.contiguous(), bias, self.padding, self.stride,
                                            self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def use_onednn_conv3d(module: torch.nn.Module) -> torch.nn.Module:
    """Turn every plain `nn.Conv3d` in `module` into a `OneDNNConv3d` in place (same parameters and state dict);
    returns `module`."""
    for m in module.modules():
        if type(m) is torch.nn.Conv3d:
            m.__class__ = OneDNNConv3d
    return module


def latent_split(data_cfg: DataConfig, vae: AutoencoderKLLTXVideo) -> tuple[int, int]:
    """(n_ctx_latent, n_fut_latent): how many latent frames are context and future for this clip layout.
    Raises ValueError when the frame counts do not fall on latent-frame boundaries."""
    r = int(vae.temporal_compression_ratio)
    ctx, fut = data_cfg.context_frames, data_cfg.future_frames
    if ctx < 1 or (ctx - 1) % r != 0:
        raise ValueError(
            f"context_frames={ctx} must be 1 + a·{r} (temporal ratio {r}) so that context latent frames "
            f"hold context frames only; e.g. {1 + r} or {1 + 2 * r}"
        )
    if fut < r or fut % r != 0:
        raise ValueError(
            f"future_frames={fut} must be a positive multiple of the temporal ratio {r} so that future "
            f"latent frames hold future frames only; e.g. {r} or {2 * r}"
        )
    return 1 + (ctx - 1) // r, fut // r


def _check_frames(vae: AutoencoderKLLTXVideo, frames: torch.Tensor) -> None:
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    t, h, w = frames.shape[1], frames.shape[3], frames.shape[4]
    r, s = int(vae.temporal_compression_ratio), int(vae.spatial_compression_ratio)
    if (t - 1) % r != 0:
        raise ValueError(f"frame count {t} must be 1 + k·{r} (the VAE would silently drop frames)")
    if h % s != 0 or w % s != 0:
        raise ValueError(f"frame size {h}×{w} must be divisible by the spatial ratio {s}")


def _scale(vae: AutoencoderKLLTXVideo, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    mean = vae.latents_mean.to(like).view(1, -1, 1, 1, 1)
    std = vae.latents_std.to(like).view(1, -1, 1, 1, 1)
    return mean, std, float(vae.config.scaling_factor)


def encode_frames(vae: AutoencoderKLLTXVideo, frames: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """frames (B, T, 3, H, W) in [-1, 1] → latents (B, C, t, h, w): posterior mode, normalised (see module)."""
    _check_frames(vae, frames)
    x = frames.permute(0, 2, 1, 3, 4).to(vae.dtype)  # (B, 3, T, H, W)
    mu = vae.encode(x).latent_dist.mode()  # (B, C, t, h, w)
    if not normalize:
        return mu
    mean, std, scaling = _scale(vae, mu)
    return (mu - mean) / std * scaling


def decode_latents(vae: AutoencoderKLLTXVideo, latents: torch.Tensor, *, decode_timestep: float = 0.0,
                   decode_noise_scale: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """latents (B, C, t, h, w), normalised as `encode_frames` makes them → frames (B, T, 3, H, W) in [-1, 1],
    T = 1 + (t − 1)·r.

    A timestep-conditioned decoder (LTX-Video's VAE from 0.9.1 on) is decoded as diffusers' `LTXPipeline`
    does: the latents are mixed with noise, `(1 − s) z + s ε` with s = `decode_noise_scale` (default: the
    decode timestep), and the decoder is told `decode_timestep`; the run's values are `vae.decode_timestep`
    and `vae.decode_noise_scale` of its config. ε is drawn on the CPU `generator`. Other decoders ignore them."""
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, C, t, h, w), got {tuple(latents.shape)}")
    mean, std, scaling = _scale(vae, latents)
    z = latents / scaling * std + mean
    temb = None
    if getattr(vae.config, "timestep_conditioning", False):
        s = decode_timestep if decode_noise_scale is None else decode_noise_scale
        noise = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z)
        z = (1 - s) * z + s * noise
        temb = torch.full((z.shape[0],), float(decode_timestep), device=z.device, dtype=z.dtype)
    z = z.to(vae.dtype)
    if temb is None:
        x = vae.decode(z).sample  # (B, 3, T, H, W)
    else:  # one clip at a time: diffusers' batch slicing hands every slice the whole batch's timesteps
        temb = temb.to(vae.dtype)
        x = torch.cat([vae.decode(zi, ti).sample for zi, ti in zip(z.split(1), temb.split(1))])
    return x.permute(0, 2, 1, 3, 4).float().clamp(-1.0, 1.0)  # (B, T, 3, H, W), float32 frames


@torch.no_grad()
def fit_latent_stats(vae: AutoencoderKLLTXVideo, frames: torch.Tensor) -> None:
    """Set the VAE's per-channel `latents_mean`/`latents_std` buffers from clips (B, T, 3, H, W), so
    `encode_frames` gives about zero-mean, unit-variance latents. Saved with the VAE's weights."""
    mu = encode_frames(vae, frames, normalize=False)  # (B, C, t, h, w)
    per_channel = mu.transpose(0, 1).flatten(1)  # (C, B·t·h·w)
    vae.latents_mean.copy_(per_channel.mean(dim=1))
    vae.latents_std.copy_(per_channel.std(dim=1).clamp_min(1e-6))
