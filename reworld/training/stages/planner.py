"""Stage 2 (`action`: Video DiT frozen) and stage 3 (`joint`: Video DiT unfrozen).

The Action DiT cross-attends to the Video DiT's hidden states (`reworld.pipelines.hidden_states`: future
latents at σ = `action.feature_sigma`, context clean, blocks `video.feature_blocks`, pooled over
`action.feature_pool`² latent pixels). With `action.feature_cache` stage 2 prepares them once per clip on disk
(`reworld.training.prepare.prepare_hidden_states`: bf16, split across ranks, keyed by the Video DiT and VAE
weights and the settings, so a changed checkpoint or data makes new files) and reads each step's batch from
there (`action.feature_draws` noise draws per clip, one read per step); without it, it recomputes them every step
with fresh noise. Stage 3 recomputes them every step, because
the Video DiT it reads is training too, and keeps the Video DiT's own flow loss beside the planner's. The hard
negatives are per-clip files too (`prepare_negatives`), made by all ranks, each its share.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reworld.config import Config, ConfigError
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
    ALIGN_TARGETS,
    alignment_position,
    frame_means,
    target_frames,
    target_from_frames,
    hidden_state_blocks,
    video_hidden_states,
)
from reworld.pipelines.run_folder import vae_folder
from reworld.planning.pdm import score_trajectory
from reworld.planning.scene import PlanningScene
from reworld.sampling import plan_sample
from reworld.training.loop import StageSpec
from reworld.training.prepare import (
    HiddenStateStore,
    LatentStore,
    NegativeStore,
    check_feature_draws,
    hidden_states_folder,
    prepare_hidden_states,
    prepare_latents,
    prepare_negatives,
)
from reworld.training.stages.common import encode_clips, load_run_vae, require_component, speed_up
from reworld.training.stages.video import check_motion_feedback, motion_targets


# ---------------------------------------------------------------------------------------------- validation
def planning_validation(config: Config, action_dit, hidden_states_fn, clips: ClipTensors, scenes: list, steps: int = 10
                        ) -> dict[str, float]:
    """Mean PDMS and L2 of one sampled trajectory per held-out clip (seeded)."""
    action_dit.eval()
    feats = hidden_states_fn()
    poses = plan_sample(action_dit, feats, clips.ego_status.to(feats[0].device), clips.command.to(feats[0].device),
                        steps=steps, num_samples=1, generator=torch.Generator().manual_seed(0),
                        shift=config.loss.shift)[:, 0].cpu()
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
    negatives: NegativeStore | None  # (N, K, 8, 3) trajectories and (N, K) mask, read by index
    val_scenes: list

    def hidden_states(self, clips: ClipTensors, lat: torch.Tensor, idx, generator) -> list[torch.Tensor]:
        """Recomputed Video DiT hidden states of clips `idx` (stage 3, or validation without a cache)."""
        acfg = self.config.action
        return video_hidden_states(self.video_dit, lat[idx], clips.command[idx].to(self.device),
                                   clips.ego_status[idx].to(self.device), self.n_ctx, self.blocks,
                                   acfg.feature_sigma, acfg.feature_pool, generator)

    def target_frames(self, clips: ClipTensors, lat, idx, generator) -> torch.Tensor | None:
        """The alignment target's own pass (`action.align_sigma`; None when the target is the planner's features)."""
        acfg = self.config.action
        if acfg.align_sigma is None:
            return None
        with torch.no_grad():
            return target_frames(self.video_dit, lat[idx], clips.command[idx].to(self.device),
                                 clips.ego_status[idx].to(self.device), self.n_ctx, self.blocks[self.align_pos],
                                 acfg.align_sigma, generator)

    def planner_terms(self, action_dit, hidden: list[torch.Tensor], idx, generator,
                      frames: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Stage-2 loss terms of training clips `idx` given their Video DiT hidden states (and, with
        `action.align_sigma`, the frame means of the target's own pass)."""
        d = self.device
        acfg = self.config.action
        if frames is None:
            if acfg.align_sigma is not None:
                raise ValueError("action.align_sigma is set but the target's pass was not given")
            frames = frame_means(hidden[self.align_pos], self.train_lat.shape[2])
        target = target_from_frames(frames, self.n_ctx, acfg.align_target, acfg.num_waypoints).detach()
        neg_traj, neg_mask = self.negatives[idx] if self.negatives is not None else (None, None)
        return planner_training_losses(
            action_dit, hidden, self.train.trajectory[idx].to(d), self.train.ego_status[idx].to(d),
            self.train.command[idx].to(d), neg_traj, neg_mask, target, self.config.loss, generator)

    def stores(self) -> dict:
        """The per-clip file stores every planner step reads besides its features: the hard negatives."""
        return {"negatives": self.negatives} if self.negatives is not None else {}

    def meta(self) -> dict:
        lcfg = self.config.loss
        meta = {"lambda_align": lcfg.lambda_align, "lambda_hn": lcfg.lambda_hn}
        if self.negatives is not None:
            meta["negatives"] = self.negatives.counts()
        return meta


def planner_setup(config: Config, out: Path, device, stage: str) -> PlannerSetup:
    if config.action.align_target not in ALIGN_TARGETS:
        raise ValueError(f"action.align_target must be one of {ALIGN_TARGETS}, got {config.action.align_target!r}")
    sigma = config.action.align_sigma
    if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma <= 1):
        raise ValueError(f"action.align_sigma must be null or a σ in [0, 1], got {sigma!r}")
    vae = load_run_vae(out, config, stage).to(device).requires_grad_(False)
    video_dit = VideoDiT.from_pretrained(require_component(out / "video_dit", "a trained Video DiT (stage video)",
                                                           stage)).to(device)
    n_ctx, _ = latent_split(config.data, vae)
    blocks = hidden_state_blocks(config, video_dit)
    train = load_clip_tensors(config.data, "train", frames=False)  # conditions only: latents come from files
    val = load_clip_tensors(config.data, "val", limit=config.train.val_clips)
    folder = prepare_latents(config, out, vae, vae_folder(out, config), "train", train.tokens, device)
    train_lat, val_lat = LatentStore(folder, train.tokens, device), encode_clips(vae, val, device)
    lcfg = config.loss
    align_pos = alignment_position(config, blocks)
    use_neg = lcfg.lambda_hn > 0 or (lcfg.lambda_hinge > 0 and lcfg.hn_hinge_margin > 0)
    negatives = None
    if use_neg:  # every rank makes its share of the clips' files, then reads any clip's
        negatives = NegativeStore(prepare_negatives(config, out, "train", train.tokens), train.tokens, device)
    return PlannerSetup(config, out, device, vae_folder(out, config), video_dit, n_ctx, blocks, align_pos,
                        train, val, train_lat, val_lat, negatives, planning_scenes(config, "val", val.tokens))


def action_stage(config: Config, out: Path, device) -> StageSpec:
    """Stage 2: a new Action DiT on the frozen Video DiT's cached hidden states."""
    acfg = config.action
    check_feature_draws(acfg.feature_draws)
    s = planner_setup(config, out, device, "action")
    interval = config.data.horizon_s / config.data.num_poses
    residual = s.train.trajectory - anchor_trajectory(s.train.ego_status, acfg.num_waypoints,
                                                      s.train.trajectory.shape[-1], interval, acfg.anchor)
    mean, scale = pose_statistics(residual, per_waypoint=acfg.per_waypoint_stats)
    tcfg = s.video_dit.transformer.config
    action_dit = build_action_dit(acfg, video_dim=tcfg.num_attention_heads * tcfg.attention_head_dim,
                                  num_video_blocks=len(s.blocks), pose_mean=mean, pose_scale=scale,
                                  waypoint_interval_s=interval).to(device)
    s.video_dit.requires_grad_(False).eval()
    if acfg.feature_cache:
        def prepared(split: str, clips: ClipTensors, lat) -> HiddenStateStore:
            folder = hidden_states_folder(out, config, out / "video_dit", s.vae_dir, s.blocks, split)
            prepare_hidden_states(config, folder, s.video_dit, lat, clips.tokens, clips.command, clips.ego_status,
                                  s.n_ctx, s.blocks, device)
            return HiddenStateStore(folder, clips.tokens, s.blocks, device, draws=acfg.feature_draws,
                                    seed=config.train.seed, target=acfg.align_sigma is not None)

        train_hidden, val_store = prepared("train", s.train, s.train_lat), prepared("val", s.val, s.val_lat)
        val_hidden = val_store[slice(None)]  # `train.val_clips` clips: small

        def hidden_of(idx, generator):
            return train_hidden[idx], train_hidden.target(idx) if acfg.align_sigma is not None else None
    else:
        with torch.no_grad():
            val_hidden = s.hidden_states(s.val, s.val_lat, slice(None),
                                         torch.Generator().manual_seed(config.train.seed))

        def hidden_of(idx, generator):
            with torch.no_grad():  # the frozen Video DiT, fresh noise every step
                return (s.hidden_states(s.train, s.train_lat, idx, generator),
                        s.target_frames(s.train, s.train_lat, idx, generator))

    def step_fn(idx, generator):
        hidden, frames = hidden_of(idx, generator)
        return s.planner_terms(action_dit, hidden, idx, generator, frames)

    @torch.no_grad()
    def validate(step):
        return planning_validation(config, action_dit, lambda: val_hidden, s.val, s.val_scenes)

    def export(models):
        save_model_atomic(models["action_dit"], out / "action_dit")

    def load(ckpt: Path):
        action_dit.load_state_dict(load_model_strict(ActionDiT, ckpt / "action_dit").state_dict())

    stores = {"hidden": train_hidden} if acfg.feature_cache else {"latents": s.train_lat}
    return StageSpec("action", {"action_dit": action_dit}, [{"params": list(action_dit.parameters())}],
                     len(s.train), step_fn, validate, export, load, s.meta(), batch_size=config.train.action_batch_size,
                     stores={**stores, **s.stores()})


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
    check_motion_feedback(config)
    motion = None
    if config.loss.lambda_motion > 0:  # the Video DiT keeps its motion loss too, in the stage-1 statistics
        if video_dit.motion_head is None:
            raise ConfigError("loss.lambda_motion > 0 needs a Video DiT trained with a motion head (video.motion_block)")
        n_fut = s.train_lat.shape[2] - s.n_ctx
        motion = video_dit.motion_normalise(motion_targets(config, s.train, n_fut)).to(device)

    def step_fn(idx, generator):
        terms = s.planner_terms(action_dit, s.hidden_states(s.train, s.train_lat, idx, generator), idx, generator,
                                s.target_frames(s.train, s.train_lat, idx, generator))
        cond = VideoCond(s.train.command[idx].to(device), s.train.ego_status[idx].to(device))
        video_terms = video_training_losses(video_dit, s.train_lat[idx], s.n_ctx, cond, config.loss, generator,
                                            None if motion is None else motion[idx])
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
                     validate, export, load, s.meta(), stores={"latents": s.train_lat, **s.stores()})
