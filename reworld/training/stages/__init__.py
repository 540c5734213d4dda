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
import time
from pathlib import Path

import torch

from reworld.config import STAGES, Config, config_from_dict, load_config, replace
from reworld.data.clips import load_clip_tensors
from reworld.paths import resolve_dataroot
from reworld.pipelines.run_folder import vae_folder, write_model_index
from reworld.training.loop import run
from reworld.training.prepare import prepare_latents
from reworld.training.stages.common import check_same_model, load_run_vae, make_accelerator
from reworld.training.stages.planner import action_stage, joint_stage
from reworld.training.stages.vae import vae_stage
from reworld.training.stages.video import video_stage

__all__ = ["STAGES", "prepare_run", "run_stage"]


def run_config(config_path: str, out: Path, stage: str, dataroot: str | None = None, version: str | None = None,
               vae_path: str | None = None) -> Config:
    """The configuration a stage of the run folder `out` runs with: the file's, with the data root and version
    overridden, `--vae` recorded, and the run's own pretrained VAE remembered; a later stage must keep the VAE
    and Video DiT sections the run was made with."""
    config = load_config(config_path)
    changes = {k: v for k, v in (("dataroot", dataroot), ("version", version)) if v}
    if changes:
        config = replace(config, data=changes)
    config = replace(config, data={"dataroot": resolve_dataroot(config.data.dataroot)})
    if vae_path:  # recorded in the run's config, so later stages and the pipeline find the VAE too
        config = replace(config, vae={"pretrained": str(Path(vae_path).resolve())})
    previous = out / "config.json"
    if stage != "vae" and previous.is_file():
        before = config_from_dict(json.loads(previous.read_text()))
        if config.vae.pretrained is None and before.vae.pretrained:  # the run remembers its pretrained VAE
            config = replace(config, vae={"pretrained": before.vae.pretrained})
        check_same_model(before, config, stage)
    return config


def run_stage(stage: str, config_path: str, out: str, max_steps: int | None = None, resume: bool = False,
              dataroot: str | None = None, version: str | None = None, vae_path: str | None = None) -> dict:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    out = Path(out)
    config = run_config(config_path, out, stage, dataroot, version, vae_path)
    torch.manual_seed(config.train.seed)  # parameter initialisation
    accelerator = make_accelerator(config.train)
    device = accelerator.device
    if stage == "vae":
        spec = vae_stage(config, out, device)
    elif stage == "video":
        spec = video_stage(config, out, device)
    elif stage == "action":
        spec = action_stage(config, out, device)
    else:
        spec = joint_stage(config, out, device)
    steps = max_steps if max_steps is not None else int(config.train.max_steps[stage])
    if steps < 1:
        raise ValueError(f"--max-steps must be ≥ 1, got {steps}")
    result = run(spec, config, out, steps, resume, accelerator)
    if accelerator.is_main_process:
        write_model_index(out, config)
        print(json.dumps({k: v for k, v in result.items()}, default=float))
    return result


def prepare_run(config_path: str, out: str, dataroot: str | None = None, version: str | None = None,
                vae_path: str | None = None) -> dict:
    """`python -m reworld prepare`: the train split's latents of the run folder `out` (which needs its VAE), split
    across the processes of `accelerate launch`. Stages video, action and joint do the same when files are missing."""
    out = Path(out)
    config = run_config(config_path, out, "prepare", dataroot, version, vae_path)
    accelerator = make_accelerator(config.train)
    vae = load_run_vae(out, config, "prepare").to(accelerator.device).requires_grad_(False)
    tokens = load_clip_tensors(config.data, "train", frames=False).tokens
    t0 = time.time()
    folder = prepare_latents(config, out, vae, vae_folder(out, config), "train", tokens, accelerator.device)
    result = {"folder": str(folder), "clips": len(tokens), "seconds": round(time.time() - t0, 1)}
    if accelerator.is_main_process:
        print(json.dumps(result))
    return result
