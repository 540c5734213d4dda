"""Action DiT: a trajectory diffusion transformer that reads the Video DiT layer by layer (DriveLaW's
action expert, docs/design.md §2).

One action block per Video DiT block it reads: adaLN-Zero from (action timestep + ego/command embedding)
→ self-attention over the waypoint tokens → cross-attention to that video block's hidden states → MLP.
Poses are flow-matched in a normalised space: the residual from a kinematic anchor (with
`anchor="constant_velocity"`, the current speed held straight ahead — the constant-velocity baseline), scaled
per waypoint and coordinate to about [−1, 1] (statistics in the config): `x_t = (1 − σ) x0 + σ ε`, the model
predicts `v = ε − x0`. Anchoring makes the near waypoints, whose residuals are centimetres, as precise in
metres as the far ones: with one scale for the whole horizon, an error that is small in normalised units
is a few decimetres at 0.5 s, which the comfort limits see as a jerk.

Video features may have a smaller batch than the waypoints: with video batch B, every other input may
have batch B·R, sample i reading video sample i // R (the order of `repeat_interleave(R, dim=0)`). The
repeats are folded into the query tokens of the cross-attention, so the video keys/values are neither
copied nor recomputed per negative or per sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from reworld.config import ActionConfig
from reworld.models.layers import TIMESTEP_SCALE

_STAT_EPS = 1e-3  # smallest half-range of a coordinate, so a constant coordinate does not divide by 0


@dataclass
class ActionDiTOutput(BaseOutput):
    sample: torch.Tensor  # (B, N, P) velocity ε − x0 in normalised pose space
    features: dict[int, torch.Tensor] | None = None  # block index → (B, N, width) block outputs
    pooled: torch.Tensor | None = None  # (B, width) mean over waypoints of block `align_block`
    projected: torch.Tensor | None = None  # (B, N, D_video) projector(block `align_block` tokens)


ANCHORS = ("none", "constant_velocity")


def anchor_trajectory(ego_status: torch.Tensor, num_waypoints: int, pose_dim: int, interval_s: float,
                      kind: str) -> torch.Tensor | float:
    """The kinematic anchor the planner predicts a residual from: (..., E) ego status → (..., N, P) poses.
    "constant_velocity": the current speed (ego_status[..., 0]) held straight ahead, heading 0; "none": 0."""
    if kind == "none":
        return 0.0
    if kind != "constant_velocity":
        raise ValueError(f"unknown anchor {kind!r}; expected one of {ANCHORS}")
    t = interval_s * torch.arange(1, num_waypoints + 1, device=ego_status.device, dtype=ego_status.dtype)  # (N,)
    anchor = ego_status.new_zeros((*ego_status.shape[:-1], num_waypoints, pose_dim))  # (..., N, P)
    anchor[..., 0] = ego_status[..., 0, None] * t
    return anchor


def pose_statistics(trajectories: torch.Tensor, per_waypoint: bool = False) -> tuple[list, list]:
    """Centre and half-range of (M, N, P) trajectories (or anchor residuals), so that `(pose − mean) / scale`
    lies in [−1, 1] on them: per coordinate (P values each), or with `per_waypoint` per waypoint and
    coordinate (N lists of P values)."""
    if trajectories.ndim != 3 or trajectories.shape[0] == 0:
        raise ValueError(f"expected non-empty (M, N, P) trajectories, got {tuple(trajectories.shape)}")
    flat = trajectories.double() if per_waypoint else trajectories.reshape(-1, trajectories.shape[-1]).double()
    lo, hi = flat.min(dim=0).values, flat.max(dim=0).values  # (N, P) or (P,)
    mean = (hi + lo) / 2
    scale = ((hi - lo) / 2).clamp_min(_STAT_EPS)
    return mean.tolist(), scale.tolist()


class Attention(nn.Module):
    """Multi-head attention; `kv_dim` ≠ dim makes it a cross-attention. With a key/value batch B and a
    query batch B·R, the R query groups of a video sample attend to the same keys (see module doc)."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(kv_dim, dim)
        self.to_v = nn.Linear(kv_dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        bq, n, d = x.shape
        bk, s, _ = context.shape
        r = bq // bk  # query groups per key/value sample (checked by ActionDiT.forward)
        h = self.num_heads
        q = self.to_q(x).reshape(bk, r * n, h, d // h).transpose(1, 2)  # (Bk, h, R·N, d/h)
        k = self.to_k(context).reshape(bk, s, h, d // h).transpose(1, 2)  # (Bk, h, S, d/h)
        v = self.to_v(context).reshape(bk, s, h, d // h).transpose(1, 2)  # (Bk, h, S, d/h)
        out = F.scaled_dot_product_attention(q, k, v)  # (Bk, h, R·N, d/h)
        out = out.transpose(1, 2).reshape(bq, n, d)  # (B·R, N, d)
        return self.to_out(out)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class ActionBlock(nn.Module):
    """adaLN-Zero block: self-attention over waypoints, cross-attention to one video block, MLP."""

    def __init__(self, width: int, num_heads: int, video_dim: int, mlp_ratio: float):
        super().__init__()
        self.norm_self = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(width, num_heads)
        self.norm_cross = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm_video = nn.LayerNorm(video_dim, eps=1e-6)
        self.cross_attn = Attention(width, num_heads, kv_dim=video_dim)
        self.norm_mlp = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        # shift/scale/gate for each of the three sub-layers
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 9 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        # x (B·R, N, W); c (B·R, W); video (B, S, D_video)
        mods = self.ada(c).chunk(9, dim=-1)  # 9 × (B·R, W)
        x = x + mods[2][:, None] * self.self_attn(_modulate(self.norm_self(x), mods[0], mods[1]))
        ctx = self.norm_video(video.to(x.dtype))  # (B, S, D_video)
        x = x + mods[5][:, None] * self.cross_attn(_modulate(self.norm_cross(x), mods[3], mods[4]), ctx)
        x = x + mods[8][:, None] * self.mlp(_modulate(self.norm_mlp(x), mods[6], mods[7]))
        return x  # (B·R, N, W)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)  # (B, W) each
        return self.linear(_modulate(self.norm(x), shift, scale))  # (B, N, P)


class ActionDiT(ModelMixin, ConfigMixin):
    """Trajectory flow-matching transformer conditioned layer-wise on Video DiT hidden states."""

    _fsdp_units = ("projector",)  # `project` is called outside forward (reworld.training.sharding)

    @register_to_config
    def __init__(
        self,
        video_dim: int,
        num_video_blocks: int,
        width: int = 128,
        num_heads: int = 4,
        num_waypoints: int = 8,
        pose_dim: int = 3,
        ego_dim: int = 3,
        num_commands: int = 3,
        mlp_ratio: float = 4.0,
        align_block: int = 1,
        projector_hidden_dim: int | None = None,  # None = 2 · width (REPA-style MLP d → 2d → D_video)
        projector_out_dim: int | None = None,  # None = video_dim
        pose_mean: list | None = None,  # P values, or N lists of P (per waypoint); None = zeros
        pose_scale: list | None = None,  # half-ranges, same shapes; None = ones
        anchor: str = "none",  # residual from a kinematic anchor (see `anchor_trajectory`)
        waypoint_interval_s: float = 0.5,  # [s] spacing of the waypoints (for the anchor)
    ):
        super().__init__()
        if not 0 <= align_block < num_video_blocks:
            raise ValueError(f"align_block {align_block} is outside the {num_video_blocks} action blocks")
        if anchor not in ANCHORS:
            raise ValueError(f"unknown anchor {anchor!r}; expected one of {ANCHORS}")
        for name, stats in (("pose_mean", pose_mean), ("pose_scale", pose_scale)):
            shape = None if stats is None else tuple(torch.tensor(stats, dtype=torch.float64, device="cpu").shape)
            if shape not in (None, (pose_dim,), (num_waypoints, pose_dim)):
                raise ValueError(f"{name} needs {pose_dim} or {num_waypoints}×{pose_dim} values, got shape {shape}")
        if pose_scale is not None and torch.tensor(pose_scale, device="cpu").min() <= 0:  # also under meta init
            raise ValueError(f"pose_scale must be positive, got {pose_scale}")

        self.pose_embed = nn.Linear(pose_dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_waypoints, width))
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(width, width)
        self.ego_embed = nn.Sequential(nn.Linear(ego_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.command_embed = nn.Embedding(num_commands, width)
        self.blocks = nn.ModuleList(
            [ActionBlock(width, num_heads, video_dim, mlp_ratio) for _ in range(num_video_blocks)]
        )
        self.final = FinalLayer(width, pose_dim)
        hidden = projector_hidden_dim or 2 * width
        self.projector = nn.Sequential(
            nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, projector_out_dim or video_dim)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.command_embed.weight, std=0.02)
        # adaLN-Zero: every residual branch and the output start at zero, so the model predicts v = 0.
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.final.ada[-1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # normalised pose space; the statistics are read from the config (not buffers), so casting the
    # model to bf16 leaves them exact
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        mean = [0.0] * cfg.pose_dim if cfg.pose_mean is None else cfg.pose_mean
        scale = [1.0] * cfg.pose_dim if cfg.pose_scale is None else cfg.pose_scale
        kw = dict(device=like.device, dtype=like.dtype)
        return torch.tensor(mean, **kw), torch.tensor(scale, **kw)

    def _anchor(self, ego_status: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | float:
        cfg = self.config
        if cfg.anchor == "none":
            return 0.0
        if ego_status is None:
            raise ValueError(f"this planner predicts residuals from a {cfg.anchor} anchor: pass ego_status")
        return anchor_trajectory(ego_status.to(like), cfg.num_waypoints, cfg.pose_dim, cfg.waypoint_interval_s,
                                 cfg.anchor)

    def normalize(self, poses: torch.Tensor, ego_status: torch.Tensor | None = None) -> torch.Tensor:
        """Raw (..., N, P) poses → normalised; ego_status (..., E) broadcasts against the leading dims."""
        mean, scale = self._stats(poses)
        return (poses - self._anchor(ego_status, poses) - mean) / scale

    def denormalize(self, x: torch.Tensor, ego_status: torch.Tensor | None = None) -> torch.Tensor:
        mean, scale = self._stats(x)
        return x * scale + mean + self._anchor(ego_status, x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The alignment projector: (..., width) → (..., D_video)."""
        return self.projector(h)

    def _check_inputs(self, noisy_poses, sigma, video_hidden_states, ego_status, command) -> None:
        cfg = self.config
        b = noisy_poses.shape[0]
        expected = {
            "noisy_poses": (noisy_poses, (b, cfg.num_waypoints, cfg.pose_dim)),
            "sigma": (sigma, (b,)),
            "ego_status": (ego_status, (b, cfg.ego_dim)),
            "command": (command, (b,)),
        }
        for name, (t, shape) in expected.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"{name}: expected {shape}, got {tuple(t.shape)}")
        if len(video_hidden_states) != cfg.num_video_blocks:
            raise ValueError(f"expected {cfg.num_video_blocks} video hidden-state tensors, "
                             f"got {len(video_hidden_states)}")
        for i, f in enumerate(video_hidden_states):
            if f.ndim != 3 or f.shape[-1] != cfg.video_dim or f.shape[0] == 0 or b % f.shape[0]:
                raise ValueError(
                    f"video_hidden_states[{i}]: expected (B_v, S, {cfg.video_dim}) with B_v dividing the pose "
                    f"batch {b}, got {tuple(f.shape)}"
                )

    def _embed(self, noisy_poses, sigma, ego_status, command) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.pose_embed.weight.dtype
        x = self.pose_embed(noisy_poses.to(dtype)) + self.pos_embed  # (B·R, N, W)
        t = self.time_embed(self.time_proj(sigma * TIMESTEP_SCALE).to(dtype))  # (B·R, W)
        c = t + self.ego_embed(ego_status.to(dtype)) + self.command_embed(command)  # (B·R, W)
        return x, c

    def forward_with_negatives(
        self,
        noisy_poses: torch.Tensor,
        noisy_negatives: torch.Tensor,
        sigma: torch.Tensor,
        video_hidden_states: list[torch.Tensor],
        ego_status: torch.Tensor,
        command: torch.Tensor,
    ) -> tuple[ActionDiTOutput, torch.Tensor]:
        """`forward(noisy_poses, ..., return_features=True)` for the expert (B, N, P), plus the pooled
        alignment-block features (B, K, W) of its K noised negatives (B, K, N, P), which share the
        expert's σ, ego status and command. The hard-negative loss reads nothing else of the negatives,
        so they run with the expert (sharing its video keys/values) only up to `align_block`; the
        remaining blocks and the output layer see the expert alone. Exactly equal to separate passes."""
        b, k = noisy_negatives.shape[:2]
        r = 1 + k
        rows = torch.cat([noisy_poses[:, None], noisy_negatives], dim=1).flatten(0, 1)  # (B·R, N, P)
        sig, ego, cmd = (t.repeat_interleave(r, dim=0) for t in (sigma, ego_status, command))
        self._check_inputs(rows, sig, video_hidden_states, ego, cmd)
        x, c = self._embed(rows, sig, ego, cmd)  # (B·R, N, W), (B·R, W)
        la = self.config.align_block
        features: dict[int, torch.Tensor] = {}
        for i, (block, video) in enumerate(zip(self.blocks[: la + 1], video_hidden_states)):
            x = block(x, c, video)  # (B·R, N, W)
            features[i] = x.unflatten(0, (b, r))[:, 0]
        neg_pooled = x.unflatten(0, (b, r))[:, 1:].mean(dim=2)  # (B, K, W)
        x, c = features[la], c.unflatten(0, (b, r))[:, 0]  # the expert alone from here
        for i in range(la + 1, len(self.blocks)):
            x = self.blocks[i](x, c, video_hidden_states[i])
            features[i] = x
        return self._output(x, c, features), neg_pooled

    def forward(
        self,
        noisy_poses: torch.Tensor,
        sigma: torch.Tensor,
        video_hidden_states: list[torch.Tensor],
        ego_status: torch.Tensor,
        command: torch.Tensor,
        return_features: bool = False,
    ) -> ActionDiTOutput:
        """noisy_poses (B·R, N, P) normalised; sigma (B·R,); video_hidden_states: one (B, S, D_video) per
        block; ego_status (B·R, E); command (B·R,) long. Returns the velocity (B·R, N, P)."""
        self._check_inputs(noisy_poses, sigma, video_hidden_states, ego_status, command)
        x, c = self._embed(noisy_poses, sigma, ego_status, command)
        features: dict[int, torch.Tensor] = {}
        for i, (block, video) in enumerate(zip(self.blocks, video_hidden_states)):
            x = block(x, c, video)  # (B·R, N, W)
            if return_features:
                features[i] = x
        if not return_features:
            return ActionDiTOutput(sample=self.final(x, c))  # (B·R, N, P)
        return self._output(x, c, features)

    def _output(self, x: torch.Tensor, c: torch.Tensor, features: dict[int, torch.Tensor]) -> ActionDiTOutput:
        h = features[self.config.align_block]  # (B·R, N, W)
        return ActionDiTOutput(
            sample=self.final(x, c),  # (B·R, N, P)
            features=features,
            pooled=h.mean(dim=1),  # (B·R, W)
            projected=self.project(h),  # (B·R, N, D_video)
        )


def build_action_dit(
    cfg: ActionConfig,
    video_dim: int,
    num_video_blocks: int,
    pose_mean: list | None = None,
    pose_scale: list | None = None,
    waypoint_interval_s: float = 0.5,
) -> ActionDiT:
    """An ActionDiT sized by the config's `action` section, for a Video DiT of width `video_dim` whose
    `num_video_blocks` chosen blocks it reads."""
    return ActionDiT(
        video_dim=video_dim,
        num_video_blocks=num_video_blocks,
        width=cfg.width,
        num_heads=cfg.num_heads,
        num_waypoints=cfg.num_waypoints,
        align_block=cfg.align_block,
        pose_mean=pose_mean,
        pose_scale=pose_scale,
        anchor=cfg.anchor,
        waypoint_interval_s=waypoint_interval_s,
    )


__all__ = [
    "ActionDiT",
    "ActionDiTOutput",
    "anchor_trajectory",
    "build_action_dit",
    "pose_statistics",
]
