"""The Video DiT hidden states that the Action DiT reads: one forward pass of the Video DiT with the context
latents clean and the future latents noised to σ (`action.feature_sigma`, 1 by default: pure noise), keeping
the outputs of the chosen blocks (`video.feature_blocks`), average-pooled over `action.feature_pool`² latent
pixels. Inference (the pipeline) and training (stages `action` and `joint`, and the stage-2 cache) take them
from here, so the planner sees the same inputs in both.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from reworld.config import Config
from reworld.models.video_dit import VideoCond


def hidden_state_blocks(config: Config, video_dit) -> list[int]:
    """The Video DiT blocks whose outputs the planner reads (`video.feature_blocks`; empty = every block)."""
    n = len(video_dit.transformer.transformer_blocks)
    blocks = list(config.video.feature_blocks) or list(range(n))
    if any(b < 0 or b >= n for b in blocks):
        raise ValueError(f"video.feature_blocks {blocks} outside the Video DiT's {n} blocks")
    return blocks


def alignment_position(config: Config, blocks: list[int]) -> int:
    """Index into `blocks` of the alignment target (`action.align_video_block`; the middle one when the planner does
    not read that block)."""
    block = config.action.align_video_block
    return blocks.index(block) if block in blocks else len(blocks) // 2


def video_hidden_states(video_dit, latents: torch.Tensor, command: torch.Tensor, ego: torch.Tensor, n_ctx: int,
                        blocks: list[int], sigma: float, pool: int,
                        generator: torch.Generator | Sequence[torch.Generator]) -> list[torch.Tensor]:
    """Hidden states of `blocks` for clean latents (B, C, t, h, w): future frames noised to `sigma` (noise from
    one CPU `generator`, or one generator per clip, so that a clip's features do not depend on its batch).
    Returns one (B, S', D) per block, S' = t · (h/(p·pool)) · (w/(p·pool)) for the Video DiT's patch p."""
    b, c, t, h, w = latents.shape
    shape = latents[:, :, n_ctx:].shape
    if isinstance(generator, torch.Generator):
        noise = torch.randn(shape, generator=generator).to(latents)
    else:
        if len(generator) != b:
            raise ValueError(f"{len(generator)} generators for {b} clips")
        noise = torch.stack([torch.randn(shape[1:], generator=g) for g in generator]).to(latents)
    future = (1 - sigma) * latents[:, :, n_ctx:] + sigma * noise
    x = torch.cat([latents[:, :, :n_ctx], future], dim=2)  # (B, C, t, h, w)
    out = video_dit(x, torch.full((b,), sigma, device=latents.device), VideoCond(command, ego), n_ctx,
                    return_hidden_states=blocks)
    states = []
    gh, gw = video_dit.token_grid(h, w)  # tokens per latent frame (h, w with patch 1)
    for k in blocks:
        hs = out.hidden_states[k]  # (B, t·gh·gw, D)
        if pool > 1:
            d = hs.shape[-1]
            hs = hs.view(b * t, gh, gw, d).permute(0, 3, 1, 2)
            hs = torch.nn.functional.avg_pool2d(hs, pool)  # (B·t, D, h/p, w/p)
            hs = hs.permute(0, 2, 3, 1).reshape(b, -1, d)  # (B, S', D)
        states.append(hs)
    return states


def future_token_mean(hidden_states: torch.Tensor, n_ctx: int, t: int) -> torch.Tensor:
    """Mean over the future latent frames' tokens: (B, S', D) → (B, D)."""
    per_frame = hidden_states.shape[1] // t
    return hidden_states[:, n_ctx * per_frame:].mean(dim=1)


ALIGN_TARGETS = ("pooled", "frames")


def waypoint_frames(n_future: int, num_waypoints: int) -> list[int]:
    """The future latent frame at each waypoint's time (both evenly spaced over the horizon, each ending at its
    time): waypoint k → frame ⌈(k + 1) · n_future / N⌉ − 1."""
    return [min(n_future - 1, -(-(k + 1) * n_future // num_waypoints) - 1) for k in range(num_waypoints)]


def frame_means(hidden_states: torch.Tensor, t: int) -> torch.Tensor:
    """The mean token of each latent frame: (B, S', D) → (B, t, D)."""
    b, s, d = hidden_states.shape
    return hidden_states.view(b, t, s // t, d).mean(dim=2)


def target_from_frames(frames: torch.Tensor, n_ctx: int, kind: str, num_waypoints: int) -> torch.Tensor:
    """The alignment target from the frame means (B, t, D) of block `align_video_block`: "pooled" → (B, D), the mean
    of the future frames (= of the future tokens); "frames" → (B, N, D), waypoint k's row its future latent frame."""
    future = frames[:, n_ctx:]  # (B, n_future, D)
    if kind == "pooled":
        return future.mean(dim=1)
    if kind != "frames":
        raise ValueError(f"action.align_target must be one of {ALIGN_TARGETS}, got {kind!r}")
    return future[:, waypoint_frames(future.shape[1], num_waypoints)]


def alignment_target(hidden_states: torch.Tensor, n_ctx: int, t: int, kind: str, num_waypoints: int) -> torch.Tensor:
    """The alignment target of block `align_video_block`'s hidden states (B, S', D) (`target_from_frames`)."""
    if kind not in ALIGN_TARGETS:
        raise ValueError(f"action.align_target must be one of {ALIGN_TARGETS}, got {kind!r}")
    return target_from_frames(frame_means(hidden_states, t), n_ctx, kind, num_waypoints)


def target_frames(video_dit, latents: torch.Tensor, command: torch.Tensor, ego: torch.Tensor, n_ctx: int, block: int,
                  sigma: float, generator) -> torch.Tensor:
    """The frame means (B, t, D) of block `block` in a Video DiT pass with the future at `sigma` (`action.align_sigma`:
    0 = the clean future), the alignment target's source when it is not the planner's own pass."""
    t = latents.shape[2]
    (hs,) = video_hidden_states(video_dit, latents, command, ego, n_ctx, [block], sigma, 1, generator)
    return frame_means(hs, t)
