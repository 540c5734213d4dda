"""Stage 2 (`action`: Video DiT frozen, its hidden states cached) and stage 3 (`joint`: Video DiT unfrozen).

The Action DiT cross-attends to the Video DiT's hidden states (`reworld.pipelines.hidden_states`: future
latents at σ = `action.feature_sigma`, context clean, blocks `video.feature_blocks`, pooled over
`action.feature_pool`² latent pixels). Stage 2 computes them once per clip (noise from a generator seeded by
the clip index) and caches them on disk under a key made of the Video DiT and VAE weights, the clip tokens
and the settings, so a changed checkpoint or data rebuilds the cache. Stage 3 recomputes them every step,
because the Video DiT it reads is training too, and keeps the Video DiT's own flow loss beside the planner's.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from reworld.config import Config
from reworld.data.clips import ClipTensors, load_clip_tensors
from reworld.data.loader import NuScenesClips
from reworld.losses.flow import video_training_losses
from reworld.losses.planning import planner_training_losses
from reworld.models.action_dit import (
    ActionDiT,
    anchor_trajectory,
    build_action_dit,
    pose_statistics,
)
from reworld.models.layers import load_model_strict, save_model_atomic
from reworld.models.vae import latent_split
from reworld.models.video_dit import VideoCond, VideoDiT
from reworld.pipelines.hidden_states import (
    future_token_mean,
    hidden_state_blocks,
    video_hidden_states,
)
from reworld.pipelines.run_folder import vae_folder
from reworld.planning.hard_negatives import generate_hard_negatives
from reworld.planning.pdm import score_trajectory
from reworld.planning.scene import PlanningScene
from reworld.sampling import plan_sample
from reworld.training.loop import StageSpec
from reworld.training.prepare import LatentStore, file_digest, prepare_latents
from reworld.training.stages.common import encode_clips, load_run_vae, require_component, speed_up


# ---------------------------------------------------------------------------------------------- hidden-state cache
def cache_key(out: Path, config: Config, tokens: list[str], blocks: list[int], vae_dir: Path) -> str:
    doc = {"video": file_digest(out / "video_dit"), "vae": file_digest(vae_dir), "tokens": tokens,
           "blocks": blocks, "sigma": config.action.feature_sigma, "pool": config.action.feature_pool,
           "data": [config.data.image_height, config.data.image_width, config.data.context_frames,
                    config.data.future_frames, config.data.frame_rate]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def cached_hidden_states(out: Path, config: Config, video_dit, latents: torch.Tensor, clips: ClipTensors,
                         n_ctx: int, blocks: list[int], vae_dir: Path, name: str, device,
                         batch: int = 8) -> list[torch.Tensor]:
    """Video DiT hidden states of every clip, from `OUT/cache/<name>-<key>.safetensors` when its key matches."""
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
        feats = video_hidden_states(video_dit, latents[sl], clips.command[sl].to(device),
                                    clips.ego_status[sl].to(device), n_ctx, blocks, config.action.feature_sigma,
                                    config.action.feature_pool, g)
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
    k = config.loss.hn_num_negatives
    key = hashlib.sha256(json.dumps([tokens, k, config.train.seed]).encode()).hexdigest()[:20]
    path = out / "cache" / f"negatives-{split}-{key}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        counts = json.loads((path.with_suffix(".json")).read_text())
        return Negatives(stored["trajectories"], stored["mask"].bool(), counts)
    ds = NuScenesClips(config.data, split=split, geometry=True, frames=False)  # geometry only: no image decoded
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
def planning_validation(config: Config, action_dit, hidden_states_fn, clips: ClipTensors, scenes: list, steps: int = 10
                        ) -> dict[str, float]:
    """Mean PDMS and L2 of one sampled trajectory per held-out clip (seeded)."""
    action_dit.eval()
    feats = hidden_states_fn()
    poses = plan_sample(action_dit, feats, clips.ego_status.to(feats[0].device), clips.command.to(feats[0].device),
                        steps=steps, num_samples=1, generator=torch.Generator().manual_seed(0))[:, 0].cpu()
    results = [score_trajectory(s, p.numpy()) for s, p in zip(scenes, poses)]
    l2 = (poses[..., :2] - clips.trajectory[..., :2]).norm(dim=-1).mean()
    return {**{k: float(np.mean([getattr(r, k) for r in results])) for k in ("pdms", "nc", "dac", "c")},
            "l2": float(l2)}


def planning_scenes(config: Config, split: str, tokens: list[str]) -> list:
    ds = NuScenesClips(config.data, split=split, geometry=True, frames=False)  # geometry only: no image decoded
    index = {ref.sample_token: i for i, ref in enumerate(ds.samples)}
    return [PlanningScene.from_clip(ds[index[t]]) for t in tokens]


# ---------------------------------------------------------------------------------------------- stages
@dataclass
class PlannerSetup:
    """What stages `action` and `joint` both start from: the frozen VAE, the Video DiT, the clips encoded to
    latents, the hard negatives and the held-out scenes."""

    config: Config
    out: Path
    device: torch.device
    vae_dir: Path
    video_dit: VideoDiT
    n_ctx: int
    blocks: list[int]  # Video DiT blocks the Action DiT reads
    align_pos: int  # index into `blocks` of the alignment target block
    train: ClipTensors
    val: ClipTensors
    train_lat: LatentStore  # (N, C, t, h, w), read from the prepared files by index
    val_lat: torch.Tensor
    negatives: Negatives | None
    val_scenes: list

    def hidden_states(self, clips: ClipTensors, lat: torch.Tensor, idx, generator) -> list[torch.Tensor]:
        """Recomputed Video DiT hidden states of clips `idx` (stage 3, or validation without a cache)."""
        acfg = self.config.action
        return video_hidden_states(self.video_dit, lat[idx], clips.command[idx].to(self.device),
                                   clips.ego_status[idx].to(self.device), self.n_ctx, self.blocks,
                                   acfg.feature_sigma, acfg.feature_pool, generator)

    def planner_terms(self, action_dit, hidden: list[torch.Tensor], idx, generator) -> dict[str, torch.Tensor]:
        """Stage-2 loss terms of training clips `idx` given their Video DiT hidden states."""
        d, neg = self.device, self.negatives
        target = future_token_mean(hidden[self.align_pos], self.n_ctx, self.train_lat.shape[2]).detach()
        return planner_training_losses(
            action_dit, hidden, self.train.trajectory[idx].to(d), self.train.ego_status[idx].to(d),
            self.train.command[idx].to(d),
            neg.trajectories[idx].to(d) if neg is not None else None,
            neg.mask[idx].to(d) if neg is not None else None,
            target, self.config.loss, generator)

    def meta(self) -> dict:
        lcfg = self.config.loss
        meta = {"lambda_align": lcfg.lambda_align, "lambda_hn": lcfg.lambda_hn}
        if self.negatives is not None:
            meta["negatives"] = self.negatives.counts
        return meta


def planner_setup(config: Config, out: Path, device, stage: str) -> PlannerSetup:
    vae = load_run_vae(out, config, stage).to(device).requires_grad_(False)
    video_dit = VideoDiT.from_pretrained(require_component(out / "video_dit", "a trained Video DiT (stage video)",
                                                           stage)).to(device)
    n_ctx, _ = latent_split(config.data, vae)
    blocks = hidden_state_blocks(config, video_dit)
    train = load_clip_tensors(config.data, "train", frames=False)  # conditions only: latents come from files
    val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)
    folder = prepare_latents(config, out, vae, vae_folder(out, config), "train", train.tokens, device)
    train_lat, val_lat = LatentStore(folder, train.tokens, device), encode_clips(vae, val, device)
    lcfg, acfg = config.loss, config.action
    align_pos = blocks.index(acfg.align_video_block) if acfg.align_video_block in blocks else len(blocks) // 2
    use_neg = lcfg.lambda_hn > 0 or (lcfg.lambda_hinge > 0 and lcfg.hn_hinge_margin > 0)
    negatives = rank0_first(lambda: hard_negatives_for(config, "train", train.tokens, out)) if use_neg else None
    return PlannerSetup(config, out, device, vae_folder(out, config), video_dit, n_ctx, blocks, align_pos,
                        train, val, train_lat, val_lat, negatives, planning_scenes(config, "val", val.tokens))


def action_stage(config: Config, out: Path, device) -> StageSpec:
    """Stage 2: a new Action DiT on the frozen Video DiT's cached hidden states."""
    s = planner_setup(config, out, device, "action")
    acfg = config.action
    interval = config.data.horizon_s / config.data.num_poses
    residual = s.train.trajectory - anchor_trajectory(s.train.ego_status, acfg.num_waypoints,
                                                      s.train.trajectory.shape[-1], interval, acfg.anchor)
    mean, scale = pose_statistics(residual, per_waypoint=acfg.per_waypoint_stats)
    tcfg = s.video_dit.transformer.config
    action_dit = build_action_dit(acfg, video_dim=tcfg.num_attention_heads * tcfg.attention_head_dim,
                                  num_video_blocks=len(s.blocks), pose_mean=mean, pose_scale=scale,
                                  waypoint_interval_s=interval).to(device)
    s.video_dit.requires_grad_(False).eval()
    train_hidden = rank0_first(lambda: cached_hidden_states(out, config, s.video_dit, s.train_lat, s.train, s.n_ctx,
                                                            s.blocks, s.vae_dir, "features-train", device))
    val_hidden = rank0_first(lambda: cached_hidden_states(out, config, s.video_dit, s.val_lat, s.val, s.n_ctx,
                                                          s.blocks, s.vae_dir, "features-val", device))

    def step_fn(idx, generator):
        return s.planner_terms(action_dit, [h[idx] for h in train_hidden], idx, generator)

    @torch.no_grad()
    def validate(step):
        return planning_validation(config, action_dit, lambda: val_hidden, s.val, s.val_scenes)

    def export(models):
        save_model_atomic(models["action_dit"], out / "action_dit")

    def load(ckpt: Path):
        action_dit.load_state_dict(load_model_strict(ActionDiT, ckpt / "action_dit").state_dict())

    return StageSpec("action", {"action_dit": action_dit}, [{"params": list(action_dit.parameters())}],
                     len(s.train), step_fn, validate, export, load, s.meta(), batch_size=config.train.action_batch_size)


def joint_stage(config: Config, out: Path, device) -> StageSpec:
    """Stage 3: the stage-2 Action DiT and the Video DiT fine-tuned together, each at its own learning rate;
    the Video DiT keeps its flow loss so it stays a world model while it adapts to planning."""
    s = planner_setup(config, out, device, "joint")
    action_dit = load_model_strict(ActionDiT, require_component(out / "action_dit",
                                                                "a trained Action DiT (stage action)", "joint"))
    action_dit = action_dit.to(device)
    video_dit = s.video_dit.requires_grad_(True)
    speed_up(video_dit, config.train)
    params = [{"params": list(action_dit.parameters()), "lr": config.train.lr_action_joint},
              {"params": list(video_dit.parameters()), "lr": config.train.lr_video_joint}]

    def step_fn(idx, generator):
        terms = s.planner_terms(action_dit, s.hidden_states(s.train, s.train_lat, idx, generator), idx, generator)
        cond = VideoCond(s.train.command[idx].to(device), s.train.ego_status[idx].to(device))
        video_terms = video_training_losses(video_dit, s.train_lat[idx], s.n_ctx, cond, config.loss, generator)
        return {**terms, "video": video_terms["total"], "total": terms["total"] + video_terms["total"]}

    @torch.no_grad()
    def validate(step):
        video_dit.eval()
        generator = torch.Generator().manual_seed(config.train.seed)
        return planning_validation(config, action_dit,
                                   lambda: s.hidden_states(s.val, s.val_lat, slice(None), generator), s.val,
                                   s.val_scenes)

    def export(models):
        save_model_atomic(models["action_dit"], out / "action_dit")
        save_model_atomic(models["video_dit"], out / "video_dit")

    def load(ckpt: Path):
        action_dit.load_state_dict(load_model_strict(ActionDiT, ckpt / "action_dit").state_dict())
        video_dit.load_state_dict(VideoDiT.from_pretrained(ckpt / "video_dit").state_dict())

    return StageSpec("joint", {"action_dit": action_dit, "video_dit": video_dit}, params, len(s.train), step_fn,
                     validate, export, load, s.meta())
