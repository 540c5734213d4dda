"""Training of the metric network `ReWorldVideoNet` (`python -m reworld train-video-net`).

Self-supervised from what the clips hold: the driving command and the ego speed on correctly ordered clips,
and whether the frames are in their true order or were shuffled, reversed or frozen (`CORRUPTIONS`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from reworld.config import load_config, replace
from reworld.data.clips import load_clip_tensors
from reworld.evaluation.clip_net import ReWorldVideoNet, ReWorldVideoNetOutput
from reworld.models.layers import save_model_atomic
from reworld.paths import resolve_dataroot
from reworld.runtime import default_device

CORRUPTIONS = ("shuffle", "reverse", "freeze")  # ways a clip is put out of order (order label 0)


@dataclass(frozen=True)
class VideoNetTrainConfig:
    batch_size: int = 16
    weight_decay: float = 1e-4
    p_corrupt: float = 0.5  # share of clips put out of order
    command_weight: float = 1.0
    speed_weight: float = 1.0
    order_weight: float = 1.0
    widths: tuple[int, ...] = (32, 64, 128, 128)
    feature_dim: int = 128
    log_every: int = 50


@dataclass(frozen=True)
class VideoNetEval:
    command_acc: float  # [0, 1] on correctly ordered clips
    speed_mae: float  # [m/s]
    order_acc: float  # [0, 1] ordered vs corrupted, half of the clips corrupted
    num_clips: int


def clip_videos(clips, idx) -> torch.Tensor:
    """The net's input from `ClipTensors`: the last context frame and the future frames, (B, 1 + T_fut, 3, H, W)."""
    return clips.video(idx)[:, clips.n_context - 1 :]


def corrupt_order(videos: torch.Tensor, p_corrupt: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Put a share `p_corrupt` of the clips (B, T, …) out of order, each by one of `CORRUPTIONS` drawn at
    random: a shuffle (never the identity), the reverse, or one of its frames repeated T times.
    Returns (videos, ordered) with `ordered` (B,) 1.0 for untouched clips. Noise on the CPU generator."""
    b, t = videos.shape[:2]
    if t < 2:
        raise ValueError(f"corrupt_order: need at least 2 frames, got {t}")
    corrupt = torch.rand(b, generator=generator) < p_corrupt
    kind = torch.randint(len(CORRUPTIONS), (b,), generator=generator)
    out = videos.clone()
    for i in torch.nonzero(corrupt).flatten().tolist():
        name = CORRUPTIONS[int(kind[i])]
        if name == "shuffle":
            perm = torch.randperm(t, generator=generator)
            while bool((perm == torch.arange(t)).all()):
                perm = torch.randperm(t, generator=generator)
        elif name == "reverse":
            perm = torch.arange(t - 1, -1, -1)
        else:  # freeze
            perm = torch.full((t,), int(torch.randint(t, (1,), generator=generator)))
        out[i] = videos[i, perm.to(videos.device)]
    return out, (~corrupt).float().to(videos.device)


def video_net_losses(out: ReWorldVideoNetOutput, command: torch.Tensor, speed: torch.Tensor,
                     ordered: torch.Tensor, speed_scale: float) -> dict[str, torch.Tensor]:
    """Per-sample losses (B,): command CE and speed smooth-L1 (in units of `speed_scale`) count only on
    ordered clips (a reversed clip drives backwards); the order BCE counts on all."""
    ce = F.cross_entropy(out.command_logits, command, reduction="none")
    sp = F.smooth_l1_loss(out.speed / speed_scale, speed / speed_scale, reduction="none")
    order = F.binary_cross_entropy_with_logits(out.order_logit, ordered, reduction="none")
    return {"command": ce * ordered, "speed": sp * ordered, "order": order}


def train_video_net(clips, steps: int, seed: int = 0, lr: float = 3e-4, device: str | torch.device = "cpu",
                    train: VideoNetTrainConfig | None = None) -> tuple[ReWorldVideoNet, list[dict]]:
    """Train a `ReWorldVideoNet` on `ClipTensors` for `steps` AdamW steps → (model in eval mode, log rows)."""
    train = train if train is not None else VideoNetTrainConfig()
    device = torch.device(device)
    # -- setup: speed unit from the data, so the regression is O(1)
    speeds = clips.ego_status[:, 0].float()
    speed_scale = float(speeds.std()) if len(speeds) > 1 and float(speeds.std()) > 1e-3 else 1.0
    # -- model
    torch.manual_seed(seed)  # parameter initialisation
    model = ReWorldVideoNet(widths=tuple(train.widths), feature_dim=train.feature_dim,
                            num_frames=clips.frames.shape[1] - clips.n_context + 1,
                            frame_size=tuple(clips.frames.shape[-2:]), speed_scale=speed_scale).to(device)
    # -- optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=train.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    log = []
    # -- loop
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(len(clips), (min(train.batch_size, len(clips)),), generator=generator)
        videos, ordered = corrupt_order(clip_videos(clips, idx), train.p_corrupt, generator)
        out = model(videos.to(device))
        terms = video_net_losses(out, clips.command[idx].to(device), speeds[idx].to(device), ordered.to(device),
                                 speed_scale)
        loss = (train.command_weight * terms["command"] + train.speed_weight * terms["speed"]
                + train.order_weight * terms["order"]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % train.log_every == 0 or step in (1, steps):
            log.append({"step": step, "loss": loss.item(), **{k: v.mean().item() for k, v in terms.items()}})
    return model.eval(), log


@torch.no_grad()
def evaluate_video_net(model: ReWorldVideoNet, clips, seed: int = 0, batch_size: int = 32) -> VideoNetEval:
    """Held-out accuracy: command and speed on the clips as they are, order on a half-corrupted copy."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    correct = abs_err = order_correct = 0.0
    for start in range(0, len(clips), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(clips)))
        videos = clip_videos(clips, idx)
        out = model(videos.to(device))
        correct += float((out.command_logits.argmax(1).cpu() == clips.command[idx]).sum())
        abs_err += float((out.speed.cpu() - clips.ego_status[idx, 0]).abs().sum())
        shuffled, ordered = corrupt_order(videos, 0.5, generator)
        pred = model(shuffled.to(device)).order_logit.cpu() > 0
        order_correct += float((pred == ordered.bool()).sum())
    n = len(clips)
    return VideoNetEval(command_acc=correct / n, speed_mae=abs_err / n, order_acc=order_correct / n, num_clips=n)


def fit_video_net(train_clips, val_clips, out_dir: str | Path, steps: int, seed: int = 0, lr: float = 3e-4,
                  device: str | torch.device = "cpu", train: VideoNetTrainConfig | None = None,
                  meta: dict | None = None) -> dict:
    """`train_video_net` on `train_clips`, `evaluate_video_net` on `val_clips`, then save the net to `out_dir`
    (safetensors, atomically) with `metrics.json` (held-out accuracy, the training log, `meta`) beside it."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    model, log = train_video_net(train_clips, steps, seed=seed, lr=lr, device=device, train=train)
    val = evaluate_video_net(model, val_clips, seed=seed)
    out = save_model_atomic(model, out_dir)
    result = {"metric_name": model.metric_name, "steps": steps, "train_clips": len(train_clips),
              "val": asdict(val), "log": log, **(meta or {})}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def train_feature_net(config_path: str | Path, out_dir: str | Path, steps: int, dataroot: str | None = None,
                      version: str | None = None) -> dict:
    """Train the offline-metric network on the train split of the config's data (seed and lr from its
    `train` section), report held-out accuracy on the val split, save to `out_dir` (e.g.
    `runs/v1/video_net`, beside the first checkpoints whose clips it reads)."""
    config = load_config(config_path)
    root = resolve_dataroot(dataroot or config.data.dataroot)
    config = replace(config, data={"dataroot": root, **({"version": version} if version else {})})
    train_clips = load_clip_tensors(config.data, "train")
    val_clips = load_clip_tensors(config.data, "val")
    device = default_device()
    return fit_video_net(train_clips, val_clips, out_dir, steps, seed=config.train.seed, lr=config.train.lr,
                         device=device, meta={"data": asdict(config.data)})
