"""The one Euler flow-matching sampler of the Video DiT, with intermediate-supervised guidance
(docs/design.md §2).

Every caller (pipelines, evaluation, analysis, app) samples through `sample_future`.

Convention: `x_t = (1 − σ) x0 + σ ε`, velocity `v ≈ ε − x0`, step `x ← x + (σ_next − σ) v`, σ: 1 → 0.
Guidance: `v_w = v_i + w (v_f − v_i)` with `v_i` the velocity of an intermediate head and `v_f` the final
one, both from the same forward pass; `w = 1` (or a step outside the guidance interval) uses `v_f`
itself, so it is bitwise the unguided sampler.
Command guidance (optional, `command_guidance` s > 0): `v ← v + s (v_f − v̄_f)` with `v̄_f` the mean final velocity
of the same x_t under each *other* driving command (a contrast with the other commands, as negative-prompt guidance
contrasts with a negative condition): it amplifies whatever the model's prediction owes to its command, at one
more forward per other command and step; s = 0 is bitwise the sampler without it.
Motion guidance (optional, `motion_guidance` s_m > 0; a Video DiT with `motion_feedback`, docs/world4s.md E17):
`v ← v + s_m (v_f − v_f^∅)` with `v_f^∅` the final velocity of the same x_t without the poses fed back to the later
blocks: VideoJAM's Inner-Guidance, the model steered by its own prediction of the motion (or by `motion_input`,
poses a caller wants imagined), at one more forward per step; s_m = 0 is bitwise the sampler without it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from reworld.config import Config
from reworld.schedulers.flow_match import flow_sigmas


def default_motion_guidance(config: Config) -> float:
    """The motion guidance s_m a run samples with unless told otherwise: `train.motion_guidance` for a Video DiT
    with `video.motion_feedback`, else 0 (the training stages refuse the key without the feedback)."""
    return float(config.train.motion_guidance) if config.video.motion_feedback else 0.0


def default_guidance(config: Config) -> float:
    """The guidance w a run samples with unless told otherwise: `train.guidance` when its Video DiT has an
    intermediate head that was trained (λ_ig > 0), else 1 (the plain sampler); also 1 for IG's training-loss variant
    (`loss.ig_target_shift` > 0), whose final output has the guidance learned in. The one copy of this rule."""
    if config.loss.ig_target_shift > 0:
        return 1.0
    return config.train.guidance if (tuple(config.video.head_blocks) and config.loss.lambda_ig > 0) else 1.0


class SamplingStopped(RuntimeError):
    """Raised by `sample_future` when its `should_stop` callable answered True."""

    def __init__(self, steps_done: int):
        super().__init__(f"sampling stopped after {steps_done} step(s)")
        self.steps_done = steps_done


@dataclass
class StepRecord:
    """One Euler step, future latent frames only, on the CPU."""

    step: int
    sigma: float
    sigma_next: float
    guided: bool  # whether v_w (not v_f) moved the sample at this step
    v_final: torch.Tensor  # (B, C, t_fut, h, w)
    v_heads: dict[int, torch.Tensor]  # block → (B, C, t_fut, h, w)
    x0_final: torch.Tensor  # x_t − σ v_f: the final output's prediction of the clean future
    x0_heads: dict[int, torch.Tensor]  # x_t − σ v_i per head
    decoded: dict[str, Any] = field(default_factory=dict)  # "final" / "head_<k>": decode_fn of the x0 previews
    v_lens: dict[int, torch.Tensor] = field(default_factory=dict)  # block → the output layer on it (`record_lens`)

    @property
    def x_t(self) -> torch.Tensor:
        """The future latents this step started from (x0_final + σ v_final)."""
        return self.x0_final + self.sigma * self.v_final


@dataclass
class SampleResult:
    latents: torch.Tensor  # (B, C, n_ctx + n_future, h, w): context (exactly as given) then the sampled future
    record: list[StepRecord] | None = None  # per step, when asked for
    n_context: int = 0

    @property
    def future(self) -> torch.Tensor:
        return self.latents[:, :, self.n_context :]  # (B, C, n_future, h, w)


def _to_cpu(x: Any) -> Any:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else x


@torch.no_grad()
def sample_future(
    model,
    context_latents: torch.Tensor,
    cond,
    n_future: int,
    steps: int,
    *,
    generator: torch.Generator,
    guidance: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    guidance_head: int | None = None,
    command_guidance: float = 0.0,
    motion_guidance: float = 0.0,
    motion_input: torch.Tensor | None = None,
    shift: float = 1.0,
    shift_terminal: float | None = None,
    record: bool = False,
    record_lens: bool = False,
    decode_fn: Callable[[torch.Tensor], Any] | None = None,
    callback: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SampleResult:
    """Sample `n_future` latent frames after `context_latents` (B, C, n_ctx, h, w) with `steps` Euler steps.

    generator: CPU `torch.Generator`; the initial noise is drawn on it and moved to the model's device.
    guidance: w; 1.0 = plain sampler. guidance_interval: (σ_lo, σ_hi), guide only while σ_lo ≤ σ ≤ σ_hi.
    guidance_head: block of the head that gives v_i (default: the shallowest head the model returns).
    command_guidance: s ≥ 0 of the contrast with the other commands (module docstring); needs a `cond` with a
    `command` and a model with `config.num_commands`.
    motion_guidance: s_m ≥ 0 of the contrast with the model's fed-back poses (module docstring); motion_input
    (B, n_future, 3): normalised poses fed back instead of the head's reading (both need `motion_feedback`).
    record: keep a `StepRecord` per step; `decode_fn(latents (B, C, t, h, w))` (e.g. VAE decoding) is then
    applied to the x0 previews, with the context latents in front. record_lens: the records also keep the output
    layer's velocity on every block (`StepRecord.v_lens`, the model's `return_lens`); needs `record`.
    callback(step, steps, sigma) after each step; should_stop() before each step → `SamplingStopped`.
    """
    if context_latents.ndim != 5:
        raise ValueError(f"context_latents must be (B, C, n_ctx, h, w), got {tuple(context_latents.shape)}")
    if n_future < 1:
        raise ValueError(f"n_future must be ≥ 1, got {n_future}")
    if record_lens and not record:
        raise ValueError("record_lens needs record=True")
    if generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (noise is drawn on the CPU)")
    if not command_guidance >= 0:
        raise ValueError(f"command_guidance must be ≥ 0, got {command_guidance}")
    if not motion_guidance >= 0:
        raise ValueError(f"motion_guidance must be ≥ 0, got {motion_guidance}")
    feedback = getattr(getattr(model, "config", None), "motion_feedback", False)
    if (motion_guidance > 0 or motion_input is not None) and not feedback:
        raise ValueError("motion_guidance / motion_input need a Video DiT with motion_feedback")
    fed = {} if motion_input is None else {"motion_input": motion_input}
    others = []
    if command_guidance > 0:
        if getattr(cond, "command", None) is None:
            raise ValueError("command_guidance needs a condition with a driving command")
        num = model.config.num_commands
        others = [dataclasses.replace(cond, command=(cond.command + k) % num) for k in range(1, num)]
    b, c, n_ctx, h, w = context_latents.shape
    # the sampler's state is at least float32 whatever the model computes in (bf16 steps would drift)
    device, dtype = context_latents.device, torch.promote_types(context_latents.dtype, torch.float32)
    context_latents = context_latents.to(dtype)
    noise = torch.randn((b, c, n_future, h, w), generator=generator, dtype=torch.float32)
    x = noise.to(device=device, dtype=dtype)  # (B, C, n_future, h, w) future latents at σ = 1
    sigmas = flow_sigmas(steps, shift, shift_terminal)
    guide_any = guidance != 1.0
    need_heads = guide_any or record
    history: list[StepRecord] | None = [] if record else None

    for i in range(steps):
        if should_stop is not None and should_stop():
            raise SamplingStopped(i)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        full = torch.cat([context_latents, x], dim=2)  # (B, C, n_ctx + n_future, h, w)
        sigma_t = torch.full((b,), sigma, device=device, dtype=dtype)
        out = (model(full, sigma_t, cond, n_ctx, return_heads=need_heads, return_lens=True, **fed) if record_lens
               else model(full, sigma_t, cond, n_ctx, return_heads=need_heads, **fed))
        v_f = out.sample[:, :, n_ctx:].to(dtype)  # (B, C, n_future, h, w)
        v_heads = {k: v[:, :, n_ctx:].to(dtype) for k, v in (out.head_samples or {}).items()}
        in_interval = guidance_interval is None or guidance_interval[0] <= sigma <= guidance_interval[1]
        guided = guide_any and in_interval
        if guided:
            if not v_heads:
                raise ValueError("guidance ≠ 1 needs a model with an intermediate velocity head")
            k = min(v_heads) if guidance_head is None else guidance_head
            if k not in v_heads:
                raise ValueError(f"guidance_head {k} is not one of the model's heads {sorted(v_heads)}")
            v = v_heads[k] + guidance * (v_f - v_heads[k])  # v_w, future tokens only
        else:
            v = v_f  # exactly the unguided velocity
        if others:
            v_other = sum(model(full, sigma_t, o, n_ctx, **fed).sample[:, :, n_ctx:].to(dtype)
                          for o in others) / len(others)
            v = v + command_guidance * (v_f - v_other)
        if motion_guidance > 0:
            v_null = model(full, sigma_t, cond, n_ctx, motion_null=True).sample[:, :, n_ctx:].to(dtype)
            v = v + motion_guidance * (v_f - v_null)
        if history is not None:
            history.append(_record_step(i, sigma, sigma_next, guided, x, v_f, v_heads, context_latents, decode_fn))
            if record_lens:
                history[-1].v_lens = {k: _to_cpu(v[:, :, n_ctx:].to(dtype)) for k, v in out.lens_samples.items()}
        x = x + (sigma_next - sigma) * v
        if callback is not None:
            callback(i + 1, steps, sigma_next)

    return SampleResult(latents=torch.cat([context_latents, x], dim=2), record=history, n_context=n_ctx)


def _record_step(step, sigma, sigma_next, guided, x, v_f, v_heads, context, decode_fn) -> StepRecord:
    x0_f = x - sigma * v_f
    x0_heads = {k: x - sigma * v for k, v in v_heads.items()}
    decoded: dict[str, Any] = {}
    if decode_fn is not None:
        decoded["final"] = _to_cpu(decode_fn(torch.cat([context, x0_f], dim=2)))
        for k, x0 in x0_heads.items():
            decoded[f"head_{k}"] = _to_cpu(decode_fn(torch.cat([context, x0], dim=2)))
    return StepRecord(
        step=step,
        sigma=sigma,
        sigma_next=sigma_next,
        guided=guided,
        v_final=_to_cpu(v_f),
        v_heads={k: _to_cpu(v) for k, v in v_heads.items()},
        x0_final=_to_cpu(x0_f),
        x0_heads={k: _to_cpu(v) for k, v in x0_heads.items()},
        decoded=decoded,
    )
