"""Shared by the app tests (no tests here): tiny, untrained pipelines (configs/tiny.yaml), real classes,
seconds on a CPU."""
from __future__ import annotations

from pathlib import Path

import torch

TINY = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def tiny_pipeline(seed: int = 0, data_cfg=None):
    from reworld.config import load_config, replace
    from reworld.models.action_dit import build_action_dit
    from reworld.models.vae import build_vae
    from reworld.models.video_dit import video_dit_from_config
    from reworld.pipelines import WorldActionPipeline

    cfg = load_config(TINY)
    if data_cfg is not None:
        cfg = replace(cfg, data={"dataroot": data_cfg.dataroot, "version": data_cfg.version})
    torch.manual_seed(seed)
    vae = build_vae(cfg.vae)
    video = video_dit_from_config(cfg.video, in_channels=cfg.vae.latent_channels)
    with torch.no_grad():  # heads are zero-initialised; perturb them so that cosines mean something
        for p in video.heads.parameters():
            p.normal_(std=0.1)
    heads, head_dim = cfg.video.num_attention_heads, cfg.video.attention_head_dim
    action = build_action_dit(cfg.action, video_dim=heads * head_dim, num_video_blocks=cfg.video.num_layers)
    return WorldActionPipeline(cfg, vae, video, action, device="cpu")


def tiny_demo(tiny_config, out_dir, ablation_dir=None, names=("reworld", "vanilla")):
    """(demo, context) over the tiny world with two different tiny pipelines."""
    from reworld.data.loader import NuScenesClips

    from app.demo import create_demo

    dataset = NuScenesClips(tiny_config.data, split="all")
    pipes = {name: tiny_pipeline(seed=i, data_cfg=tiny_config.data) for i, name in enumerate(names)}
    demo = create_demo(pipes, dataset, out_dir=out_dir, ablation_dir=ablation_dir, cache_dir=Path(out_dir) / "cache")
    return demo, demo.reworld_context
