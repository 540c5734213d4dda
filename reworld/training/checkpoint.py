"""Training checkpoints: safetensors only, written atomically, loaded strictly.

A checkpoint is a folder `checkpoints/<stage>/step-NNNNNNN/` holding each trained model's
`save_pretrained` output (the raw weights), the optimizer state (`optimizer.safetensors` + `optimizer.json`),
with EMA the averaged weights (`ema.safetensors`), and `meta.json`. It is written under a temporary name and
renamed into place, and `meta.json` is written last, so a folder without it (a kill mid-write) is never picked.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from reworld.models.layers import CheckpointError

META = "meta.json"


def optimizer_state_to_files(optimizer: torch.optim.Optimizer | dict, folder: Path) -> None:
    """An optimizer (or its `state_dict()`, e.g. gathered from shards) as safetensors + JSON."""
    state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_state_from_files(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    try:
        tensors = load_file(str(folder / "optimizer.safetensors"))
        doc = json.loads((folder / "optimizer.json").read_text())
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise CheckpointError(f"{folder}: unreadable optimizer state ({e})") from None
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(doc["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    expected = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in expected] != [len(g["params"]) for g in doc["param_groups"]]:
        raise CheckpointError(f"{folder}: optimizer state is for a different set of parameters")
    from reworld.training.sharding import shard_like  # a no-op unless the run is sharded (train.sharding: fsdp)

    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {pid: {k: shard_like(v, params[pid]) if torch.is_tensor(v) else v for k, v in entry.items()}
             for pid, entry in state.items()}
    optimizer.load_state_dict({"state": state, "param_groups": doc["param_groups"]})


def save_checkpoint(root: Path, stage: str, step: int, models: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer | dict | None, meta: dict, keep: int = 2,
                    tensor_files: dict[str, tuple[dict, dict]] | None = None) -> Path:
    """Write `root/checkpoints/<stage>/step-<step>` atomically; keep the newest `keep`. `optimizer` may be
    an optimizer or its state dict; `tensor_files` maps further file names to (tensors, metadata), e.g. the EMA
    weights."""
    parent = Path(root) / "checkpoints" / stage
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:07d}-", dir=parent))
    try:
        for name, model in models.items():
            model.save_pretrained(str(tmp / name), safe_serialization=True)
        if optimizer is not None:
            optimizer_state_to_files(optimizer, tmp)
        for fname, (tensors, metadata) in (tensor_files or {}).items():
            save_file(tensors, str(tmp / fname), metadata=metadata)
        (tmp / META).write_text(json.dumps({"stage": stage, "step": step, **meta}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in complete_checkpoints(root, stage)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(root: Path, stage: str) -> list[Path]:
    parent = Path(root) / "checkpoints" / stage
    if not parent.is_dir():
        return []
    found = [p for p in parent.glob("step-*") if p.is_dir() and (p / META).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path, stage: str) -> Path | None:
    found = complete_checkpoints(root, stage)
    return found[-1] if found else None
