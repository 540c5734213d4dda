"""ReWorldVideoNet: the project's own video network, whose features define the offline Fréchet metric.

FVD needs Kinetics-400 I3D weights, which cannot be downloaded here; instead a small 3D CNN is trained on
the synthetic world and its penultimate features (`feature_dim`, 128), the *clip embedding*, are what
`reworld.evaluation.video` compares. The metric is named `"FD-ReWorldNet"`, never FVD.

Its training loop is `reworld.training.clip_net` (`python -m reworld train-video-net`). Training is
self-supervised from what the clips already hold (no labels to make). From a short clip (the
last context frame and the future frames, T = 5) the net predicts
- the driving command (3-way cross-entropy) and the ego speed at t=0 (smooth L1, in units of the training
  set's speed std), on correctly ordered clips only: what a scene *is*;
- whether the frames are in their true order or were shuffled, reversed or frozen (binary): how it
  *moves*. A Fréchet distance on these features therefore sees temporal incoherence, not only frame
  appearance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from reworld.evaluation.video import check_videos, resize_videos
from reworld.models.layers import load_model_strict


@dataclass
class ReWorldVideoNetOutput(BaseOutput):
    command_logits: torch.Tensor  # (B, 3) over COMMANDS
    speed: torch.Tensor  # (B,) [m/s] ego speed at t=0
    order_logit: torch.Tensor  # (B,) > 0: frames in their true order
    embedding: torch.Tensor | None = None  # (B, feature_dim) clip embedding, only when asked


class ReWorldVideoNet(ModelMixin, ConfigMixin):
    """3D CNN: per stage a 3×3×3 convolution that halves H and W (time kept), GroupNorm, SiLU; a mean over
    (T, H, W); a linear map to the `feature_dim` features; three linear heads on SiLU(features)."""

    metric_name = "FD-ReWorldNet"

    @register_to_config
    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 128),
        feature_dim: int = 128,
        num_frames: int = 5,  # frames per clip it is trained on (last context + future)
        frame_size: tuple[int, int] = (64, 128),  # [px] (H, W) inputs are resized to
        num_commands: int = 3,
        speed_scale: float = 1.0,  # [m/s] speed head output unit (the training set's speed std)
        groups: int = 8,
    ):
        super().__init__()
        layers, c_in = [], 3
        for width in widths:
            layers += [nn.Conv3d(c_in, width, 3, stride=(1, 2, 2), padding=1),
                       nn.GroupNorm(min(groups, width), width), nn.SiLU()]
            c_in = width
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, feature_dim)
        self.command_head = nn.Linear(feature_dim, num_commands)
        self.speed_head = nn.Linear(feature_dim, 1)
        self.order_head = nn.Linear(feature_dim, 1)

    def clip_embedding(self, videos: torch.Tensor) -> torch.Tensor:
        """Offline Fréchet features: videos (B, T, 3, H, W) in [-1, 1] → (B, feature_dim)."""
        check_videos(videos, "ReWorldVideoNet", frames=self.config.num_frames)
        x = resize_videos(videos, tuple(self.config.frame_size), self.dtype)
        x = self.trunk(x.transpose(1, 2))  # (B, C, T, H / 2^n, W / 2^n)
        return self.proj(x.mean(dim=(2, 3, 4)))  # (B, feature_dim)

    def forward(self, videos: torch.Tensor, output_embedding: bool = False) -> ReWorldVideoNetOutput:
        feats = self.clip_embedding(videos)  # (B, D)
        h = F.silu(feats)
        return ReWorldVideoNetOutput(
            command_logits=self.command_head(h),  # (B, 3)
            speed=self.speed_head(h).squeeze(1) * self.config.speed_scale,  # (B,) [m/s]
            order_logit=self.order_head(h).squeeze(1),  # (B,)
            embedding=feats if output_embedding else None,
        )


def load_video_net(path: str | Path) -> ReWorldVideoNet:
    """A trained ReWorldVideoNet folder (`save_pretrained`), loaded strictly, in eval mode."""
    return load_model_strict(ReWorldVideoNet, path)
