"""EMA weights and the learning-rate schedule of a training stage, with the field's own tools.

EMA: diffusers' `EMAModel` over the stage's trained parameters, with crowsonkb's warm-up (decay
1 − (1 + step)^−power, capped at `train.ema_decay`), as diffusers' training examples use it. The loop steps it
after every optimizer step, validates and exports with the averaged weights swapped in, and keeps the raw
weights in checkpoints (for --resume) beside `ema.safetensors`. With `train.sharding: fsdp` the averages are
kept as shards of the same layout and gathered only when a checkpoint is written.

Schedule: diffusers' `get_scheduler` ("constant", "cosine", "linear", … with linear warm-up). It is a function
of the step alone, so a resumed run rebuilds it at its step.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from reworld.models.layers import CheckpointError

EMA_FILE = "ema.safetensors"
SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def make_ema(params: list[torch.nn.Parameter], tcfg, sharded: bool = False):
    """diffusers' `EMAModel` over `params` when `train.ema_decay` > 0, else None. Its fused (`foreach`) updates
    have no sharding rule for FSDP's DTensors, so sharded parameters are averaged one by one."""
    if not tcfg.ema_decay:
        return None
    if not 0.0 < tcfg.ema_decay < 1.0:
        raise ValueError(f"train.ema_decay must be in (0, 1) (0: no EMA), got {tcfg.ema_decay}")
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=tcfg.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=tcfg.ema_power,
                    foreach=not sharded)


@contextmanager
def ema_weights(ema, params: list[torch.nn.Parameter]):
    """Within the block the parameters hold the EMA weights; after it, their own again (a no-op without EMA)."""
    if ema is None:
        yield
        return
    with torch.no_grad():
        own = [p.detach().clone() for p in params]
        ema.copy_to(params)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, o in zip(params, own):
                p.copy_(o)


def ema_tensors(ema) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The averages, gathered from shards (every rank calls), and their metadata: what `ema.safetensors` holds."""
    from reworld.training.sharding import _full

    tensors = {str(i): _full(s).detach().cpu().contiguous() for i, s in enumerate(ema.shadow_params)}
    return tensors, {"optimization_step": str(ema.optimization_step)}


def ema_state_from_files(ema, folder: Path) -> bool:
    """Restore the averages from a checkpoint folder, strictly; False when it has none (a run without EMA)."""
    from safetensors import safe_open

    from reworld.training.sharding import shard_like

    path = Path(folder) / EMA_FILE
    if not path.is_file():
        return False
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            step = int((f.metadata() or {})["optimization_step"])
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise CheckpointError(f"{path}: unreadable EMA weights ({e})") from None
    if sorted(tensors, key=int) != [str(i) for i in range(len(ema.shadow_params))]:
        raise CheckpointError(f"{path}: EMA weights for {len(tensors)} parameters, the stage trains "
                              f"{len(ema.shadow_params)}")
    for i, s in enumerate(ema.shadow_params):
        t = tensors[str(i)]
        shape = tuple(s.full_tensor().shape) if hasattr(s, "full_tensor") else tuple(s.shape)
        if tuple(t.shape) != shape:
            raise CheckpointError(f"{path}: EMA weight {i} has shape {tuple(t.shape)}, the model's is {shape}")
        with torch.no_grad():
            s.copy_(shard_like(t.to(s.dtype), s))
    ema.optimization_step = step
    return True


def make_schedule(optimizer: torch.optim.Optimizer, tcfg, max_steps: int, start: int):
    """diffusers' learning-rate schedule `train.lr_schedule` over `max_steps`, advanced to step `start`."""
    if tcfg.lr_schedule not in SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {SCHEDULES}, got {tcfg.lr_schedule!r}")
    from diffusers.optimization import get_scheduler

    sched = get_scheduler(tcfg.lr_schedule, optimizer, num_warmup_steps=tcfg.lr_warmup_steps,
                          num_training_steps=max_steps)
    if start:  # every schedule here is a LambdaLR: a function of the step alone
        sched.last_epoch = start
        for group, base, factor in zip(optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(start)
    return sched
