"""The one sampling loop of the Action DiT: Euler flow matching of trajectories on the shared σ grid, time-shifted as
its training σ were (`loss.shift`)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from reworld.models.action_dit import ActionDiT
from reworld.schedulers.flow_match import flow_sigmas


@torch.no_grad()
def plan_sample(
    model: ActionDiT,
    video_hidden_states: list[torch.Tensor],
    ego_status: torch.Tensor,
    command: torch.Tensor,
    steps: int = 10,
    num_samples: int = 1,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    guidance: float | None = None,
    shift: float = 1.0,
) -> torch.Tensor:
    """Sample trajectories with `steps` Euler steps (σ 1 → 0) on the grid time-shifted by `shift`: the shift the
    planner was trained with (`loss.shift`), so that its steps walk the σ it learned.
    video_hidden_states: one (B, S, D_video) per block the planner reads, computed once and reused for every step;
    ego_status (B, E); command (B,). Noise is drawn on the CPU `generator` (or one generator per clip, so that a
    clip's plan does not depend on its batch), so a seed gives the same start on every device.
    Returns (B, num_samples, N, P) denormalised poses."""
    if guidance not in (None, 1.0):
        raise ValueError("the Action DiT has no guidance branch; pass guidance=None")
    if steps < 1 or num_samples < 1:
        raise ValueError(f"steps and num_samples must be ≥ 1, got {steps}, {num_samples}")
    cfg = model.config
    b = ego_status.shape[0]
    device = model.pose_embed.weight.device
    if generator is None or isinstance(generator, torch.Generator):
        noise = torch.randn((b, num_samples, cfg.num_waypoints, cfg.pose_dim), generator=generator)
    else:
        if len(generator) != b:
            raise ValueError(f"{len(generator)} generators for {b} clips")
        noise = torch.stack([torch.randn((num_samples, cfg.num_waypoints, cfg.pose_dim), generator=g)
                             for g in generator])
    # the state stays float32 even for a bf16 model; forward casts its input
    x = noise.reshape(b * num_samples, cfg.num_waypoints, cfg.pose_dim).to(device)  # (B·S, N, P)
    ego = ego_status.to(device).repeat_interleave(num_samples, dim=0)  # (B·S, E)
    cmd = command.to(device).repeat_interleave(num_samples, dim=0)  # (B·S,)
    sigmas = torch.tensor(flow_sigmas(steps, shift), dtype=torch.float32, device=device)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        v = model(x, sigma.expand(x.shape[0]), video_hidden_states, ego, cmd).sample  # (B·S, N, P)
        x = x + (sigma_next - sigma) * v.float()
    poses = model.denormalize(x, ego)  # (B·S, N, P)
    return poses.reshape(b, num_samples, cfg.num_waypoints, cfg.pose_dim)
