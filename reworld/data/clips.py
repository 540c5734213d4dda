"""Clip tensors held in memory for training and the metric network: the observation and the expert trajectory
stacked over a split, and, when asked for, the frames as uint8 (validation sets, the metric network). The VAE
stage reads its frames batch by batch (`ClipFrames`); the Video DiT and planner stages read prepared latents
(`reworld.training.prepare`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from reworld.config import DataConfig
from reworld.data.loader import NuScenesClips


@dataclass
class ClipTensors:
    frames: torch.Tensor | None  # (N, T_ctx + T_fut, 3, H, W) uint8; None when loaded without frames
    ego_status: torch.Tensor  # (N, 3)
    command: torch.Tensor  # (N,) long
    trajectory: torch.Tensor  # (N, 8, 3)
    tokens: list[str]
    n_context: int  # frames of context (the rest are future)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def cat(cls, parts: list[ClipTensors]) -> ClipTensors:
        """The clips of `parts` one after the other (frames only when every part has them)."""
        if not parts or len({p.n_context for p in parts}) != 1:
            raise ValueError("ClipTensors.cat: needs at least one part, all with the same context frames")
        frames = None if any(p.frames is None for p in parts) else torch.cat([p.frames for p in parts])
        return cls(frames, torch.cat([p.ego_status for p in parts]), torch.cat([p.command for p in parts]),
                   torch.cat([p.trajectory for p in parts]), [t for p in parts for t in p.tokens],
                   parts[0].n_context)

    def video(self, idx) -> torch.Tensor:
        """(B, T, 3, H, W) float in [-1, 1]."""
        if self.frames is None:
            raise ValueError("these clips were loaded without frames (load_clip_tensors(..., frames=False))")
        return self.frames[idx].float() / 127.5 - 1.0


def poses_at(trajectory: torch.Tensor, horizon_s: float, times: torch.Tensor) -> torch.Tensor:
    """The ego poses (N, P, 3) [x, y, heading] at the P uniform times horizon_s·(k + 1)/P (data.future_poses
    "uniform"), linearly interpolated at `times` (F,) [s] in (0, horizon_s], with the pose (0, 0, 0) at t = 0 (the ego
    frame at t = 0): (N, F, 3)."""
    n, p, _ = trajectory.shape
    times = torch.as_tensor(times, dtype=torch.float64)
    if times.numel() and (times.min() <= 0 or times.max() > horizon_s + 1e-6):
        raise ValueError(f"pose times {times.tolist()} must lie in (0, {horizon_s}] s (the trajectory's horizon)")
    full = torch.cat([trajectory.new_zeros(n, 1, 3), trajectory], 1).double()  # (N, P + 1, 3)
    pos = (times / (horizon_s / p)).clamp(max=p)  # fractional index into the poses at 0, horizon_s/P, …, horizon_s
    lo = pos.floor().long().clamp(max=p - 1)
    frac = (pos - lo.double()).view(1, -1, 1)
    return (full[:, lo] * (1 - frac) + full[:, lo + 1] * frac).to(trajectory.dtype)


def _to_u8(video: torch.Tensor) -> torch.Tensor:
    return ((video + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class ClipFrames:
    """The frames of a split, decoded when a batch asks for them (the VAE stage): `video(idx)` gives exactly
    what `ClipTensors.video(idx)` gives (the same uint8 rounding), without holding the split in memory."""

    def __init__(self, cfg: DataConfig, split: str, limit: int | None = None):
        self.ds = NuScenesClips(cfg, split=split, geometry=False)
        if len(self.ds) == 0:
            raise ValueError(f"no {split} clips in {self.ds.root}/{self.ds.version}")
        self.n = len(self.ds) if limit is None else min(limit, len(self.ds))

    def __len__(self) -> int:
        return self.n

    def video(self, idx) -> torch.Tensor:
        """(B, T, 3, H, W) float in [-1, 1]."""
        rows = range(self.n)[idx] if isinstance(idx, slice) else [int(i) for i in torch.as_tensor(idx).flatten()]
        clips = [self.ds[i] for i in rows]
        u8 = torch.stack([_to_u8(torch.cat([c.observation.frames, c.target.frames])) for c in clips])
        return u8.float() / 127.5 - 1.0


def load_clip_tensors(cfg: DataConfig, split: str, limit: int | None = None, frames: bool = True) -> ClipTensors:
    """The first `limit` clips of `split` (all by default); `frames=False` reads no image at all."""
    ds = NuScenesClips(cfg, split=split, geometry=False, frames=frames)
    if len(ds) == 0:
        raise ValueError(f"no {split} clips in {ds.root}/{ds.version}: the scenes are too short for "
                         f"{cfg.context_frames} context frames and a {cfg.horizon_s:g} s future")
    n = len(ds) if limit is None else min(limit, len(ds))
    video_u8, ego, cmd, traj, tokens = [], [], [], [], []
    for i in range(n):
        clip = ds[i]
        if frames:
            video = torch.cat([clip.observation.frames, clip.target.frames])  # (T, 3, H, W)
            video_u8.append(_to_u8(video))
        ego.append(clip.observation.ego_status)
        cmd.append(clip.observation.command)
        traj.append(clip.target.trajectory)
        tokens.append(clip.sample_token)
    return ClipTensors(torch.stack(video_u8) if frames else None, torch.stack(ego), torch.tensor(cmd, dtype=torch.long),
                       torch.stack(traj), tokens, cfg.context_frames)
