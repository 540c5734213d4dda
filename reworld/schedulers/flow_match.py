"""Flow-matching noise schedules, pure functions (diffusers' `FlowMatchEulerDiscreteScheduler` convention).

`x_t = (1 − σ) x0 + σ ε`, σ ∈ [0, 1]: σ = 1 is pure noise, σ = 0 the clean sample. Sampling walks a grid
of σ from 1 to 0 (`flow_sigmas`); training draws σ from a shifted logit-normal (`sample_sigmas`, diffusers'
`compute_density_for_timestep_sampling("logit_normal")` followed by the time shift). Both the Video DiT
and the Action DiT use these; nothing else computes a σ.
"""
from __future__ import annotations

import math

import torch


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """diffusers' time shift `σ' = shift·σ / (1 + (shift − 1)·σ)`; shift > 1 moves σ towards 1 (noise)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_sigmas(steps: int, shift: float = 1.0, terminal: float | None = None) -> list[float]:
    """steps + 1 noise levels, linear from 1 to 0, time-shifted as diffusers' FlowMatchEulerDiscreteScheduler
    does; ends exactly at 0. `terminal`: that scheduler's `shift_terminal` (LTX-Video's: 0.1), the shifted levels
    stretched so that the last one before 0 is `terminal` (1 − σ scaled by one factor; the first stays 1)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    sigmas = shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)
    if terminal is not None:
        if not 0.0 < terminal < 1.0:
            raise ValueError(f"shift_terminal must be in (0, 1), got {terminal}")
        if steps > 1:  # one step goes from 1 to 0 whatever the stretch
            one_minus = 1.0 - sigmas[:-1]
            sigmas[:-1] = 1.0 - one_minus / (one_minus[-1] / (1.0 - terminal))
    return [float(s) for s in sigmas]


def dynamic_shift(tokens: int, base_tokens: int = 1024, max_tokens: int = 4096, base_shift: float = 0.95,
                  max_shift: float = 2.05) -> float:
    """The time shift a resolution-dependent schedule gives a sequence of `tokens` (diffusers' `calculate_shift`
    and `use_dynamic_shifting`, whose exponential time shift with μ is the SD3 shift exp(μ)): μ linear in the token
    count through (base_tokens, base_shift) and (max_tokens, max_shift). The defaults are LTX-Video's scheduler
    (`<ltx>/scheduler/scheduler_config.json`); LTX-Video's trainer draws its training σ from the logit-normal
    shifted by the same μ, which is `sample_sigmas` with this shift."""
    mu = base_shift + (max_shift - base_shift) / (max_tokens - base_tokens) * (tokens - base_tokens)
    return math.exp(mu)


def sample_sigmas(batch: int, generator: torch.Generator | None, logit_mean: float, logit_std: float,
                  shift: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch,) σ ∈ (0, 1) from a shifted logit-normal, drawn on the CPU `generator` (same σ on every device)."""
    u = torch.randn(batch, generator=generator, device="cpu") * logit_std + logit_mean
    return shift_sigmas(torch.sigmoid(u), shift).to(device)
