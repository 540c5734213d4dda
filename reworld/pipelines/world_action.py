"""`WorldActionPipeline`: the loaded models of one run folder, and the jobs users run on them.

`generate` imagines the future of a clip (optionally under another driving command), `plan` samples
trajectories and scores them with the PDM scorer, `features` gives Action DiT features of any
trajectories for the representation view. The sampling loops are the library's own
(`reworld.sampling.euler.sample_future`, `reworld.models.action_dit.plan_sample`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import Config, config_from_dict
from ..data.types import COMMANDS, Clip
from ..models.layers import CheckpointError


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class GenerationResult:
    frames: torch.Tensor  # (T_fut, 3, H, W) in [-1, 1], the imagined future
    context: torch.Tensor  # (T_ctx, 3, H, W) in [-1, 1]
    latents: torch.Tensor  # (C, t, h, w) context + sampled future latents
    command: str
    record: list | None  # per-step StepRecord when asked for
    device: str
    seconds: float


@dataclass
class PlanResult:
    trajectories: np.ndarray  # (S, 8, 3) [x, y, heading] at 0.5 … 4.0 s, ego frame
    scores: list = field(default_factory=list)  # PDMResults per trajectory
    command: str = "straight"
    device: str = "cpu"
    seconds: float = 0.0


class WorldActionPipeline:
    def __init__(self, config: Config, vae, video_dit, action_dit=None, device: torch.device | str | None = None,
                 path: str | None = None):
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        self.vae = vae.to(self.device).eval()
        self.video_dit = video_dit.to(self.device).eval()
        self.action_dit = action_dit.to(self.device).eval() if action_dit is not None else None
        self.path = path

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = None,
                        require_planner: bool = False) -> "WorldActionPipeline":
        """Load a run folder (or a shipped checkpoint) strictly; a missing folder is an error."""
        from ..models.vae import load_pretrained_vae
        from ..models.video_dit import VideoDiT

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint folder not found: {path}")
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not a ReWorld checkpoint: no config.json")
        config = config_from_dict(json.loads((path / "config.json").read_text()))
        vae = load_pretrained_vae(path / "vae")
        video = VideoDiT.from_pretrained(path / "video_dit")
        action = None
        if (path / "action_dit").is_dir():
            from ..models.action_dit import ActionDiT
            from ..models.layers import load_model_strict

            action = load_model_strict(ActionDiT, path / "action_dit")
        elif require_planner:
            raise CheckpointError(f"{path} has no action_dit/: train stage action first")
        return cls(config, vae, video, action, device=device, path=str(path))

    # ------------------------------------------------------------------------------------------
    def _cond(self, clip: Clip, command: str | None):
        from ..models.video_dit import VideoCond

        if command is not None and command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
        index = COMMANDS.index(command) if command is not None else clip.observation.command
        cond = VideoCond(command=torch.tensor([index], device=self.device),
                         ego_status=clip.observation.ego_status[None].to(self.device))
        return cond, COMMANDS[index]

    @torch.no_grad()
    def encode_context(self, clip: Clip) -> torch.Tensor:
        """Context latents (1, C, n_ctx, h, w)."""
        from ..models.vae import encode_frames, latent_split

        n_ctx, _ = latent_split(self.config.data, self.vae)
        # the causal encoder sees context frames only, so no future leaks into the context latents
        return encode_frames(self.vae, clip.observation.frames[None].to(self.device))[:, :, :n_ctx]

    @torch.no_grad()
    def generate(self, clip: Clip, steps: int = 20, guidance: float = 1.0, seed: int = 0, command: str | None = None,
                 guidance_interval: tuple[float, float] | None = None, record: bool = False,
                 decode_previews: bool = False, callback: Callable | None = None,
                 should_stop: Callable[[], bool] | None = None) -> GenerationResult:
        from ..models.vae import decode_latents, latent_split
        from ..sampling.euler import sample_future

        _check_steps(steps)
        t0 = time.perf_counter()
        _, n_fut = latent_split(self.config.data, self.vae)
        cond, name = self._cond(clip, command)
        context = self.encode_context(clip)
        n_ctx_frames = self.config.data.context_frames

        def decode(latents):
            return decode_latents(self.vae, latents)[0, n_ctx_frames:].cpu()

        res = sample_future(self.video_dit, context, cond, n_fut, steps, generator=torch.Generator().manual_seed(seed),
                            guidance=guidance, guidance_interval=guidance_interval, record=record,
                            decode_fn=decode if (record and decode_previews) else None, callback=callback,
                            should_stop=should_stop)
        frames = decode(res.latents)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return GenerationResult(frames=frames, context=clip.observation.frames, latents=res.latents[0].cpu(),
                                command=name, record=res.record, device=str(self.device),
                                seconds=time.perf_counter() - t0)


def _check_steps(steps: int, limit: int = 1000) -> None:
    if not isinstance(steps, int) or not 1 <= steps <= limit:
        raise ValueError(f"steps must be an integer in [1, {limit}], got {steps!r}")
