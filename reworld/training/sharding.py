"""Fully sharded data parallelism (`train.sharding: fsdp`) for the training loop, on torch's FSDP2.

Each rank keeps 1/world of every trained parameter, gradient and AdamW moment; the blocks of a model are
gathered one at a time during its forward and backward (`fully_shard` on every repeated block, then on
the model). That is what a 2B-parameter Video DiT (`configs/paper.yaml`) needs beyond one GPU's memory;
the gradients are reduce-scattered (averaged) by FSDP itself, so the loop's own gradient averaging is
skipped. Checkpoints stay the plain format every other run writes: the full state is gathered to rank 0
and saved through an unsharded copy of the model (built on the meta device, so no second copy of the
weights is allocated), so a sharded run resumes on any number of processes and its exported models load
with `from_pretrained` anywhere.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The elements of every outermost `nn.ModuleList` whose items share one class (transformer blocks,
    VAE down/up blocks): the units FSDP gathers one at a time."""
    blocks: list[nn.Module] = []
    inside: set[int] = set()
    for _, module in model.named_modules():
        if id(module) in inside or not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len(Counter(type(m) for m in module)) != 1:
            continue
        for block in module:
            blocks.append(block)
            inside.update(id(m) for m in block.modules())
    return blocks


# Methods the stages call on a model besides `forward` (the VAE's encode/decode, the Action DiT's pass with
# its negatives): FSDP gathers the model's own parameters only around registered entry points.
FORWARD_METHODS = ("encode", "decode", "forward_with_negatives")


# Submodules a stage calls outside the model's forward methods, or whose outputs FSDP cannot follow (the
# VAE's encode returns a distribution object, not tensors): they become units that gather their own weights.
# A model may name them itself in `_fsdp_units`; these are for library classes.
LIBRARY_UNITS = {"AutoencoderKLLTXVideo": ("encoder", "decoder")}


def own_units(model: nn.Module) -> tuple[str, ...]:
    units = getattr(model, "_fsdp_units", None)
    if units is None:
        units = next((LIBRARY_UNITS[c.__name__] for c in type(model).__mro__ if c.__name__ in LIBRARY_UNITS), ())
    return tuple(units)


def shard_models(models: dict[str, nn.Module], param_groups: list[dict], device: torch.device,
                 param_dtype: torch.dtype | None = None) -> list[dict]:
    """`fully_shard` every model in `models` over all processes, in place: its repeated blocks, its
    `own_units`, then the model (which gathers the rest), with `FORWARD_METHODS` registered as entry
    points besides `forward`. With `param_dtype` (bf16 or fp16, from `train.mixed_precision`) FSDP's
    `MixedPrecisionPolicy` all-gathers the parameters in that dtype and computes with them, and reduce-scatters
    the gradients in fp32 into the fp32 shards the optimizer steps. FSDP replaces the
    parameters with sharded ones, so the optimizer groups (given over the old parameters) are returned
    rebuilt over the new ones, with their options (e.g. `lr`) kept."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    where = {id(p): (name, pname) for name, m in models.items() for pname, p in m.named_parameters()}
    for model in models.values():
        for block in repeated_blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=policy)
        for unit in own_units(model):
            fully_shard(getattr(model, unit), mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        for method in FORWARD_METHODS:
            if callable(getattr(model, method, None)):
                register_fsdp_forward_method(model, method)
    new = {(name, pname): p for name, m in models.items() for pname, p in m.named_parameters()}
    groups = []
    for group in param_groups:
        params = []
        for p in group["params"]:
            if id(p) not in where:
                raise ValueError("an optimizer parameter belongs to no sharded model")
            params.append(new[where[id(p)]])
        groups.append({**group, "params": params})
    return groups


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def gather_state_dict(model: nn.Module, main: bool) -> dict[str, torch.Tensor]:
    """The model's full state dict on the main process (CPU tensors), {} elsewhere. Every process must
    call it (one all-gather per sharded tensor, in the same order everywhere)."""
    out = {}
    for name, value in model.state_dict().items():
        full = _full(value).detach()
        if main:
            out[name] = full.cpu().clone()
    return out


def plain_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """An unsharded model of the same class and config holding `state` (for `save_pretrained`)."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.device("meta"):
        copy = cls.from_config(model.config)
    copy.load_state_dict(state, strict=True, assign=True)
    return copy.eval()


def gather_optimizer_state(optimizer: torch.optim.Optimizer, main: bool) -> dict:
    """`optimizer.state_dict()` with every sharded moment gathered in full on the main process."""
    state = optimizer.state_dict()
    gathered = {}
    for pid in sorted(state["state"]):
        entry = {}
        for key, value in state["state"][pid].items():
            full = _full(value).detach() if torch.is_tensor(value) else value  # every rank joins the gather
            entry[key] = full.cpu() if main and torch.is_tensor(full) else full
        gathered[pid] = entry
    return {"state": gathered if main else {}, "param_groups": state["param_groups"]}


def shard_like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A full optimizer moment laid out like its (possibly sharded) parameter."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and value.shape == param.shape:
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value


__all__ = ["gather_optimizer_state", "gather_state_dict", "plain_copy", "repeated_blocks", "shard_like",
           "shard_models"]
