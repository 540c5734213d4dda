"""Stage `video` (stage 1): the Video DiT trained with flow matching plus the intermediate-guidance heads
(`losses.flow.video_training_losses`), the VAE frozen; validation samples futures with the run's guidance."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from reworld.config import Config, ConfigError
from reworld.data.clips import ClipTensors, load_clip_tensors, poses_at
from reworld.evaluation.video import psnr
from reworld.losses.flow import video_training_losses
from reworld.models.layers import CheckpointError, save_model_atomic
from reworld.models.vae import decode_latents, latent_split
from reworld.models.video_dit import (
    VideoCond,
    VideoDiT,
    ltx_rope_scale,
    video_dit_from_config,
)
from reworld.paths import resolve_dataroot
from reworld.pipelines.run_folder import vae_folder
from reworld.sampling import default_guidance, default_motion_guidance, sample_future
from reworld.schedulers.flow_match import schedule_mismatch
from reworld.training.loop import StageSpec
from reworld.training.prepare import LatentStore, _rank_world, prepare_latents
from reworld.training.stages.common import encode_clips, load_run_vae, speed_up


def init_from_folder(model: VideoDiT, folder: str | Path) -> None:
    """Start `model` from the weights of a saved Video DiT (`video.init_from`: fine-tuning), strictly: every tensor
    of the config's architecture, nothing else, the same shapes."""
    start = VideoDiT.from_pretrained(folder)  # CheckpointError when missing or broken
    try:
        model.load_state_dict(start.state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"video.init_from {folder}: its weights do not fit the config's Video DiT "
                              f"({str(e).splitlines()[0]})") from None


def motion_frame_times(config: Config, n_fut: int) -> torch.Tensor:
    """[s] after t = 0 of each of the `n_fut` future latent frames' last frame: (k + 1)·r / frame_rate for the k-th,
    r = future_frames / n_fut the VAE's temporal ratio (a future latent frame holds the r frames after the previous)."""
    r = config.data.future_frames // n_fut
    return torch.arange(1, n_fut + 1, dtype=torch.float64) * r / config.data.frame_rate


def motion_targets(config: Config, clips: ClipTensors, n_fut: int) -> torch.Tensor:
    """The logged ego poses (N, F, 3) at the future latent frames' times (`motion_frame_times`), for
    `loss.lambda_motion` (ConfigError when the motion head cannot be trained on this config)."""
    if config.video.motion_block is None:
        raise ConfigError("loss.lambda_motion > 0 needs video.motion_block (the block the motion head reads)")
    if config.data.future_poses != "uniform":
        raise ConfigError('loss.lambda_motion needs data.future_poses: uniform (the poses at known times)')
    times = motion_frame_times(config, n_fut)
    if float(times[-1]) > config.data.horizon_s + 1e-6:
        raise ConfigError(f"the last future frame is {float(times[-1]):.2f} s ahead, past data.horizon_s = "
                          f"{config.data.horizon_s}: the motion head has no logged pose to learn there")
    return poses_at(clips.trajectory, config.data.horizon_s, times)


def check_motion_feedback(config: Config) -> None:
    """ConfigError unless the motion-feedback keys (docs/world4s.md, E17) fit together: feedback needs a head that
    learns the poses it feeds back (`loss.lambda_motion` > 0); teacher forcing, the null condition and the sampler's
    motion guidance need the feedback."""
    if config.video.motion_feedback and config.loss.lambda_motion <= 0:
        raise ConfigError("video.motion_feedback needs loss.lambda_motion > 0 (the head whose poses it feeds back "
                          "must learn them)")
    if not config.video.motion_feedback:
        used = [k for k, v in (("loss.motion_teacher", config.loss.motion_teacher),
                               ("loss.motion_null", config.loss.motion_null),
                               ("train.motion_guidance", config.train.motion_guidance)) if v]
        if used:
            raise ConfigError(f"{', '.join(used)} need video.motion_feedback: true")


def train_clips_and_latents(config: Config, out: Path, vae, device) -> tuple[ClipTensors, list]:
    """The stage's training clips (conditions only: latents come from files) and their latent folders: the config's
    train split, then every clip of each `video.train_worlds` world, each encoded once into its own folder."""
    vae_dir = vae_folder(out, config)
    roots = [Path(resolve_dataroot(r)).resolve() for r in (config.data.dataroot, *config.video.train_worlds)]
    if len(set(roots)) != len(roots):
        raise ConfigError(f"video.train_worlds {list(config.video.train_worlds)}: a world is named twice or is "
                          f"data.dataroot itself ({config.data.dataroot}); its clips would be drawn twice as often")
    clips, parts = [], []
    for root, split in [(config.data.dataroot, "train")] + [(w, "all") for w in config.video.train_worlds]:
        cfg = config if split == "train" else replace(config, data=replace(config.data, dataroot=root))
        part = load_clip_tensors(cfg.data, split, frames=False)
        clips.append(part)
        parts.append((prepare_latents(cfg, out, vae, vae_dir, split, part.tokens, device), part.tokens))
    return ClipTensors.cat(clips), parts


def video_stage(config: Config, out: Path, device) -> StageSpec:
    check_motion_feedback(config)
    vae = load_run_vae(out, config, "video").to(device).requires_grad_(False)
    n_ctx, n_fut = latent_split(config.data, vae)
    train, parts = train_clips_and_latents(config, out, vae, device)
    val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)  # a few clips, frames for PSNR
    train_lat, val_lat = LatentStore.joined(parts, device), encode_clips(vae, val, device)
    rope = ltx_rope_scale(config.data.frame_rate, vae.temporal_compression_ratio, vae.spatial_compression_ratio)
    model = video_dit_from_config(config.video, in_channels=train_lat.shape[1], rope_scale=rope,
                                  motion_frames=n_fut).to(device)
    lcfg = config.loss
    if config.video.init_from:
        init_from_folder(model, config.video.init_from)
    train_motion = val_motion = None
    if lcfg.lambda_motion > 0:  # the logged poses, normalised with this run's training clips' statistics per frame
        poses = motion_targets(config, train, n_fut)  # (after init_from, whose own statistics they replace)
        model.set_motion_stats(poses.mean(0), poses.std(0).clamp_min(1e-3))
        train_motion, val_motion = (model.motion_normalise(p).to(device)
                                    for p in (poses, motion_targets(config, val, n_fut)))
    speed_up(model, config.train)
    if config.video.pretrained:  # LTX-Video's noise schedule is its scheduler's at this run's token count
        p = model.patch_size  # tokens of one clip: every latent frame, p×p latent pixels a token
        tokens = train_lat.shape[2] * (train_lat.shape[3] // p) * (train_lat.shape[4] // p)
        note = schedule_mismatch(lcfg.shift, lcfg.shift_terminal, config.video.pretrained, tokens)
        if note and _rank_world()[0] == 0:  # once, not once a rank
            print(f"[video] note: {note}")

    def cond_of(clips: ClipTensors, idx):
        return VideoCond(command=clips.command[idx].to(device), ego_status=clips.ego_status[idx].to(device))

    def step_fn(idx, generator):
        return video_training_losses(model, train_lat[idx], n_ctx, cond_of(train, idx), lcfg, generator,
                                     None if train_motion is None else train_motion[idx])

    @torch.no_grad()
    def validate(step):
        model.eval()
        # the head's own poses fed back, as at sampling (no teacher forcing, no null draws)
        terms = video_training_losses(model, val_lat, n_ctx, cond_of(val, slice(None)),
                                      replace(lcfg, motion_teacher=0.0, motion_null=0.0),
                                      torch.Generator().manual_seed(1234), val_motion)
        res = sample_future(model, val_lat[:, :, :n_ctx], cond_of(val, slice(None)), n_fut,
                            config.train.sample_steps, generator=torch.Generator().manual_seed(0),
                            guidance=default_guidance(config), motion_guidance=default_motion_guidance(config),
                            shift=lcfg.shift,
                            shift_terminal=lcfg.shift_terminal)
        frames = decode_latents(vae, res.latents, decode_timestep=config.vae.decode_timestep,
                                decode_noise_scale=config.vae.decode_noise_scale,
                                generator=torch.Generator().manual_seed(0))[:, config.data.context_frames:]
        truth = val.video(slice(None))[:, config.data.context_frames:].to(device)
        last = val.video(slice(None))[:, config.data.context_frames - 1:config.data.context_frames].to(device)
        motion = {"motion_loss": float(terms["motion"])} if "motion" in terms else {}
        return {"flow_loss": float(terms["gen"]), **motion, "psnr_sampled": float(psnr(frames, truth).mean()),
                "psnr_repeat_last": float(psnr(last.expand_as(truth), truth).mean())}

    def export(models):
        save_model_atomic(models["video_dit"], out / "video_dit")

    def load(ckpt: Path):
        model.load_state_dict(VideoDiT.from_pretrained(ckpt / "video_dit").state_dict())

    return StageSpec("video", {"video_dit": model}, [{"params": list(model.parameters())}], len(train),
                     step_fn, validate, export, load, meta={"lambda_ig": lcfg.lambda_ig},
                     stores={"latents": train_lat})
