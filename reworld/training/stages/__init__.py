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
from reworld.models.vae import latent_split
from reworld.paths import resolve_dataroot
from reworld.pipelines.run_folder import vae_folder, write_model_index
from reworld.training.loop import run
from reworld.training.prepare import LatentStore, prepare_latents
from reworld.training.stages.common import check_same_model, end_run, load_run_vae, make_accelerator
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
    end_run(accelerator)
    return result


def prepare_run(config_path: str, out: str, dataroot: str | None = None, version: str | None = None,
                vae_path: str | None = None) -> dict:
    """`python -m reworld prepare`: the run folder's per-clip files, split across the processes of `accelerate
    launch`: the train split's latents (needs the run's VAE), the hard negatives (when a loss uses them) and, once
    the run has its Video DiT and `action.feature_cache` is on, the hidden states stage `action` reads. The stages
    make whatever is missing the same way."""
    from reworld.models.video_dit import VideoDiT
    from reworld.pipelines.hidden_states import hidden_state_blocks
    from reworld.training.prepare import hidden_states_folder, prepare_hidden_states, prepare_negatives
    from reworld.training.stages.common import encode_clips

    out = Path(out)
    config = run_config(config_path, out, "prepare", dataroot, version, vae_path)
    accelerator = make_accelerator(config.train)
    device = accelerator.device
    vae = load_run_vae(out, config, "prepare").to(device).requires_grad_(False)
    train = load_clip_tensors(config.data, "train", frames=False)
    t0 = time.time()
    folder = prepare_latents(config, out, vae, vae_folder(out, config), "train", train.tokens, device)
    result: dict = {"folder": str(folder), "clips": len(train.tokens)}
    lcfg = config.loss
    if lcfg.lambda_hn > 0 or (lcfg.lambda_hinge > 0 and lcfg.hn_hinge_margin > 0):
        result["negatives"] = str(prepare_negatives(config, out, "train", train.tokens))
    if config.action.feature_cache and (out / "video_dit" / "config.json").is_file():
        video_dit = VideoDiT.from_pretrained(out / "video_dit").to(device).requires_grad_(False)
        blocks = hidden_state_blocks(config, video_dit)
        n_ctx, _ = latent_split(config.data, vae)
        val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)
        for split, clips, lat in (("train", train, LatentStore(folder, train.tokens, device)),
                                  ("val", val, encode_clips(vae, val, device))):
            target = hidden_states_folder(out, config, out / "video_dit", vae_folder(out, config), blocks, split)
            prepare_hidden_states(config, target, video_dit, lat, clips.tokens, clips.command, clips.ego_status,
                                  n_ctx, blocks, device)
            result[f"hidden_states_{split}"] = str(target)
    result["seconds"] = round(time.time() - t0, 1)
    if accelerator.is_main_process:
        print(json.dumps(result))
    end_run(accelerator)
    return result
