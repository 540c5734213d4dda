"""Layers and checkpoint helpers shared by the models (Video DiT, Action DiT, VAE).

Checkpoints are diffusers folders (`config.json` + `diffusion_pytorch_model*.safetensors`). Loading is
strict: a missing folder, a missing or unexpected key, or a wrong shape is a `CheckpointError` that
names the keys; weights are never initialised at random behind the caller's back, and nothing is read
with pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
CONFIG_NAME = "config.json"
TIMESTEP_SCALE = 1000.0  # diffusers / LTX flow-match convention: timestep = σ · 1000 (both DiTs)
_MAX_KEYS_SHOWN = 20

M = TypeVar("M", bound=nn.Module)


def file_digest(folder: Path) -> str:
    """A digest of the safetensors files of a model folder (what identifies its weights)."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def state_digest(parts) -> str:
    """A digest of modules' weights as they are in memory: for each `(prefix, module)` of `parts`, its state dict's
    names (prefixed), dtypes, sizes and bytes."""
    h = hashlib.sha256()
    for prefix, module in parts:
        for name, t in sorted(module.state_dict().items()):
            t = t.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{prefix}{name}:{t.dtype}:{t.numel()};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete or does not fit the model."""


def _show(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - _MAX_KEYS_SHOWN} more" if len(keys) > _MAX_KEYS_SHOWN else ""
    return ", ".join(keys[:_MAX_KEYS_SHOWN]) + more


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers folder (single or sharded safetensors), on the CPU."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    single, index = path / WEIGHTS_NAME, path / WEIGHTS_INDEX_NAME
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            if Path(shard).name != shard:  # a hostile index must not make us read outside the folder
                raise CheckpointError(f"{index}: shard name {shard!r} is not a file name in {path}")
            if not (path / shard).is_file():
                raise CheckpointError(f"{path}: shard {shard} named in {WEIGHTS_INDEX_NAME} is missing")
            state.update(_load_safetensors(path / shard))
        return state
    raise CheckpointError(f"{path}: no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} (only safetensors are read)")


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """One safetensors file; a truncated, empty or foreign file (pickle bytes under this name) is a
    `CheckpointError` naming it. safetensors parses only a JSON header and raw tensor bytes: nothing runs."""
    try:
        return load_file(file, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None


def load_state_dict_strict(
    module: nn.Module, state: dict[str, torch.Tensor], *, where: str = "checkpoint", assign: bool = False
) -> None:
    """`module.load_state_dict` that raises one `CheckpointError` naming every missing, unexpected and
    wrongly shaped key. `assign=True` replaces meta tensors (models built under `init_empty_weights`)."""
    own = module.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise CheckpointError(f"{where}: wrong shape for {len(mismatched)} key(s): {_show(mismatched)}")
    # strict=False so that modules' own _load_from_state_dict conversions (e.g. LTX's legacy keys) still
    # run; we then reject anything left over ourselves.
    result = module.load_state_dict(state, strict=False, assign=assign)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} key(s): {_show(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} key(s): {_show(result.unexpected_keys)}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))
    still_meta = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type == "meta"]
    if still_meta:
        raise CheckpointError(f"{where}: tensors left uninitialised on the meta device: {_show(still_meta)}")


def diffusers_component(path: str | Path, subfolder: str, class_name: str) -> Path:
    """The folder of one model in `path`: `path` itself when it holds the model (`config.json`), or
    `path/subfolder` when `path` is a diffusers pipeline folder (`model_index.json`, e.g. LTX-Video's, whose
    `transformer/` and `vae/` are the components). A folder that is neither, or whose config or index names
    another class, is a `CheckpointError` naming the file."""
    path = Path(path)
    index = path / "model_index.json"
    if not (path / CONFIG_NAME).is_file() and index.is_file():
        try:
            doc = json.loads(index.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{index}: not valid JSON ({e})") from None
        entry = doc.get(subfolder) if isinstance(doc, dict) else None
        if not isinstance(entry, list) or not entry or entry[-1] is None:
            listed = sorted(k for k in doc if not k.startswith("_")) if isinstance(doc, dict) else []
            raise CheckpointError(f"{index}: no {subfolder!r} component (it lists {listed})")
        if entry[-1] != class_name:
            raise CheckpointError(f"{index}: {subfolder} is a {entry[-1]}, expected {class_name}")
        path = path / subfolder
    config = path / CONFIG_NAME
    if not config.is_file():
        raise CheckpointError(f"{path} is neither a diffusers {class_name} folder ({CONFIG_NAME}) nor a pipeline "
                              f"folder (model_index.json)")
    try:
        name = json.loads(config.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(f"{config}: not a model config ({e})") from None
    if name is not None and name != class_name:
        raise CheckpointError(f"{config}: a {name}, expected {class_name}")
    return path


def load_model_strict(cls: type[M], path: str | Path, *, dtype: torch.dtype | None = None) -> M:
    """Build `cls` (a diffusers ModelMixin + ConfigMixin) from `path/config.json` and load its
    safetensors strictly. The model is built on the meta device, so nothing is allocated twice and no
    weight can be left at its random initial value."""
    from accelerate import init_empty_weights

    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"checkpoint folder {path} has no {CONFIG_NAME}")
    config = cls.load_config(path)
    state = read_state_dict(path)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    # Buffers (small, sometimes not saved) are allocated normally; parameters live on the meta device
    # until the checkpoint's tensors are assigned.
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config)
    load_state_dict_strict(model, state, where=str(path), assign=True)
    return model.eval()


def save_model_atomic(model: nn.Module, path: str | Path) -> Path:
    """`model.save_pretrained` (safetensors) into a temporary sibling folder, then swap it into place, so a
    crash never leaves a half-written checkpoint at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700: a checkpoint is as readable as any folder the user makes
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~mask)
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class MotionHead(nn.Module):
    """Reads a latent frame's ego pose off a block's tokens (docs/world4s.md, E15; VideoJAM's idea of a motion target
    beside the appearance one): the mean of the frame's tokens → LayerNorm → Linear → SiLU → Linear → (x, y, heading),
    normalised. The last linear starts at zero, so a new head predicts the mean pose and its loss moves the trunk only
    as the head learns."""

    def __init__(self, dim: int, out_features: int = 3, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters(), self.fc1.reset_parameters(), zero_module(self.fc2)

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        # frame_tokens (B, t, n, D): the n tokens of each of t latent frames → (B, t, out_features)
        return self.fc2(nn.functional.silu(self.fc1(self.norm(frame_tokens.mean(dim=2)))))


class MotionEmbed(nn.Module):
    """The motion head's poses fed back to the later blocks (docs/world4s.md, E17; VideoJAM's motion signal as an
    input): a normalised pose (x, y, heading) per latent frame → Linear → SiLU → Linear → a vector of the
    transformer's width, added to every token of that frame. The last linear starts at zero, so a new embedding
    leaves the model as it was."""

    def __init__(self, dim: int, in_features: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(in_features, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters(), zero_module(self.fc2)

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        # poses (B, F, in_features) → (B, F, dim)
        return self.fc2(nn.functional.silu(self.fc1(poses)))


def zero_module(module: M) -> M:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class AdaLNVelocityHead(nn.Module):
    """Intermediate velocity head (Internal Guidance): LayerNorm without affine → shift/scale from the
    timestep embedding → Linear(D → C_out). Both linears start at zero, so a new head predicts 0 and
    leaves training of the trunk untouched at step 0."""

    def __init__(self, dim: int, out_channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.modulation = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        zero_module(self.modulation), zero_module(self.proj)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # hidden_states (B, S, D); temb (B, S, D) or (B, 1, D) timestep embedding
        shift, scale = self.modulation(nn.functional.silu(temb)).chunk(2, dim=-1)  # (B, S, D) each
        x = self.norm(hidden_states) * (1 + scale) + shift  # (B, S, D)
        return self.proj(x)  # (B, S, C_out)
