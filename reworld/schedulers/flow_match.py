"""Flow-matching noise schedules, pure functions (diffusers' `FlowMatchEulerDiscreteScheduler` convention).

`x_t = (1 − σ) x0 + σ ε`, σ ∈ [0, 1]: σ = 1 is pure noise, σ = 0 the clean sample. Sampling walks a grid
of σ from 1 to 0 (`flow_sigmas`); training draws σ from a shifted logit-normal (`sample_sigmas`, diffusers'
`compute_density_for_timestep_sampling("logit_normal")` followed by the time shift). Both the Video DiT
and the Action DiT use these; nothing else computes a σ.
"""
from __future__ import annotations

import torch


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """diffusers' time shift `σ' = shift·σ / (1 + (shift − 1)·σ)`; shift > 1 moves σ towards 1 (noise)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def flow_sigmas(steps: int, shift: float = 1.0) -> list[float]:
    """steps + 1 noise levels, linear from 1 to 0, time-shifted as diffusers' FlowMatchEulerDiscreteScheduler
    does; ends exactly at 0."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    sigmas = shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)
    return [float(s) for s in sigmas]


def sample_sigmas(batch: int, generator: torch.Generator | None, logit_mean: float, logit_std: float,
                  shift: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch,) σ ∈ (0, 1) from a shifted logit-normal, drawn on the CPU `generator` (same σ on every device)."""
    u = torch.randn(batch, generator=generator, device="cpu") * logit_std + logit_mean
    return shift_sigmas(torch.sigmoid(u), shift).to(device)
