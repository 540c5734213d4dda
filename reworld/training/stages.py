"""The training stages, in order: `vae`, `video` (stage 1), `action` (stage 2), `joint` (stage 3).

All write into one run folder, where each stage finds what the earlier ones left:
```
OUT/config.json          the run's configuration
OUT/vae/                 AutoencoderKLLTXVideo (save_pretrained, safetensors), with latent statistics
OUT/video_dit/           VideoDiT
OUT/action_dit/          ActionDiT (stages action / joint)
OUT/checkpoints/<stage>/step-N/   models + optimizer state, for --resume
OUT/logs/<stage>.csv, OUT/tensorboard/<stage>/
```
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import Config, load_config, replace
from ..models.layers import CheckpointError, load_model_strict, save_model_atomic
from .data import ClipTensors, load_clip_tensors, psnr
from .loop import StageSpec, TrainingError, run

STAGES = ("vae", "video", "action", "joint")


def make_accelerator():
    """One process, or one of many under `accelerate launch` (DDP on NCCL, or gloo on CPU-only machines)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # with λ_ig = 0 the intermediate heads get no gradient; DDP must not wait for them
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])


def _require(folder: Path, what: str, stage: str) -> Path:
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"stage {stage} needs {what} in {folder}: run the earlier stage with the same --out first")
    return folder


def _load_vae(out: Path, config: Config, vae_path: str | None, stage: str):
    from ..models.vae import load_pretrained_vae

    if vae_path:
        return load_pretrained_vae(vae_path)
    if config.vae.pretrained:
        return load_pretrained_vae(config.vae.pretrained)
    return load_pretrained_vae(_require(out / "vae", "a trained VAE (stage vae)", stage))


# ---------------------------------------------------------------------------------------------- vae
def vae_stage(config: Config, out: Path, device) -> StageSpec:
    from ..models.vae import build_vae, encode_frames, fit_latent_stats

    train = load_clip_tensors(config.data, "train")
    val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)
    vae = build_vae(config.vae).to(device)
    kl_weight = 1e-6  # a near-deterministic autoencoder; the KL only keeps latents bounded

    def step_fn(idx, generator):
        x = train.video(idx).to(device).permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        posterior = vae.encode(x).latent_dist
        eps = torch.randn(posterior.mean.shape, generator=generator).to(device)
        z = posterior.mean + posterior.std * eps
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = ((rec - x) ** 2).mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return {"l1": l1, "mse": mse, "kl": kl, "total": l1 + mse + kl_weight * kl}

    @torch.no_grad()
    def validate(step):
        vae.eval()
        x = val.video(slice(None)).to(device)
        rec = vae.decode(vae.encode(x.permute(0, 2, 1, 3, 4)).latent_dist.mode()).sample.permute(0, 2, 1, 3, 4)
        return {"psnr": float(psnr(rec.clamp(-1, 1), x).mean())}

    @torch.no_grad()
    def export(models):
        final = models["vae"].to(device).eval()
        fit_latent_stats(final, train.video(slice(0, min(len(train), 64))).to(device))
        save_model_atomic(final, out / "vae")

    def load(ckpt: Path):
        vae.load_state_dict(load_model_strict(type(vae), ckpt / "vae").state_dict())

    return StageSpec("vae", {"vae": vae}, [{"params": list(vae.parameters())}], len(train), step_fn,
                     validate, export, load)


# ---------------------------------------------------------------------------------------------- video
@torch.no_grad()
def encode_clips(vae, clips: ClipTensors, device, batch: int = 16) -> torch.Tensor:
    from ..models.vae import encode_frames

    vae.eval()
    out = [encode_frames(vae, clips.video(slice(i, i + batch)).to(device)) for i in range(0, len(clips), batch)]
    return torch.cat(out)  # (N, C, t, h, w)


def video_stage(config: Config, out: Path, device, vae_path: str | None = None) -> StageSpec:
    from ..models.vae import decode_latents, latent_split
    from ..models.video_dit import VideoCond, VideoDiT, video_dit_from_config
    from ..losses.flow import video_training_losses
    from ..sampling.euler import sample_future

    vae = _load_vae(out, config, vae_path, "video").to(device).requires_grad_(False)
    n_ctx, n_fut = latent_split(config.data, vae)
    train = load_clip_tensors(config.data, "train")
    val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)
    train_lat, val_lat = encode_clips(vae, train, device), encode_clips(vae, val, device)
    model = video_dit_from_config(config.video, in_channels=train_lat.shape[1]).to(device)
    lcfg = config.loss

    def cond_of(clips: ClipTensors, idx):
        return VideoCond(command=clips.command[idx].to(device), ego_status=clips.ego_status[idx].to(device))

    def step_fn(idx, generator):
        return video_training_losses(model, train_lat[idx], n_ctx, cond_of(train, idx), lcfg, generator)

    @torch.no_grad()
    def validate(step):
        model.eval()
        terms = video_training_losses(model, val_lat, n_ctx, cond_of(val, slice(None)), lcfg,
                                      torch.Generator().manual_seed(1234))
        w = config.train.guidance if (lcfg.lambda_ig > 0 and config.video.head_blocks) else 1.0
        res = sample_future(model, val_lat[:, :, :n_ctx], cond_of(val, slice(None)), n_fut,
                            config.train.sample_steps, generator=torch.Generator().manual_seed(0), guidance=w)
        frames = decode_latents(vae, res.latents)[:, config.data.context_frames:]
        truth = val.video(slice(None))[:, config.data.context_frames:].to(device)
        last = val.video(slice(None))[:, config.data.context_frames - 1:config.data.context_frames].to(device)
        return {"flow_loss": float(terms["gen"]), "psnr_sampled": float(psnr(frames, truth).mean()),
                "psnr_repeat_last": float(psnr(last.expand_as(truth), truth).mean())}

    def export(models):
        save_model_atomic(models["video_dit"], out / "video_dit")

    def load(ckpt: Path):
        model.load_state_dict(VideoDiT.from_pretrained(ckpt / "video_dit").state_dict())

    return StageSpec("video", {"video_dit": model}, [{"params": list(model.parameters())}], len(train),
                     step_fn, validate, export, load, meta={"lambda_ig": lcfg.lambda_ig})


# ---------------------------------------------------------------------------------------------- entry
def run_stage(stage: str, config_path: str, out: str, max_steps: int | None = None, resume: bool = False,
              dataroot: str | None = None, version: str | None = None, vae_path: str | None = None) -> dict:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    config = load_config(config_path)
    changes = {k: v for k, v in (("dataroot", dataroot), ("version", version)) if v}
    if changes:
        config = replace(config, data=changes)
    from ..cli import resolve_dataroot

    config = replace(config, data={"dataroot": resolve_dataroot(config.data.dataroot)})
    out = Path(out)
    previous = out / "config.json"
    if stage != "vae" and previous.is_file():
        _check_same_model(json.loads(previous.read_text()), config, stage)
    torch.manual_seed(config.train.seed)  # parameter initialisation
    accelerator = make_accelerator()
    device = accelerator.device
    if stage == "vae":
        spec = vae_stage(config, out, device)
    elif stage == "video":
        spec = video_stage(config, out, device, vae_path)
    else:
        from .planner_stages import planner_stage

        spec = planner_stage(stage, config, out, device, vae_path)
    steps = max_steps if max_steps is not None else int(config.train.max_steps[stage])
    if steps < 1:
        raise ValueError(f"--max-steps must be ≥ 1, got {steps}")
    result = run(spec, config, out, steps, resume, accelerator)
    if accelerator.is_main_process:
        print(json.dumps({k: v for k, v in result.items()}, default=float))
    return result


def _check_same_model(previous: dict, config: Config, stage: str) -> None:
    for section in ("vae", "video"):
        now = json.loads(json.dumps(getattr(config, section).__dict__, default=list))
        if previous.get(section) != now:
            raise TrainingError(f"stage {stage}: the {section} section of the config differs from the one this "
                                f"run folder was trained with ({previous.get('name')!r}); use a new --out")
