"""Stage 2 (`action`: Video DiT frozen, cached features) and stage 3 (`joint`: Video DiT unfrozen).

The Video DiT is run once per clip with the future latents at σ = `action.feature_sigma` (noise drawn
from a generator seeded by the clip index) and the context clean; the hidden states of the feature
blocks, average-pooled over `action.feature_pool`² latent pixels, are what the Action DiT
cross-attends to. Stage 2 caches them on disk under a key made of the Video DiT and VAE weights, the
clip tokens and the feature settings, so a changed checkpoint or data rebuilds the cache.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..config import Config
from ..data.loader import NuScenesClips
from ..models.layers import save_model_atomic
from .data import ClipTensors, load_clip_tensors
from .loop import StageSpec
from .stages import _load_vae, _require, encode_clips


# ---------------------------------------------------------------------------------------------- features
def feature_blocks(config: Config, video_dit) -> list[int]:
    n = len(video_dit.transformer.transformer_blocks)
    blocks = list(config.video.feature_blocks) or list(range(n))
    if any(b < 0 or b >= n for b in blocks):
        raise ValueError(f"video.feature_blocks {blocks} outside the Video DiT's {n} blocks")
    return blocks


def video_features(video_dit, latents: torch.Tensor, command: torch.Tensor, ego: torch.Tensor, n_ctx: int,
                   blocks: list[int], sigma: float, pool: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Hidden states of `blocks` for clean latents (B, C, t, h, w): future frames noised to `sigma`.
    Returns one (B, S', D) per block, S' = t · (h/pool) · (w/pool)."""
    from ..models.video_dit import VideoCond

    b, c, t, h, w = latents.shape
    noise = torch.randn(latents[:, :, n_ctx:].shape, generator=generator).to(latents)
    future = (1 - sigma) * latents[:, :, n_ctx:] + sigma * noise
    x = torch.cat([latents[:, :, :n_ctx], future], dim=2)  # (B, C, t, h, w)
    out = video_dit(x, torch.full((b,), sigma, device=latents.device), VideoCond(command, ego), n_ctx,
                    return_hidden_states=blocks)
    feats = []
    for k in blocks:
        hs = out.hidden_states[k]  # (B, t·h·w, D)
        if pool > 1:
            d = hs.shape[-1]
            hs = hs.view(b * t, h, w, d).permute(0, 3, 1, 2)
            hs = torch.nn.functional.avg_pool2d(hs, pool)  # (B·t, D, h/p, w/p)
            hs = hs.permute(0, 2, 3, 1).reshape(b, -1, d)  # (B, S', D)
        feats.append(hs)
    return feats


def future_token_mean(features: torch.Tensor, n_ctx: int, t: int) -> torch.Tensor:
    """Mean over the future latent frames' tokens: (B, S', D) → (B, D)."""
    per_frame = features.shape[1] // t
    return features[:, n_ctx * per_frame:].mean(dim=1)


def _file_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_key(out: Path, config: Config, tokens: list[str], blocks: list[int], vae_dir: Path) -> str:
    doc = {"video": _file_digest(out / "video_dit"), "vae": _file_digest(vae_dir), "tokens": tokens,
           "blocks": blocks, "sigma": config.action.feature_sigma, "pool": config.action.feature_pool,
           "data": [config.data.image_height, config.data.image_width, config.data.context_frames,
                    config.data.future_frames, config.data.frame_rate]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def cached_features(out: Path, config: Config, video_dit, latents: torch.Tensor, clips: ClipTensors, n_ctx: int,
                    blocks: list[int], vae_dir: Path, name: str, device, batch: int = 8) -> list[torch.Tensor]:
    """Features of every clip, from `OUT/cache/<name>-<key>.safetensors` when its key matches."""
    key = cache_key(out, config, clips.tokens, blocks, vae_dir)
    path = out / "cache" / f"{name}-{key}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        return [stored[f"block{k}"].float().to(device) for k in blocks]
    video_dit.eval()
    parts: list[list[torch.Tensor]] = [[] for _ in blocks]
    for i in range(0, len(clips), batch):
        sl = slice(i, i + batch)
        g = torch.Generator().manual_seed(config.train.seed * 7919 + i)
        feats = video_features(video_dit, latents[sl], clips.command[sl].to(device), clips.ego_status[sl].to(device),
                               n_ctx, blocks, config.action.feature_sigma, config.action.feature_pool, g)
        for j, f in enumerate(feats):
            parts[j].append(f.half().cpu())
    tensors = {f"block{k}": torch.cat(p) for k, p in zip(blocks, parts)}
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{name}-*.safetensors"):
        old.unlink()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    return [tensors[f"block{k}"].float().to(device) for k in blocks]


def rank0_first(build):
    """Run `build` on rank 0 first (it writes the cache), then on the other ranks (they read it)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return build()
    if dist.get_rank() == 0:
        out = build()
        dist.barrier()
        return out
    dist.barrier()
    return build()


# ---------------------------------------------------------------------------------------------- negatives
@dataclass
class Negatives:
    trajectories: torch.Tensor  # (N, K, 8, 3)
    mask: torch.Tensor  # (N, K) bool
    counts: dict


def hard_negatives_for(config: Config, split: str, tokens: list[str], out: Path) -> Negatives:
    """K hard negatives per clip from the generator (cached by clip tokens and K)."""
    from ..metrics.hard_negatives import generate_hard_negatives
    from ..metrics.scene import PlanningScene

    k = config.loss.hn_num_negatives
    key = hashlib.sha256(json.dumps([tokens, k, config.train.seed]).encode()).hexdigest()[:20]
    path = out / "cache" / f"negatives-{split}-{key}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        counts = json.loads((path.with_suffix(".json")).read_text())
        return Negatives(stored["trajectories"], stored["mask"].bool(), counts)
    ds = NuScenesClips(config.data, split=split, geometry=True)
    index = {ref.sample_token: i for i, ref in enumerate(ds.samples)}
    trajs = torch.zeros(len(tokens), k, 8, 3)
    mask = torch.zeros(len(tokens), k, dtype=torch.bool)
    counts: dict[str, int] = {}
    for n, token in enumerate(tokens):
        clip = ds[index[token]]
        scene = PlanningScene.from_clip(clip)
        hn = generate_hard_negatives(scene, clip.target.trajectory.numpy(), k=k, seed=config.train.seed + n)
        m = len(hn.trajectories)
        if m:
            trajs[n, :m] = torch.from_numpy(np.asarray(hn.trajectories, dtype=np.float32))
            mask[n, :m] = True
        for kind, c in hn.counts.items():
            counts[kind] = counts.get(kind, 0) + int(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"trajectories": trajs, "mask": mask.to(torch.uint8)}, str(path))
    path.with_suffix(".json").write_text(json.dumps(counts))
    return Negatives(trajs, mask, counts)


# ---------------------------------------------------------------------------------------------- validation
def planning_validation(config: Config, action_dit, features_fn, clips: ClipTensors, scenes: list, steps: int = 10
                        ) -> dict[str, float]:
    """Mean PDMS and L2 of one sampled trajectory per held-out clip (seeded)."""
    from ..metrics.pdm import score_trajectory
    from ..models.action_dit import plan_sample

    action_dit.eval()
    feats = features_fn()
    poses = plan_sample(action_dit, feats, clips.ego_status.to(feats[0].device), clips.command.to(feats[0].device),
                        steps=steps, num_samples=1, generator=torch.Generator().manual_seed(0))[:, 0].cpu()
    results = [score_trajectory(s, p.numpy()) for s, p in zip(scenes, poses)]
    l2 = (poses[..., :2] - clips.trajectory[..., :2]).norm(dim=-1).mean()
    return {**{k: float(np.mean([getattr(r, k) for r in results])) for k in ("pdms", "nc", "dac", "c")},
            "l2": float(l2)}


def planning_scenes(config: Config, split: str, tokens: list[str]) -> list:
    from ..metrics.scene import PlanningScene

    ds = NuScenesClips(config.data, split=split, geometry=True)
    index = {ref.sample_token: i for i, ref in enumerate(ds.samples)}
    return [PlanningScene.from_clip(ds[index[t]]) for t in tokens]


# ---------------------------------------------------------------------------------------------- stages
def planner_stage(stage: str, config: Config, out: Path, device, vae_path: str | None) -> StageSpec:
    from ..losses.flow import video_training_losses
    from ..losses.planning import planner_training_losses
    from ..models.action_dit import ActionDiT, anchor_trajectory, build_action_dit, pose_statistics
    from ..models.layers import load_model_strict
    from ..models.vae import latent_split
    from ..models.video_dit import VideoCond, VideoDiT

    vae = _load_vae(out, config, vae_path, stage).to(device).requires_grad_(False)
    vae_dir = Path(vae_path) if vae_path else Path(config.vae.pretrained) if config.vae.pretrained else out / "vae"
    video_dit = VideoDiT.from_pretrained(_require(out / "video_dit", "a trained Video DiT (stage video)", stage))
    video_dit = video_dit.to(device)
    n_ctx, _ = latent_split(config.data, vae)
    blocks = feature_blocks(config, video_dit)
    train = load_clip_tensors(config.data, "train")
    val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)
    train_lat, val_lat = encode_clips(vae, train, device), encode_clips(vae, val, device)
    t_lat = train_lat.shape[2]
    lcfg, acfg = config.loss, config.action
    align_pos = blocks.index(acfg.align_video_block) if acfg.align_video_block in blocks else len(blocks) // 2
    use_neg = lcfg.lambda_hn > 0 or (lcfg.lambda_hinge > 0 and lcfg.hn_hinge_margin > 0)
    negatives = rank0_first(lambda: hard_negatives_for(config, "train", train.tokens, out)) if use_neg else None
    val_scenes = planning_scenes(config, "val", val.tokens)

    if stage == "action":
        interval = config.data.horizon_s / config.data.num_poses
        residual = train.trajectory - anchor_trajectory(train.ego_status, acfg.num_waypoints,
                                                        train.trajectory.shape[-1], interval, acfg.anchor)
        mean, scale = pose_statistics(residual, per_waypoint=acfg.per_waypoint_stats)
        action_dit = build_action_dit(acfg, video_dim=video_dit.transformer.config.num_attention_heads
                                      * video_dit.transformer.config.attention_head_dim,
                                      num_video_blocks=len(blocks), pose_mean=mean, pose_scale=scale,
                                      waypoint_interval_s=interval).to(device)
        video_dit.requires_grad_(False).eval()
        train_feats = rank0_first(lambda: cached_features(out, config, video_dit, train_lat, train, n_ctx, blocks,
                                                          vae_dir, "features-train", device))
        val_feats = rank0_first(lambda: cached_features(out, config, video_dit, val_lat, val, n_ctx, blocks, vae_dir,
                                                        "features-val", device))
        models = {"action_dit": action_dit}
        params = [{"params": list(action_dit.parameters())}]
    else:
        action_dit = load_model_strict(ActionDiT, _require(out / "action_dit", "a trained Action DiT (stage action)",
                                                           stage)).to(device)
        video_dit.requires_grad_(True)
        models = {"action_dit": action_dit, "video_dit": video_dit}
        params = [{"params": list(action_dit.parameters()), "lr": config.train.lr_action_joint},
                  {"params": list(video_dit.parameters()), "lr": config.train.lr_video_joint}]
        train_feats = val_feats = None

    def feats_of(clips, lat, idx, generator):
        return video_features(video_dit, lat[idx], clips.command[idx].to(device), clips.ego_status[idx].to(device),
                              n_ctx, blocks, acfg.feature_sigma, acfg.feature_pool, generator)

    def step_fn(idx, generator):
        if train_feats is not None:
            feats = [f[idx] for f in train_feats]
        else:
            feats = feats_of(train, train_lat, idx, generator)
        target = future_token_mean(feats[align_pos], n_ctx, t_lat).detach()
        terms = planner_training_losses(
            action_dit, feats, train.trajectory[idx].to(device), train.ego_status[idx].to(device),
            train.command[idx].to(device),
            negatives.trajectories[idx].to(device) if negatives is not None else None,
            negatives.mask[idx].to(device) if negatives is not None else None,
            target, lcfg, generator)
        if stage == "joint":  # keep the Video DiT a world model while it adapts to planning
            cond = VideoCond(train.command[idx].to(device), train.ego_status[idx].to(device))
            video_terms = video_training_losses(video_dit, train_lat[idx], n_ctx, cond, lcfg, generator)
            terms = {**terms, "video": video_terms["total"], "total": terms["total"] + video_terms["total"]}
        return terms

    @torch.no_grad()
    def validate(step):
        video_dit.eval()
        if val_feats is not None:
            fn = lambda: val_feats  # noqa: E731
        else:
            fn = lambda: feats_of(val, val_lat, slice(None), torch.Generator().manual_seed(config.train.seed))  # noqa: E731
        return planning_validation(config, action_dit, fn, val, val_scenes)

    def export(models):
        save_model_atomic(models["action_dit"], out / "action_dit")
        if stage == "joint":
            save_model_atomic(models["video_dit"], out / "video_dit")

    def load(ckpt: Path):
        action_dit.load_state_dict(load_model_strict(ActionDiT, ckpt / "action_dit").state_dict())
        if stage == "joint":
            video_dit.load_state_dict(VideoDiT.from_pretrained(ckpt / "video_dit").state_dict())

    meta = {"lambda_align": lcfg.lambda_align, "lambda_hn": lcfg.lambda_hn}
    if negatives is not None:
        meta["negatives"] = negatives.counts
    return StageSpec(stage, models, params, len(train), step_fn, validate, export, load, meta,
                     batch_size=config.train.action_batch_size if stage == "action" else None)
