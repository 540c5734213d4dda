"""The training loop shared by every stage, on accelerate.

Reads top to bottom in DiT's order: setup, model, optimizer, data, loop, checkpoint. What differs per
stage (the models, the loss terms, the validation) comes in as a `StageSpec`.

Determinism: the global batch of step `s` and the noise of step `s` are functions of (seed, s) alone,
so a run resumed from a checkpoint at step `s` replays exactly the batches and noise of an
uninterrupted run. Each rank takes its share of the global batch (`indices[rank::world]`), and the
gradients are averaged (by DDP's bucketed all-reduce during backward with `train.sharding: ddp`, by FSDP's
reduce-scatter with `fsdp`, see `sharding.py`), so `n` processes match one process on the same global batch.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from reworld.config import Config, config_to_dict
from reworld.training.checkpoint import latest_checkpoint, optimizer_state_from_files, save_checkpoint
from reworld.training.ema import EMA_FILE, ema_state_from_files, ema_tensors, ema_weights, make_ema, make_schedule


class TrainingError(RuntimeError):
    pass


@dataclass
class StageSpec:
    name: str
    models: dict[str, torch.nn.Module]  # saved in every checkpoint under these names
    params: list[dict]  # optimizer parameter groups
    num_items: int  # size of the training set (clip or latent indices)
    step_fn: Callable[[np.ndarray, torch.Generator], dict[str, torch.Tensor]]  # indices, noise → terms
    validate_fn: Callable[[int], dict[str, float]] | None = None
    # write the final models into the run folder, given {name: plain (unsharded, unwrapped) module}
    export_fn: Callable[[dict[str, torch.nn.Module]], None] | None = None
    load_fn: Callable[[Path], None] | None = None  # restore models from a checkpoint folder
    meta: dict = field(default_factory=dict)
    batch_size: int | None = None  # overrides train.batch_size
    # per-clip file stores the step reads by index (`reworld.training.prepare.ClipStore`): the loop reads each
    # step's rows ahead through a DataLoader and serves them, so the step does not wait on the files
    stores: dict[str, Any] = field(default_factory=dict)


def global_batch(num_items: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the global batch of `step`: epochs are seeded permutations, walked in order."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, pos = divmod(start + len(out), num_items)
        perm = np.random.default_rng([seed, epoch]).permutation(num_items)
        out.extend(perm[pos:pos + batch_size - len(out)].tolist())
    return np.asarray(out)


class StepModule(torch.nn.Module):
    """The trained models under one module whose `forward` is the stage's step: the module accelerate prepares.

    Under DDP the gradient hooks sit on the parameters, so wrapping the step (not each model) lets a step call
    its models however it needs (the VAE's `encode` and `decode`, the Video DiT twice in stage `joint`) and
    still all-reduces the gradients in buckets during backward, overlapping communication with compute. A
    parameter unused on every rank (an intermediate head at λ_ig = 0) keeps no gradient, as in one process.
    """

    def __init__(self, models: dict[str, torch.nn.Module], step_fn):
        super().__init__()
        self.models = torch.nn.ModuleDict(models)
        self.step_fn = step_fn

    def forward(self, idx: np.ndarray, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.step_fn(idx, generator)


class NonFiniteWatch:
    """The first step at which each loss term went non-finite, kept on the device: checking costs one host sync
    when asked (at logs, validations and checkpoints), not one per term every step."""

    NEVER = torch.iinfo(torch.int64).max

    def __init__(self):
        self.first: dict[str, torch.Tensor] = {}

    def update(self, terms: dict[str, torch.Tensor], step: int) -> None:
        for k, v in terms.items():
            here = torch.where(torch.isfinite(v.detach()).all(), self.NEVER, step + 1)
            self.first[k] = here if k not in self.first else torch.minimum(self.first[k], here)

    def check(self, stage: str) -> None:
        """Raise on a non-finite term on any rank (every rank calls: all of them stop, none waits forever),
        naming the first bad step and the terms bad at it."""
        if not self.first:
            return
        first = torch.stack(list(self.first.values()))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
        first = first.tolist()
        step = min(first)
        if step != self.NEVER:
            bad = [k for k, f in zip(self.first, first) if f == step]
            raise TrainingError(f"[{stage}] non-finite loss at step {step}: term(s) {', '.join(bad)}; "
                                f"the last good checkpoint is left as it was")


class StepFiles(torch.utils.data.Dataset):
    """Item i: this rank's rows of step `start + i`, read from every store on the CPU (picklable for workers)."""

    def __init__(self, stores: dict, num_items: int, batch_size: int, seed: int, rank: int, world: int, start: int,
                 stop: int):
        self.stores, self.num_items, self.batch_size, self.seed = stores, num_items, batch_size, seed
        self.rank, self.world, self.start, self.stop = rank, world, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict:
        idx = global_batch(self.num_items, self.batch_size, self.seed, self.start + i)[self.rank::self.world]
        return {name: store.read_cpu(idx, step=self.start + i) for name, store in self.stores.items()}


def step_files(spec: StageSpec, tcfg, batch_size: int, rank: int, world: int, start: int, stop: int, pin: bool):
    """An iterator over the steps' prefetched files (a `DataLoader` with `train.num_workers` processes and pinned
    memory on CUDA), or None when the stage reads no per-clip files."""
    if not spec.stores or stop <= start:
        return None
    dataset = StepFiles(spec.stores, spec.num_items, batch_size, tcfg.seed, rank, world, start, stop)
    workers = int(tcfg.num_workers)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                                         pin_memory=pin, prefetch_factor=2 if workers else None)
    return iter(loader)


def step_generator(seed: int, step: int, rank: int, world: int) -> torch.Generator:
    """CPU noise generator of one step on one rank (per-process seeds: seed·world + rank)."""
    return torch.Generator().manual_seed(((seed * world + rank) * 1_000_003 + step) % (2**63 - 1))


class RunLogger:
    """Every loss term to CSV and TensorBoard (rank 0 only)."""

    def __init__(self, out: Path, stage: str, enabled: bool):
        self.enabled = enabled
        self.path = out / "logs" / f"{stage}.csv"
        self.writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tensorboard" / stage))
            except ImportError:  # tensorboard is optional at run time; the CSV is the record
                self.writer = None

    def log(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        if not self.enabled:
            return
        row = {"step": step, "kind": kind, "time": round(time.time(), 3), **values}
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "kind", "time", "name", "value"])
            for k, v in values.items():
                w.writerow([step, kind, row["time"], k, f"{v:.6g}"])
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{kind}/{k}", v, step)
            self.writer.flush()

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows written after the checkpoint, so the log reads as one run."""
        if not self.enabled or not self.path.exists():
            return
        with open(self.path) as f:
            rows = list(csv.reader(f))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerows(keep)


@dataclass
class _Optimization:
    """The trained modules (wrapped or sharded) and their optimizer, as the loop steps them."""

    optimizer: Any  # accelerate's wrapper, or the plain AdamW with sharding
    raw_optimizer: torch.optim.Optimizer
    trained: dict[str, torch.nn.Module]  # the models with trainable parameters
    all_params: list[torch.nn.Parameter]
    step: torch.nn.Module  # the prepared `StepModule` (DDP-wrapped with several processes), called each step
    sharded: bool
    schedule: Any = None  # diffusers' learning-rate schedule (train.lr_schedule), stepped after the optimizer
    ema: Any = None  # diffusers' EMAModel over `all_params` (train.ema_decay > 0)


def _check_launch(accelerator, tcfg, batch_size: int) -> bool:
    """Whether this run is fully sharded; a launch the loop does not support is a `TrainingError`."""
    world = accelerator.num_processes
    if accelerator.distributed_type.name in ("DEEPSPEED", "FSDP"):
        raise TrainingError(f"accelerate's {accelerator.distributed_type.name} is not used: launch with --multi_gpu and "
                            f"set `train.sharding: fsdp` in the config for fully sharded training")
    if tcfg.sharding not in ("ddp", "fsdp"):
        raise TrainingError(f"train.sharding must be 'ddp' or 'fsdp', got {tcfg.sharding!r}")
    if batch_size % world:
        raise TrainingError(f"batch size {batch_size} must divide by the number of processes {world}")
    return tcfg.sharding == "fsdp" and world > 1


def _optimization(spec: StageSpec, tcfg, accelerator, sharded: bool, ckpt: Path | None) -> _Optimization:
    """Shard or prepare the trained models and build AdamW over them, restored from `ckpt` when resuming."""
    trained = {k: m for k, m in spec.models.items() if any(p.requires_grad for p in m.parameters())}
    param_groups = spec.params
    if sharded:
        from reworld.training.sharding import shard_models

        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg.mixed_precision)
        param_groups = shard_models(trained, spec.params, accelerator.device, param_dtype=low)
    optimizer = torch.optim.AdamW(param_groups, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    if ckpt is not None:
        optimizer_state_from_files(optimizer, ckpt)
    all_params = [p for g in param_groups for p in g["params"]]
    step: torch.nn.Module = StepModule(trained, spec.step_fn)
    if not sharded:  # FSDP2 shards the models in place and reduce-scatters itself: its step is called as it is
        step, optimizer = accelerator.prepare(step, optimizer)
    raw_optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    return _Optimization(optimizer, raw_optimizer, trained, all_params, step, sharded)


def _train_step(spec: StageSpec, opt: _Optimization, accelerator, idx: np.ndarray,
                generator: torch.Generator, step: int, watch: NonFiniteWatch) -> dict[str, torch.Tensor]:
    """One optimizer step on this rank's share `idx` of the global batch; returns this rank's loss terms."""
    for m in opt.trained.values():
        m.train()
    with accelerator.autocast():  # train.mixed_precision (a no-op for "no"); the weights stay fp32
        terms = opt.step(idx, generator)
    watch.update(terms, step)
    opt.optimizer.zero_grad(set_to_none=True)
    accelerator.backward(terms["total"])  # DDP all-reduces / FSDP reduce-scatters the gradients in backward
    accelerator.clip_grad_norm_(opt.all_params, 1.0)
    opt.optimizer.step()
    opt.schedule.step()
    if opt.ema is not None:
        opt.ema.step(opt.all_params)
    return {k: v.detach() for k, v in terms.items()}


def _plain_models(spec: StageSpec, opt: _Optimization, accelerator) -> dict[str, torch.nn.Module]:
    """The models as plain modules; with sharding, gathered in full on rank 0 (every rank must call)."""
    if not opt.sharded:
        return {k: accelerator.unwrap_model(m) for k, m in spec.models.items()}
    from reworld.training.sharding import gather_state_dict, plain_copy

    main = accelerator.is_main_process
    states = {k: gather_state_dict(m, main) for k, m in opt.trained.items()}
    return {k: plain_copy(m, states[k]) if k in opt.trained and main else m for k, m in spec.models.items()}


def _checkpoint(spec: StageSpec, opt: _Optimization, accelerator, out: Path, done: int, meta: dict
                ) -> dict[str, torch.nn.Module]:
    """Write the checkpoint of step `done` (rank 0) and return the plain models it holds (every rank calls)."""
    accelerator.wait_for_everyone()
    models = _plain_models(spec, opt, accelerator)
    if opt.sharded:
        from reworld.training.sharding import gather_optimizer_state

        opt_state = gather_optimizer_state(opt.raw_optimizer, accelerator.is_main_process)
    else:
        opt_state = opt.raw_optimizer
    # the averages ride in the checkpoint folder (gathered from shards: every rank calls)
    extra = {EMA_FILE: ema_tensors(opt.ema)} if opt.ema is not None else {}
    if accelerator.is_main_process:
        save_checkpoint(out, spec.name, done, models, opt_state, meta, tensor_files=extra)
    accelerator.wait_for_everyone()
    return models


def run(spec: StageSpec, config: Config, out: Path, max_steps: int, resume: bool, accelerator) -> dict:
    # -- setup ----------------------------------------------------------------------------------
    tcfg = config.train
    out = Path(out)
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    batch_size = spec.batch_size or tcfg.batch_size
    sharded = _check_launch(accelerator, tcfg, batch_size)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))

    # -- model and optimizer, resumed from the last complete checkpoint ----------------------------
    start = 0
    ckpt = latest_checkpoint(out, spec.name) if resume else None
    if resume and ckpt is None and main:
        print(f"[{spec.name}] --resume: no complete checkpoint in {out}/checkpoints/{spec.name}; starting at step 0")
    if ckpt is not None:
        spec.load_fn(ckpt)  # into the plain models, before any sharding
        start = json.loads((ckpt / "meta.json").read_text())["step"]
    opt = _optimization(spec, tcfg, accelerator, sharded, ckpt)
    opt.schedule = make_schedule(opt.raw_optimizer, tcfg, max_steps, start)
    opt.ema = make_ema(opt.all_params, tcfg, sharded)
    if opt.ema is not None and ckpt is not None and not ema_state_from_files(opt.ema, ckpt):
        opt.ema.optimization_step = start  # the checkpoint was written without EMA: average from here on
        if main:
            print(f"[{spec.name}] {ckpt} holds no EMA weights; the average starts from its weights at step {start}")
    logger = RunLogger(out, spec.name, main)
    logger.truncate_after(start)

    # -- loop -------------------------------------------------------------------------------------
    from tqdm import tqdm

    bar = tqdm(total=max_steps, initial=start, desc=f"{spec.name}", disable=not main, dynamic_ncols=True)
    last: dict[str, float] = {}  # the loss terms of the last logged step, averaged over ranks
    final_models = None  # the plain models of the last checkpoint (with sharding: gathered), reused for export
    watch = NonFiniteWatch()
    t_start = time.time()
    files = step_files(spec, tcfg, batch_size, rank, world, start, max_steps, pin=accelerator.device.type == "cuda")
    for step in range(start, max_steps):
        idx = global_batch(spec.num_items, batch_size, tcfg.seed, step)[rank::world]
        if files is not None:  # this step's rows, read ahead by the DataLoader
            ahead = next(files)
            for name, store in spec.stores.items():
                store.serve(idx, ahead[name])
        terms = _train_step(spec, opt, accelerator, idx, step_generator(tcfg.seed, step, rank, world), step, watch)
        done = step + 1
        due = [done % every == 0 or done == max_steps for every in (tcfg.log_every, tcfg.val_every, tcfg.ckpt_every)]
        if any(due):  # no host sync in between: a non-finite loss is caught before it is logged or saved
            watch.check(spec.name)
        if due[0]:  # one all-reduce and host sync per log, not per step
            last = {k: float(accelerator.reduce(v, reduction="mean")) for k, v in terms.items()}
            logger.log(done, last)
            bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()})
        bar.update(1)
        if spec.validate_fn is not None and (done % tcfg.val_every == 0 or done == max_steps):
            accelerator.wait_for_everyone()
            if main or sharded:  # a sharded forward needs every rank; rank 0 logs
                with ema_weights(opt.ema, opt.all_params):  # the weights that will be exported
                    val = spec.validate_fn(done)
                if main:
                    logger.log(done, val, kind="val")
                    bar.write(f"[{spec.name}] step {done} val " + " ".join(f"{k}={v:.4g}" for k, v in val.items()))
        if done % tcfg.ckpt_every == 0 or done == max_steps:
            meta = {"seconds": round(time.time() - t_start, 1), "sharding": tcfg.sharding if world > 1 else "none",
                    **spec.meta}
            final_models = _checkpoint(spec, opt, accelerator, out, done, meta)
    bar.close()

    # -- export -----------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    if spec.export_fn is not None:
        with ema_weights(opt.ema, opt.all_params):  # with EMA, the averages are the model the run makes
            if opt.ema is not None or final_models is None:
                final_models = _plain_models(spec, opt, accelerator)
            if main:
                spec.export_fn(final_models)
    accelerator.wait_for_everyone()
    return {"stage": spec.name, "steps": max_steps, "start": start, "seconds": time.time() - t_start,
            "last": last, "finite": all(math.isfinite(v) for v in last.values())}
