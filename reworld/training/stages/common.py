"""What every stage shares: the accelerator, the run folder's components, clips encoded to latents."""
from __future__ import annotations

from pathlib import Path

import torch

from reworld.config import Config, TrainConfig
from reworld.data.clips import ClipTensors
from reworld.models.layers import CheckpointError
from reworld.models.vae import configure_vae, encode_frames, load_pretrained_vae
from reworld.pipelines.run_folder import vae_folder
from reworld.training.loop import TrainingError


def make_accelerator(tcfg: TrainConfig | None = None):
    """One process, or one of many under `accelerate launch` (DDP on NCCL, or gloo on CPU-only machines), with
    the run's precision: `train.mixed_precision` through accelerate's autocast, TF32 on CUDA when `train.tf32`."""
    from datetime import timedelta

    from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs

    tcfg = tcfg if tcfg is not None else TrainConfig()
    cuda = torch.cuda.is_available()
    if tcfg.mixed_precision not in ("no", "bf16", "fp16"):
        raise TrainingError(f"train.mixed_precision must be 'no', 'bf16' or 'fp16', got {tcfg.mixed_precision!r}")
    if tcfg.mixed_precision == "fp16" and not cuda:
        raise TrainingError("train.mixed_precision: fp16 needs CUDA; use bf16 on the CPU")
    if cuda and tcfg.tf32:  # set when a run starts, never at import
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # with λ_ig = 0 the intermediate heads get no gradient; DDP must not wait for them
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    group = InitProcessGroupKwargs(timeout=timedelta(seconds=tcfg.process_group_timeout_s))
    return Accelerator(cpu=not cuda, mixed_precision=tcfg.mixed_precision, kwargs_handlers=[ddp, group])


def end_run(accelerator) -> None:
    """A run that finished: destroy the process group while the interpreter is whole. Without it, gloo's worker
    threads outlive finalisation under `accelerate launch` and a rank can abort at exit ("terminate called without
    an active exception", SIGABRT) after a run that succeeded. Called on success only: a rank that failed must
    not wait in a collective for the others."""
    accelerator.wait_for_everyone()
    accelerator.end_training()


def speed_up(video_dit, tcfg: TrainConfig) -> None:
    """The Video DiT's training-speed switches: `train.attention_backend` (diffusers' attention dispatcher),
    `train.gradient_checkpointing` (recompute each block in backward) and `train.compile` (regional compilation: each repeated LTX block compiled once, as diffusers'
    `compile_repeated_blocks` does, so compile time does not grow with depth)."""
    if tcfg.attention_backend != "native":
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = [b.value for b in AttentionBackendName]
        if tcfg.attention_backend not in known or "hub" in tcfg.attention_backend:
            raise TrainingError(f"train.attention_backend {tcfg.attention_backend!r} is not a local diffusers attention "
                                f"backend; use one of {[b for b in known if 'hub' not in b]}")
        try:
            video_dit.transformer.set_attention_backend(tcfg.attention_backend)
        except (RuntimeError, ImportError, ValueError) as e:  # e.g. flash-attn not installed
            raise TrainingError(f"train.attention_backend {tcfg.attention_backend!r}: {e}") from None
    if tcfg.gradient_checkpointing:
        video_dit.enable_gradient_checkpointing()
    if tcfg.compile:
        video_dit.transformer.compile_repeated_blocks()


def require_component(folder: Path, what: str, stage: str) -> Path:
    """`folder` when it holds a saved model; otherwise a `CheckpointError` naming the stage that makes it."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"stage {stage} needs {what} in {folder}: run the earlier stage with the same --out first")
    return folder


def load_run_vae(out: Path, config: Config, stage: str):
    """The run's VAE (`reworld.pipelines.run_folder.vae_folder`: its own `vae/`, or the pretrained one)."""
    folder = vae_folder(out, config)
    if folder == out / "vae":
        require_component(folder, "a trained VAE (stage vae)", stage)
    return configure_vae(load_pretrained_vae(folder), config.vae)


@torch.no_grad()
def encode_clips(vae, clips: ClipTensors, device, batch: int = 16) -> torch.Tensor:
    vae.eval()
    out = [encode_frames(vae, clips.video(slice(i, i + batch)).to(device)) for i in range(0, len(clips), batch)]
    return torch.cat(out)  # (N, C, t, h, w)


def check_same_model(before: Config, config: Config, stage: str) -> None:
    """A later stage must train on the VAE and Video DiT the run folder was made with."""
    for section in ("vae", "video"):
        if getattr(before, section) != getattr(config, section):
            raise TrainingError(f"stage {stage}: the {section} section of the config differs from the one this "
                                f"run folder was trained with ({before.name!r}); use a new --out")
