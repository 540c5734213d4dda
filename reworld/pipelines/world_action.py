"""`WorldActionPipeline`: the loaded models of one run folder, and the jobs users run on them.

`generate` imagines the future of a clip (optionally under another driving command), `plan` samples
trajectories and scores them with the PDM scorer, `planner_features` gives Action DiT features of any
trajectories for the representation view, `video_hidden_states` the Video DiT block outputs the planner
reads. The sampling loops are the library's own (`reworld.sampling.sample_future`, `reworld.sampling.plan_sample`).
What a caller needs to know about the loaded run (its heads, its default guidance, its planner's steps, the
clip shape it expects) is a property here, so no caller reads the models' configs.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reworld.config import Config, DataConfig
from reworld.data.types import COMMANDS, Clip
from reworld.models.action_dit import ActionDiT
from reworld.models.layers import CheckpointError, file_digest, load_model_strict, state_digest
from reworld.models.vae import (configure_vae, decode_latents, encode_frames, latent_split, load_pretrained_vae,
                                use_onednn_conv3d)
from reworld.models.video_dit import VideoCond, VideoDiT
from reworld.pipelines.hidden_states import (alignment_position, future_token_mean, hidden_state_blocks,
                                             video_hidden_states)
from reworld.pipelines.run_folder import read_run_config, vae_folder
from reworld.planning.pdm import reference_progress, score_trajectories
from reworld.planning.scene import PlanningScene
from reworld.runtime import default_device
from reworld.sampling import default_guidance, default_motion_guidance, plan_sample, sample_future


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


class _SharedFirstPass:
    """The Video DiT as `sample_future` and `video_hidden_states` call it, with its pass at σ = 1 remembered.

    The planner's features (σ = `action.feature_sigma`, 1 by default) and the sampler's first step are the same pass
    when a clip is planned and generated with one seed: both draw their noise first on a fresh generator of that
    seed, and at σ = 1 the future latents are that noise. So a pass at σ = 1 is made once with everything either
    job reads (the heads' velocities, the planner's blocks' hidden states) and a later call whose inputs are
    exactly equal (`torch.equal`: latents, σ, command, ego status, context length) gets it back: the app's plan
    then video of a clip make 4 Video DiT passes instead of 5. Any other call passes straight through."""

    def __init__(self, model, blocks: list[int], memo: OrderedDict, size: int):
        self.model, self.blocks, self.memo, self.size = model, blocks, memo, size

    def __getattr__(self, name):  # config, token_grid, … of the Video DiT
        return getattr(self.model, name)

    def __call__(self, latents, sigma, cond, n_context, *, return_heads=False, return_hidden_states=None,
                 return_lens=False, **motion):
        wanted = set(int(k) for k in (return_hidden_states or ()))
        sigma_t = torch.as_tensor(sigma)
        motion = {k: v for k, v in motion.items() if v is not None and v is not False}  # fed poses / null: not memoised
        if (self.size <= 0 or return_lens or motion or not bool((sigma_t == 1.0).all())
                or not wanted <= set(self.blocks)):
            return self.model(latents, sigma, cond, n_context, return_heads=return_heads,
                              return_hidden_states=return_hidden_states, return_lens=return_lens, **motion)
        key = (latents, sigma_t, cond.command, cond.ego_status, n_context)
        for k, (inputs, out) in self.memo.items():
            if inputs[4] == n_context and all(torch.equal(a, b) for a, b in zip(inputs[:4], key[:4])):
                self.memo.move_to_end(k)
                return out
        out = self.model(latents, sigma, cond, n_context, return_heads=True, return_hidden_states=self.blocks)
        self.memo[id(out)] = (tuple(t.clone() if torch.is_tensor(t) else t for t in key), out)
        while len(self.memo) > self.size:
            self.memo.popitem(last=False)
        return out


class WorldActionPipeline:
    def __init__(self, config: Config, vae, video_dit, action_dit=None, device: torch.device | str | None = None,
                 path: str | None = None):
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        # a clip's VAE convolutions on oneDNN on the CPU (PyTorch's heuristic leaves them on its naive kernel)
        self.vae = use_onednn_conv3d(vae.to(self.device).eval())
        self.video_dit = video_dit.to(self.device).eval()
        self.action_dit = action_dit.to(self.device).eval() if action_dit is not None else None
        self.path = path
        self._world_digest: str | None = None  # `world_model_digest`'s memo
        self.resident = True  # the transformers on `device` (False after `offload`)
        # context latents of the last clips encoded (0 = no cache): an app asks for the same clip's context for its
        # video, its plan and its analyses; a hit needs the very same frames tensor, so a reloaded clip is re-encoded
        self.context_cache_size = 0
        self._context_cache: OrderedDict = OrderedDict()
        self._reference_cache: OrderedDict = OrderedDict()  # the same size: scenes' reference progress (PDM)
        self._first_passes: OrderedDict = OrderedDict()  # `_SharedFirstPass`'s memo (while the cache is on)

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the Video DiT and the Action DiT to `device` (host memory) while another checkpoint works; the VAE
        stays where it is (checkpoints may share it). `onload` brings them back before the next job."""
        self.video_dit.to(device)
        if self.action_dit is not None:
            self.action_dit.to(device)
        self._first_passes.clear()  # their tensors live on the accelerator
        self.resident = False

    def onload(self) -> None:
        if not self.resident:
            self.video_dit.to(self.device)
            if self.action_dit is not None:
                self.action_dit.to(self.device)
            self.resident = True

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = None,
                        require_planner: bool = False, torch_dtype: torch.dtype | None = None,
                        shared_vaes: dict | None = None) -> "WorldActionPipeline":
        """Load a run folder (or a shipped checkpoint) strictly; a missing folder is an error.

        torch_dtype: the VAE and the Video DiT in this dtype (e.g. `torch.bfloat16` on a GPU); the Action DiT
        stays float32 (it is small, and its pose statistics are in metres, which bf16 would round by decimetres).
        Samplers keep their state in float32 and every model casts its inputs.
        shared_vaes: a dict kept across calls; checkpoints whose VAE is the same folder then share one VAE object
        (the shipped checkpoints share one through `components.json`); the app loads its checkpoints so."""
        path = Path(path)
        config = read_run_config(path)
        folder = vae_folder(path, config).resolve()
        if shared_vaes is not None and (folder, torch_dtype) in shared_vaes:
            vae = shared_vaes[(folder, torch_dtype)]
        else:
            vae = configure_vae(load_pretrained_vae(folder, torch_dtype=torch_dtype), config.vae)
            if shared_vaes is not None:
                shared_vaes[(folder, torch_dtype)] = vae
        video = VideoDiT.from_pretrained(path / "video_dit", dtype=torch_dtype)
        action = None
        if (path / "action_dit").is_dir():
            action = load_model_strict(ActionDiT, path / "action_dit")
        elif require_planner:
            raise CheckpointError(f"{path} has no action_dit/: train stage action first")
        pipe = cls(config, vae, video, action, device=device, path=str(path))
        # the weights as stored, whatever dtype they are loaded in
        pipe._world_digest = hashlib.sha256(f"{file_digest(folder)}:{file_digest(path / 'video_dit')}".encode()
                                            ).hexdigest()[:16]
        return pipe

    # ------------------------------------------------------------------------------------------
    @property
    def heads(self) -> tuple[int, ...]:
        """Blocks of the Video DiT with an intermediate velocity head (empty: none)."""
        return tuple(self.video_dit.config.head_blocks)

    @property
    def trained_heads(self) -> tuple[int, ...]:
        """The heads its run trained (λ_ig > 0): a config may list a head that was never trained (the vanilla run
        keeps the architecture, λ_ig = 0), whose output is its zero initialisation, not a velocity."""
        return self.heads if self.config.loss.lambda_ig > 0 else ()

    @property
    def default_guidance(self) -> float:
        """The guidance w this run samples with unless told otherwise (1 without a trained head)."""
        return default_guidance(self.config)

    @property
    def default_steps(self) -> int:
        """Euler steps of the Video DiT sampler this run was validated with (`train.sample_steps`)."""
        return self.config.train.sample_steps

    @property
    def plan_steps(self) -> int:
        """Euler steps of the planner at inference."""
        return self.config.action.plan_steps

    @property
    def clip_spec(self) -> DataConfig:
        """The clips this run was trained on: frames, size, rate, horizon (the `data` section of its config)."""
        return self.config.data

    @property
    def has_planner(self) -> bool:
        return self.action_dit is not None

    def world_model_digest(self) -> str:
        """A digest of what decides the generated futures' pixels: the VAE's and the Video DiT's weights (the
        config's sampler settings are checked on their own). A file measured on these futures (a steps sweep) names
        it, so that a re-shipped checkpoint in the same folder is not taken for the measured one. Loaded from a
        folder: its safetensors files (`file_digest`), so that the same checkpoint in bf16 on a GPU is the same
        checkpoint; built from modules: their state dicts (names, dtypes, sizes and bytes). Memoised."""
        if self._world_digest is None:
            self._world_digest = state_digest((("vae.", self.vae), ("video_dit.", self.video_dit)))
        return self._world_digest

    # ------------------------------------------------------------------------------------------
    def _cond(self, clip: Clip, command: str | None):
        if command is not None and command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
        index = COMMANDS.index(command) if command is not None else clip.observation.command
        cond = VideoCond(command=torch.tensor([index], device=self.device),
                         ego_status=clip.observation.ego_status[None].to(self.device))
        return cond, COMMANDS[index]

    def _cached(self, cache: OrderedDict, clip: Clip, owner, make):
        """`make()`, kept in `cache` (at most `context_cache_size` clips, least recently used out first) for this clip
        while `owner` (the tensor or target it was made from) is the very same object, so a reloaded clip is made
        again; with `context_cache_size` 0 nothing is kept."""
        key = (clip.scene_name, clip.sample_token)
        hit = cache.get(key)
        if hit is not None and hit[0] is owner:
            cache.move_to_end(key)
            return hit[1]
        value = make()
        if self.context_cache_size > 0:
            cache[key] = (owner, value)
            while len(cache) > self.context_cache_size:
                cache.popitem(last=False)
        return value

    def _video_model(self):
        """The Video DiT for `generate` and `video_hidden_states`: with the cache on, its σ = 1 pass shared between
        a clip's plan and video (`_SharedFirstPass`). One pass is kept, the last: it holds every planner block's
        hidden states, which at the paper's sizes are hundreds of MB, and the app plans and generates a clip back to
        back."""
        if self.context_cache_size <= 0:
            self._first_passes.clear()
            return self.video_dit
        return _SharedFirstPass(self.video_dit, hidden_state_blocks(self.config, self.video_dit), self._first_passes,
                                1)

    @torch.no_grad()
    def encode_context(self, clip: Clip) -> torch.Tensor:
        """Context latents (1, C, n_ctx, h, w) (from the cache when `context_cache_size` > 0 and these very frames
        were encoded lately)."""
        frames = clip.observation.frames
        n_ctx, _ = latent_split(self.config.data, self.vae)
        # the causal encoder sees context frames only, so no future leaks into the context latents
        return self._cached(self._context_cache, clip, frames,
                            lambda: encode_frames(self.vae, frames[None].to(self.device))[:, :, :n_ctx])

    def _reference_progress(self, clip: Clip, scene: PlanningScene) -> float | None:
        """The scene's reference progress for EP (NAVSIM's: PDM-Closed's trajectory, ≈ 0.1–0.3 s of IDM unrolls on
        a CPU) when `context_cache_size` > 0: it depends on the scene alone, not on the samples, so a clip planned
        again (other seed, samples or command) reuses it while the very same target is cached; None otherwise
        (`score_trajectories` computes it)."""
        if self.context_cache_size <= 0:
            return None
        return self._cached(self._reference_cache, clip, clip.target, lambda: reference_progress(scene))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Latents (B, C, t, h, w) → frames (B, T, 3, H, W) in [-1, 1], with the run's decode settings."""
        vcfg = self.config.vae
        return decode_latents(self.vae, latents, decode_timestep=vcfg.decode_timestep,
                              decode_noise_scale=vcfg.decode_noise_scale,
                              generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def decode_future(self, context_latents: torch.Tensor, future_latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """The future frames (F, 3, H, W) in [-1, 1] of future latents (C, t_fut, h, w) after context latents
        (C, n_ctx, h, w), e.g. a layer's x0 prediction at one sampler step (the VAE decodes causally, so the context
        comes first)."""
        latents = torch.cat([context_latents, future_latents], dim=1)[None].to(self.device)
        return self.decode(latents, seed)[0, self.config.data.context_frames:].float().cpu()

    @torch.no_grad()
    def generate(self, clip: Clip, steps: int = 20, guidance: float = 1.0, seed: int = 0, command: str | None = None,
                 guidance_interval: tuple[float, float] | None = None, record: bool = False,
                 decode_previews: bool = False, callback: Callable | None = None,
                 should_stop: Callable[[], bool] | None = None, lens: bool = False,
                 command_guidance: float = 0.0, motion_guidance: float | None = None,
                 motion_poses: torch.Tensor | None = None) -> GenerationResult:
        """Sample the future of `clip`. record: keep a `StepRecord` per step (with `decode_previews`, each layer's
        x0 prediction decoded); lens: the records also hold the output layer's velocity on every block
        (`StepRecord.v_lens`; decode one with `decode_future`); command_guidance: s of the sampler's contrast with
        the other driving commands (0: off; `reworld.sampling.sample_future`); motion_guidance: s of the contrast
        with the Video DiT's fed-back poses (None: the run's `train.motion_guidance`; needs `video.motion_feedback`);
        motion_poses (F, 3) [m, m, rad]: the ego poses at the future latent frames' times to imagine, fed back
        instead of the head's reading (None: the head's)."""
        _check_steps(steps)
        t0 = time.perf_counter()
        _, n_fut = latent_split(self.config.data, self.vae)
        cond, name = self._cond(clip, command)
        context = self.encode_context(clip)
        n_ctx_frames = self.config.data.context_frames

        def decode(latents):
            return self.decode(latents, seed)[0, n_ctx_frames:].cpu()

        res = sample_future(self._video_model(), context, cond, n_fut, steps,
                            generator=torch.Generator().manual_seed(seed), guidance=guidance,
                            guidance_interval=guidance_interval, shift=self.config.loss.shift,
                            shift_terminal=self.config.loss.shift_terminal,
                            command_guidance=command_guidance, record=record or lens, record_lens=lens,
                            motion_guidance=(default_motion_guidance(self.config) if motion_guidance is None
                                             else motion_guidance),
                            motion_input=None if motion_poses is None else self._motion_input(motion_poses, n_fut),
                            decode_fn=decode if (record and decode_previews) else None, callback=callback,
                            should_stop=should_stop)
        frames = decode(res.latents)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return GenerationResult(frames=frames, context=clip.observation.frames, latents=res.latents[0].cpu(),
                                command=name, record=res.record, device=str(self.device),
                                seconds=time.perf_counter() - t0)


    def _motion_input(self, poses: torch.Tensor, n_fut: int) -> torch.Tensor:
        """Poses (F, 3) in metres and radians → the Video DiT's normalised motion input (1, F, 3) on its device."""
        if self.video_dit.motion_embed is None:
            raise ValueError("motion_poses needs a Video DiT with video.motion_feedback")
        poses = torch.as_tensor(poses, dtype=torch.float32)
        if tuple(poses.shape) != (n_fut, 3):
            raise ValueError(f"motion_poses must be ({n_fut}, 3): one (x, y, heading) per future latent frame, "
                             f"got {tuple(poses.shape)}")
        return self.video_dit.motion_normalise(poses.to(self.device)[None])

    # ------------------------------------------------------------------------------------------
    def _planner(self):
        if self.action_dit is None:
            raise CheckpointError(f"{self.path or 'this pipeline'} has no planner (action_dit/): train stage action")
        return self.action_dit

    @torch.no_grad()
    def video_hidden_states(self, clip: Clip, command: str | None = None, sigma: float | None = None,
                            seed: int = 0) -> list[torch.Tensor]:
        """The Video DiT hidden states the planner reads: one (1, S', D) per block in `video.feature_blocks`."""
        n_ctx, n_fut = latent_split(self.config.data, self.vae)
        cond, _ = self._cond(clip, command)
        context = self.encode_context(clip)  # (1, C, n_ctx, h, w)
        # the future latents are replaced by noise at σ (1 by default), so their values never matter
        shape = list(context.shape)
        shape[2] = n_fut
        latents = torch.cat([context, torch.zeros(shape, device=self.device, dtype=context.dtype)], dim=2)
        sigma = self.config.action.feature_sigma if sigma is None else float(sigma)
        return video_hidden_states(self._video_model(), latents, cond.command, cond.ego_status, n_ctx,
                                   hidden_state_blocks(self.config, self.video_dit), sigma,
                                   self.config.action.feature_pool, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def plan(self, clip: Clip, steps: int = 10, num_samples: int = 1, seed: int = 0, guidance: float | None = None,
             command: str | None = None, score: bool = True) -> PlanResult:
        """Sample `num_samples` trajectories; with `score`, each gets its PDM sub-scores on the clip's scene."""
        _check_steps(steps)
        if guidance not in (None, 1.0):
            raise ValueError("the Action DiT samples without guidance; pass guidance=None (or 1.0)")
        if not isinstance(num_samples, int) or not 1 <= num_samples <= 256:
            raise ValueError(f"num_samples must be an integer in [1, 256], got {num_samples!r}")
        t0 = time.perf_counter()
        planner = self._planner()
        hidden = self.video_hidden_states(clip, command=command, seed=seed)
        cond, name = self._cond(clip, command)
        poses = plan_sample(planner, hidden, cond.ego_status, cond.command, steps=steps, num_samples=num_samples,
                            generator=torch.Generator().manual_seed(seed), shift=self.config.loss.shift)
        poses = poses[0].cpu().numpy()
        scores = []
        if score and clip.target.drivable_area:
            scene = PlanningScene.from_clip(clip)
            scores = score_trajectories(scene, poses, reference=self._reference_progress(clip, scene))
        return PlanResult(trajectories=poses, scores=scores, command=name, device=str(self.device),
                          seconds=time.perf_counter() - t0)

    @torch.no_grad()
    def plan_batch(self, clips: Sequence[Clip], steps: int = 10, seed: int = 0) -> np.ndarray:
        """One trajectory per clip, (B, 8, 3), for many clips at once: one batched VAE encode, Video DiT forward
        and planner loop. Each clip's noise comes from its own generators seeded by `seed`, so a clip's plan is
        the one `plan(clip, steps, num_samples=1, seed=seed)` gives, to float precision (what `eval` uses)."""
        return self.plan_seeds(clips, [seed], steps)[:, 0]

    @torch.no_grad()
    def plan_seeds(self, clips: Sequence[Clip], seeds: Sequence[int], steps: int = 10) -> np.ndarray:
        """One trajectory per clip and seed, (B, S, 8, 3): sample j of a clip is `plan_batch`'s (and `plan`'s) plan
        with seed `seeds[j]` (its Video DiT features' noise and its planner's), the context encoded once."""
        _check_steps(steps)
        if not clips:
            raise ValueError("plan_batch needs at least one clip")
        if not seeds:
            raise ValueError("plan_seeds needs at least one seed")
        planner = self._planner()
        n_ctx, n_fut = latent_split(self.config.data, self.vae)
        frames = torch.stack([c.observation.frames for c in clips]).to(self.device)
        context = encode_frames(self.vae, frames)[:, :, :n_ctx]  # (B, C, n_ctx, h, w)
        shape = list(context.shape)
        shape[2] = n_fut
        latents = torch.cat([context, torch.zeros(shape, device=self.device, dtype=context.dtype)], dim=2)
        command = torch.tensor([c.observation.command for c in clips], device=self.device)
        ego = torch.stack([c.observation.ego_status for c in clips]).to(self.device)
        out = []
        for seed in seeds:
            hidden = video_hidden_states(self.video_dit, latents, command, ego, n_ctx,
                                         hidden_state_blocks(self.config, self.video_dit),
                                         self.config.action.feature_sigma, self.config.action.feature_pool,
                                         [torch.Generator().manual_seed(int(seed)) for _ in clips])
            poses = plan_sample(planner, hidden, ego, command, steps=steps, num_samples=1,
                                generator=[torch.Generator().manual_seed(int(seed)) for _ in clips],
                                shift=self.config.loss.shift)
            out.append(poses[:, 0].cpu().numpy())
        return np.stack(out, axis=1)

    @torch.no_grad()
    def _features_of(self, clip: Clip, trajectories, sigma: float, seed: int):
        """One Action DiT pass over any trajectories (N, 8, 3) of `clip` noised to `sigma` (seeded noise), with every
        block's features: (`ActionDiTOutput`, the clip's Video DiT hidden states)."""
        planner = self._planner()
        poses = torch.as_tensor(np.asarray(trajectories, dtype=np.float32), device=self.device)
        if poses.ndim != 3 or poses.shape[1:] != (planner.config.num_waypoints, planner.config.pose_dim):
            raise ValueError(f"trajectories must be (N, {planner.config.num_waypoints}, 3), got {tuple(poses.shape)}")
        if not 0.0 <= sigma <= 1.0:
            raise ValueError(f"sigma must be in [0, 1], got {sigma}")
        hidden = self.video_hidden_states(clip, seed=seed)
        n = poses.shape[0]
        cond, _ = self._cond(clip, None)
        x0 = planner.normalize(poses, cond.ego_status.to(poses))  # (N, 8, 3); ego (1, E) broadcasts
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
        x_t = (1 - sigma) * x0 + sigma * noise
        out = planner(x_t, torch.full((n,), sigma, device=self.device), hidden,
                      cond.ego_status.expand(n, -1), cond.command.expand(n), return_features=True)
        return out, hidden

    @torch.no_grad()
    def planner_features(self, clip: Clip, trajectories, block: int | None = None, sigma: float = 0.0,
                         seed: int = 0) -> np.ndarray:
        """Pooled Action DiT features (N, width) of any trajectories (N, 8, 3) at noise level `sigma`
        (0 = the clean trajectory), from Action DiT block `block` (default: the alignment block)."""
        planner = self._planner()
        block = planner.config.align_block if block is None else int(block)
        if not 0 <= block < planner.config.num_video_blocks:
            raise ValueError(f"block must be in [0, {planner.config.num_video_blocks}), got {block}")
        out, _ = self._features_of(clip, trajectories, sigma, seed)
        return out.features[block].mean(dim=1).cpu().numpy()  # (N, width)

    @torch.no_grad()
    def alignment(self, clip: Clip, trajectories, sigma: float = 0.0, seed: int = 0) -> Alignment:
        """How the planner's features of trajectories (N, 8, 3) line up with the video representation its alignment
        loss targets (the mean over future tokens of Video DiT block `action.align_video_block`): the cosine of
        every Action DiT block's waypoint tokens through the alignment projector, and of the projected pooled
        alignment-block feature (what the hard-negative loss compares with the same target)."""
        planner = self._planner()
        out, hidden = self._features_of(clip, trajectories, sigma, seed)
        blocks = hidden_state_blocks(self.config, self.video_dit)
        pos = alignment_position(self.config, blocks)
        n_ctx, n_fut = latent_split(self.config.data, self.vae)
        target = future_token_mean(hidden[pos], n_ctx, n_ctx + n_fut)  # (1, D)
        per_block = torch.stack([planner.project(out.features[i]) for i in range(len(out.features))], 1)  # (N,L,W,D)
        cos = torch.nn.functional.cosine_similarity(per_block, target[:, None, None], dim=-1)  # (N, L, W)
        pooled = torch.nn.functional.cosine_similarity(planner.project(out.pooled), target, dim=-1)  # (N,)
        lcfg = self.config.loss
        return Alignment(cosine=cos.cpu().numpy(), pooled_cosine=pooled.cpu().numpy(),
                         align_block=planner.config.align_block, video_block=blocks[pos],
                         lambda_align=float(lcfg.lambda_align), lambda_hn=float(lcfg.lambda_hn),
                         temperature=float(lcfg.hn_temperature))


@dataclass
class Alignment:
    """`WorldActionPipeline.alignment`: cosines of planner features with the video target of their clip."""
    cosine: np.ndarray  # (N, action blocks, waypoints): cos(projector(block l's token n), target)
    pooled_cosine: np.ndarray  # (N,): cos(projector(mean of the alignment block's tokens), target)
    align_block: int  # the Action DiT block the alignment loss supervises
    video_block: int  # the Video DiT block whose future tokens are the target
    lambda_align: float  # the checkpoint's loss weights: 0 = the projector never learned from that term
    lambda_hn: float
    temperature: float  # the hard-negative loss's τ

    @property
    def projector_trained(self) -> bool:
        return self.lambda_align > 0 or self.lambda_hn > 0

    def expert_share(self) -> float:
        """softmax(pooled_cosine / τ)[0]: the probability the hard-negative loss gives the first trajectory (the
        expert) among all given; 1 / N when it cannot tell them apart."""
        z = self.pooled_cosine / self.temperature
        z = np.exp(z - z.max())
        return float(z[0] / z.sum())


def _check_steps(steps: int, limit: int = 1000) -> None:
    if not isinstance(steps, int) or not 1 <= steps <= limit:
        raise ValueError(f"steps must be an integer in [1, {limit}], got {steps!r}")
