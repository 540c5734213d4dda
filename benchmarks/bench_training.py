"""Training-step costs at the default config (random weights), printed as JSON (medians; compare ratios,
absolute times vary with load).

- stage-2 step with cached Video DiT features (indexing a tensor, as stage `action` does) vs uncached
  (the frozen Video DiT run on the batch's latents every step): the cache's speed-up;
- stage-2 step with hard-negative supervision (λ_hn > 0, K negatives in the same forward pass) vs without
  (λ_hn = 0): its cost;
- peak resident memory (ru_maxrss) of a process that builds the default Video DiT and takes one stage-1
  step (AdamW), measured in a fresh subprocess so that nothing else in this one counts.

    .venv/bin/python -m benchmarks.bench_training [--config configs/default.yaml] [--repeats 8]   # repo root
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.timing import paired_times, ratio
from reworld.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]


def latent_shape(cfg: Config, batch: int) -> tuple[tuple[int, ...], int]:
    from reworld.models.vae import build_vae, latent_split

    vae = build_vae(dataclasses.replace(cfg.vae, pretrained=None))
    n_ctx, n_fut = latent_split(cfg.data, vae)
    s = vae.spatial_compression_ratio
    return (batch, cfg.vae.latent_channels, n_ctx + n_fut, cfg.data.image_height // s,
            cfg.data.image_width // s), n_ctx


def stage2(cfg: Config, repeats: int, clips: int) -> dict:
    from reworld.losses.planning import planner_training_losses
    from reworld.models.action_dit import build_action_dit
    from reworld.models.video_dit import config_motion_frames, video_dit_from_config
    from reworld.pipelines.hidden_states import future_token_mean, hidden_state_blocks, video_hidden_states

    batch = cfg.train.action_batch_size
    clips = max(clips, batch)  # a batch draws distinct clips, as in training
    shape, n_ctx = latent_shape(cfg, clips)
    video_dit = video_dit_from_config(dataclasses.replace(cfg.video, pretrained=None), shape[1],
                                      motion_frames=config_motion_frames(cfg))
    video_dit.requires_grad_(False).eval()  # frozen in stage 2
    blocks = hidden_state_blocks(cfg, video_dit)
    acfg = cfg.action
    align_pos = blocks.index(acfg.align_video_block) if acfg.align_video_block in blocks else len(blocks) // 2
    width = video_dit.transformer.config.num_attention_heads * video_dit.transformer.config.attention_head_dim
    action_dit = build_action_dit(acfg, video_dim=width, num_video_blocks=len(blocks))
    opt = torch.optim.AdamW(action_dit.parameters(), lr=cfg.train.lr)

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(shape, generator=g)
    command = torch.randint(0, 3, (clips,), generator=g)
    ego = torch.randn(clips, 3, generator=g)
    poses = torch.randn(clips, 8, 3, generator=g).cumsum(1)
    k = cfg.loss.hn_num_negatives
    negatives = poses[:, None] + 0.5 * torch.randn(clips, k, 8, 3, generator=g)
    mask = torch.ones(clips, k, dtype=torch.bool)
    t0 = time.perf_counter()
    with torch.no_grad():  # the cache: features of every clip, once
        cache = [torch.cat(parts) for parts in zip(*[
            video_hidden_states(video_dit, latents[i:i + 8], command[i:i + 8], ego[i:i + 8], n_ctx, blocks,
                           acfg.feature_sigma, acfg.feature_pool, torch.Generator().manual_seed(i))
            for i in range(0, clips, 8)])]
    cache_s_per_clip = (time.perf_counter() - t0) / clips
    with_hn = dataclasses.replace(cfg.loss, lambda_hn=cfg.loss.lambda_hn or 0.2)
    without_hn = dataclasses.replace(cfg.loss, lambda_hn=0.0, lambda_hinge=0.0)
    step_no = [0]

    def step(cached: bool, loss_cfg) -> None:
        step_no[0] += 1
        gen = torch.Generator().manual_seed(step_no[0])
        idx = torch.randperm(clips, generator=gen)[:batch]
        if cached:
            feats = [f[idx] for f in cache]
        else:
            with torch.no_grad():
                feats = video_hidden_states(video_dit, latents[idx], command[idx], ego[idx], n_ctx, blocks,
                                       acfg.feature_sigma, acfg.feature_pool, gen)
        target = future_token_mean(feats[align_pos], n_ctx, shape[2]).detach()
        use_neg = loss_cfg.lambda_hn > 0 or (loss_cfg.lambda_hinge > 0 and loss_cfg.hn_hinge_margin > 0)
        terms = planner_training_losses(action_dit, feats, poses[idx], ego[idx], command[idx],
                                        negatives[idx] if use_neg else None, mask[idx] if use_neg else None,
                                        target, loss_cfg, gen)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()

    step(True, with_hn), step(False, with_hn), step(True, without_hn)  # warm-up (AdamW state)
    uncached, cached = paired_times(lambda: step(False, with_hn), lambda: step(True, with_hn), repeats)
    hn, plain = paired_times(lambda: step(True, with_hn), lambda: step(True, without_hn), repeats)
    return {
        "batch": batch, "feature_blocks": len(blocks), "feature_tokens": cache[0].shape[1],
        "feature_dim": cache[0].shape[2], "negatives_k": k,
        "action_params_M": round(sum(p.numel() for p in action_dit.parameters()) / 1e6, 3),
        "cache_build_s_per_clip": round(cache_s_per_clip, 4),
        "step_cached_s": round(statistics.median(cached), 4),
        "step_uncached_s": round(statistics.median(uncached), 4),
        "uncached_over_cached": ratio(uncached, cached),
        "step_hn_s": round(statistics.median(hn), 4),
        "step_no_hn_s": round(statistics.median(plain), 4),
        "hn_over_no_hn": ratio(hn, plain),
    }


def stage1_memory_child(config: str) -> None:
    """Run in a fresh process: peak RSS before the Video DiT is built (imports, a VAE for the latent shape),
    then after one stage-1 step (forward, backward, AdamW)."""
    from reworld.losses.flow import video_training_losses
    from reworld.models.video_dit import VideoCond, config_motion_frames, video_dit_from_config

    cfg = load_config(config) if Path(config).is_file() else Config()
    shape, n_ctx = latent_shape(cfg, cfg.train.batch_size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = video_dit_from_config(dataclasses.replace(cfg.video, pretrained=None), shape[1],
                                  motion_frames=config_motion_frames(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(shape, generator=g)
    cond = VideoCond(command=torch.randint(0, 3, (shape[0],), generator=g), ego_status=torch.randn(shape[0], 3))
    t0 = time.perf_counter()
    losses = video_training_losses(model, latents, n_ctx, cond, cfg.loss, g)
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    opt.step()
    step_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"batch": shape[0], "latent_shape": list(shape),
                      "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                      "rss_before_model_MB": round(base / 1024, 1), "peak_rss_MB": round(peak / 1024, 1),
                      "step_added_MB": round((peak - base) / 1024, 1), "first_step_s": round(step_s, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--clips", type=int, default=64, help="clips in the feature cache")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return stage1_memory_child(args.config)
    cfg = load_config(args.config) if Path(args.config).is_file() else Config()
    torch.manual_seed(0)
    child = subprocess.run([sys.executable, "-m", "benchmarks.bench_training", "--config", args.config,
                            "--memory-child"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"stage-1 memory child failed:\n{child.stderr[-2000:]}")
    result = {"config": cfg.name, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "stage2": stage2(cfg, args.repeats, args.clips),
              "stage1_memory": json.loads(child.stdout.strip().splitlines()[-1])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
