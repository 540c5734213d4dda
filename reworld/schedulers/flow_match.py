"""Flow-matching noise schedules, pure functions (diffusers' `FlowMatchEulerDiscreteScheduler` convention).

`x_t = (1 − σ) x0 + σ ε`, σ ∈ [0, 1]: σ = 1 is pure noise, σ = 0 the clean sample. Sampling walks a grid
of σ from 1 to 0 (`flow_sigmas`); training draws σ from a shifted logit-normal (`sample_sigmas`, diffusers'
`compute_density_for_timestep_sampling("logit_normal")` followed by the time shift). Both the Video DiT
and the Action DiT use these; nothing else computes a σ.
"""
from __future__ import annotations

import math
from pathlib import Path

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


def ltx_schedule(folder: str | Path, tokens: int) -> tuple[float, float | None, Path] | None:
    """(shift, shift_terminal, file) of the scheduler that ships with a pretrained diffusers model, for a sequence of
    `tokens`: `scheduler/scheduler_config.json` of the pipeline folder `folder` or of the one holding it (a component
    folder such as `<ltx>/transformer`), read with diffusers' `FlowMatchEulerDiscreteScheduler.load_config`. With
    `use_dynamic_shifting` the shift is the one its μ gives at `tokens` (`dynamic_shift`; exp(μ) for the exponential
    time shift, μ for the linear one), else its fixed `shift`. None when no such file is there."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = Path(folder)
    found = next((d / "scheduler" for d in (folder, folder.parent)
                  if (d / "scheduler" / "scheduler_config.json").is_file()), None)
    if found is None:
        return None
    try:
        cfg = FlowMatchEulerDiscreteScheduler.load_config(str(found))
        shift = float(cfg.get("shift", 1.0))
        if cfg.get("use_dynamic_shifting"):
            shift = dynamic_shift(tokens, int(cfg.get("base_image_seq_len", 256)),
                                  int(cfg.get("max_image_seq_len", 4096)), float(cfg.get("base_shift", 0.5)),
                                  float(cfg.get("max_shift", 1.15)))
            if cfg.get("time_shift_type", "exponential") == "linear":
                shift = math.log(shift)  # the linear time shift is SD3's with shift μ itself
        terminal = cfg.get("shift_terminal")
        terminal = float(terminal) if terminal else None
    except (OSError, ValueError, TypeError) as e:  # diffusers raises EnvironmentError on a malformed file
        raise ValueError(f"{found / 'scheduler_config.json'}: not a readable scheduler config "
                         f"({str(e).splitlines()[0]})") from None
    return shift, terminal, found / "scheduler_config.json"


def schedule_mismatch(config_shift: float, config_terminal: float | None, folder: str | Path,
                      tokens: int) -> str | None:
    """A note when a config's `loss.shift` / `loss.shift_terminal` are not the schedule of the pretrained model it
    starts from (`ltx_schedule` at its token count); None when they agree (to 0.5 %) or the folder has no scheduler."""
    try:
        found = ltx_schedule(folder, tokens)
    except ValueError as e:  # the check is a note: a broken scheduler file beside the weights does not stop a run
        return f"the schedule was not checked: {e}"
    if found is None:
        return None
    shift, terminal, path = found
    same_terminal = (terminal is None) == (config_terminal is None) and (
        terminal is None or abs(terminal - config_terminal) <= 1e-6)
    if abs(config_shift - shift) <= 5e-3 * shift and same_terminal:
        return None
    return (f"loss.shift {config_shift:g}, loss.shift_terminal {config_terminal} are not the schedule of the "
            f"pretrained model ({path}: shift {shift:.4f} at these {tokens} tokens, shift_terminal {terminal}); set "
            f"them to train and sample on its schedule, or keep them on purpose")


def sample_sigmas(batch: int, generator: torch.Generator | None, logit_mean: float, logit_std: float,
                  shift: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch,) σ ∈ (0, 1) from a shifted logit-normal, drawn on the CPU `generator` (same σ on every device)."""
    u = torch.randn(batch, generator=generator, device="cpu") * logit_std + logit_mean
    return shift_sigmas(torch.sigmoid(u), shift).to(device)
