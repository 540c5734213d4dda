"""Video DiT: diffusers' LTX-Video transformer with per-frame timesteps, command/ego conditioning tokens and
intermediate velocity heads (docs/design.md §2).

The LTX model is wrapped, not forked: `self.transformer` is a stock `LTXVideoTransformer3DModel` (so LTX
checkpoints load into it key for key), and `forward` runs its blocks itself so that hidden states of any
block and the per-token timestep embedding are at hand.

Tokens: latents (B, C, t, h, w) are packed frame-major into (B, S = t·h'·w', C·p²) with h' = h/p, w' = w/p for
the spatial patch size p (`patch_size`; LTX's own packing order, as diffusers' `LTXPipeline._pack_latents`; LTX-Video
uses p = 1), so the tokens of latent frame f are `[f·h'·w', (f+1)·h'·w')`. The first `n_context` latent frames are
clean context (timestep 0); the others are future tokens at timestep σ·1000.

`concat_last_context` (off by default and in LTX-Video): every token also receives the packed last context latent
frame at its own spatial position, through `context_proj`, a zero-initialised linear layer added to LTX's `proj_in`:
`proj_in(x) + context_proj(c)` is `proj_in'([x, c])`, the channel concatenation with which Stable Video Diffusion
conditions on an image (diffusers' pipeline repeats the image latents for every frame; CogVideoX-I2V concatenates
them at the first frame only, zeros elsewhere), while LTX's own weights stay key for key. At initialisation the model is
the plain one.

`future_residual` (off by default and in LTX-Video): the network models the future as a residual on the last context
latent frame c, as RVD (Yang, Srinivasan and Mandt, 2022) diffuses a frame's residual on a predictor's guess, here
the identity. With the same noise ε, the residual r0 = x0 − c is noised to r_t = (1 − σ) r0 + σ ε = x_t − (1 − σ) c and
its velocity is ε − r0 = v + c. So the blocks read the future frames as x_t − (1 − σ) c, and every velocity the model
returns (final, heads, lens) is the network's output − c on future frames: the flow-matching loss, the sampler and
x0 = x_t − σ v stay as they are (a reparameterisation, as EDM's preconditioning is). At σ = 1 a network that returns
its input predicts x0 = c, the copy, which the plain model has to find by attention.

`adaln_cond` (off by default and in LTX-Video): the command and the ego status also modulate every block, as DiT
(Peebles and Xie, 2023) conditions on a class: `AdaLNCond` maps them to the transformer's width and adds the result
to the embedded timestep of every token before LTX's `time_embed.linear` turns it into each block's shift, scale and
gate (and the output layer's and the heads' shift and scale). Its output layers start at zero, so at initialisation
the model is the plain one; the conditioning tokens that the blocks cross-attend to stay as they are.

`motion_block` (None by default and in LTX-Video): a `MotionHead` reads, from the tokens of each latent frame after
that block, the ego's pose (x, y, heading in the ego frame at t = 0) at the frame's last time, normalised with the
training clips' per-frame mean and standard deviation (`motion_mean`, `motion_std`: buffers of `motion_frames` future
latent frames, set by the video stage and saved with the weights; `motion_poses` undoes it). Trained with
`loss.lambda_motion` on the future frames, it asks the blocks up to it to carry the ego's motion, which the flow
loss, almost all texture, weighs little (docs/world4s.md, D4 and E15); sampling never reads it.

`motion_feedback` (off by default and in LTX-Video; needs `motion_block`): the head's pose of each future latent frame
is also fed back to the blocks after it, as VideoJAM feeds its motion signal in beside the pixels: a `MotionEmbed`
(last layer zero at initialisation) maps the normalised pose to the transformer's width and adds it to every token of
that frame, once, after the motion block. What is fed is the head's own reading, detached (the flow loss does not
train the head through it), or `motion_input` (B, t − n_context, 3) where given: the logged pose in training (teacher
forcing, `loss.motion_teacher`) or any pose a caller wants imagined; `motion_null` drops it for some or all samples
(`loss.motion_null` in training), the null condition of the sampler's motion guidance (VideoJAM's Inner-Guidance;
`reworld.sampling.sample_future`). Context tokens are never touched (docs/world4s.md, E17).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import LTXVideoTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from reworld.config import Config, VideoConfig
from reworld.models.layers import (
    TIMESTEP_SCALE,
    AdaLNVelocityHead,
    CheckpointError,
    MotionEmbed,
    MotionHead,
    diffusers_component,
    load_model_strict,
    load_state_dict_strict,
    read_state_dict,
)

# Size presets (DiT_models style): keyword arguments of VideoDiT. `ltx-2b` is LTX-Video 2B (paper scale).
VIDEO_DIT_PRESETS: dict[str, dict] = {
    "tiny": dict(in_channels=8, num_layers=2, num_attention_heads=2, attention_head_dim=16, head_blocks=(0,)),
    "default": dict(in_channels=16, num_layers=8, num_attention_heads=4, attention_head_dim=32, head_blocks=(2,)),
    "ltx-2b": dict(
        in_channels=128, num_layers=28, num_attention_heads=32, attention_head_dim=64, head_blocks=(9,),
        caption_channels=4096, rope_interpolation_scale=(8 / 25, 32.0, 32.0),
    ),
}


@dataclass
class VideoCond:
    """What the Video DiT is conditioned on besides the context latents."""

    command: torch.Tensor  # (B,) long, index into reworld.data.types.COMMANDS
    ego_status: torch.Tensor  # (B, 3) [speed m/s, longitudinal acceleration m/s², yaw rate rad/s]

    def to(self, device: torch.device | str) -> "VideoCond":
        return VideoCond(command=self.command.to(device), ego_status=self.ego_status.to(device))


@dataclass
class VideoDiTOutput(BaseOutput):
    """`sample`: velocity, same layout as the input latents. `head_samples[k]`: velocity of the head on
    block k (only with `return_heads=True`). `hidden_states[k]`: output of block k, packed tokens
    (B, S, D) (only for the blocks asked for in `return_hidden_states`). `lens_samples[k]`: the model's own output
    layer applied to block k's output, for every block (only with `return_lens=True`; Diffusion Lens' reading of
    an intermediate layer, trained for no block but the last, whose lens is `sample` itself)."""

    sample: torch.Tensor
    head_samples: dict[int, torch.Tensor] | None = None
    hidden_states: dict[int, torch.Tensor] | None = None
    lens_samples: dict[int, torch.Tensor] | None = None
    # (B, t, 3): the motion head's normalised pose of every latent frame (only with `return_motion=True`)
    motion: torch.Tensor | None = None


class CondTokens(nn.Module):
    """`num_tokens` learned tokens = base + command embedding + ego-status MLP, width `channels` (the LTX
    caption width; the transformer's caption projection maps them to its width)."""

    def __init__(self, num_tokens: int, channels: int, num_commands: int, ego_dim: int, hidden: int):
        super().__init__()
        self.num_tokens, self.channels = num_tokens, channels
        self.base = nn.Parameter(torch.zeros(num_tokens, channels))
        self.command = nn.Embedding(num_commands, num_tokens * channels)
        self.ego = nn.Sequential(nn.Linear(ego_dim, hidden), nn.SiLU(), nn.Linear(hidden, num_tokens * channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.base, std=0.02)
        nn.init.normal_(self.command.weight, std=0.02)
        for layer in (self.ego[0], self.ego[2]):
            layer.reset_parameters()

    def forward(self, command: torch.Tensor, ego_status: torch.Tensor) -> torch.Tensor:
        b = command.shape[0]
        tokens = self.command(command) + self.ego(ego_status.to(self.base.dtype))  # (B, N·Cc)
        return self.base + tokens.view(b, self.num_tokens, self.channels)  # (B, N, Cc)


class AdaLNCond(nn.Module):
    """Command embedding + ego-status MLP → (B, D), added to the embedded timestep (DiT's class conditioning);
    zero-initialised outputs, so a new one changes nothing until trained."""

    def __init__(self, num_commands: int, ego_dim: int, dim: int):
        super().__init__()
        self.command = nn.Embedding(num_commands, dim)
        self.ego = nn.Sequential(nn.Linear(ego_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.command.weight)
        self.ego[0].reset_parameters()
        nn.init.zeros_(self.ego[2].weight)
        nn.init.zeros_(self.ego[2].bias)

    def forward(self, command: torch.Tensor, ego_status: torch.Tensor) -> torch.Tensor:
        return self.command(command) + self.ego(ego_status.to(self.command.weight.dtype))  # (B, D)


class VideoDiT(ModelMixin, ConfigMixin):
    """LTX-Video transformer + conditioning tokens + intermediate velocity heads (see module docstring)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,  # latent channels of the VAE
        num_layers: int = 8,
        num_attention_heads: int = 4,
        attention_head_dim: int = 32,
        head_blocks: tuple[int, ...] = (2,),  # 0-based blocks whose output feeds a velocity head
        num_cond_tokens: int = 4,
        num_commands: int = 3,
        ego_dim: int = 3,
        caption_channels: int | None = None,  # width of the cond tokens; None = transformer width
        rope_interpolation_scale: tuple[float, float, float] = (1.0, 32.0, 32.0),  # LTX RoPE (t, h, w) scale
        activation_fn: str = "gelu-approximate",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        attention_bias: bool = True,
        attention_out_bias: bool = True,
        patch_size: int = 1,  # p×p latent pixels per token
        concat_last_context: bool = False,  # every token also sees the last context latent frame (module docstring)
        future_residual: bool = False,  # the future as a residual on the last context latent frame (module docstring)
        adaln_cond: bool = False,  # command and ego status also through every block's adaLN (module docstring)
        motion_block: int | None = None,  # 0-based block whose tokens feed the motion head (module docstring)
        motion_frames: int = 0,  # future latent frames whose pose statistics the motion head keeps
        motion_feedback: bool = False,  # the head's poses fed back to the later blocks (module docstring)
    ):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be ≥ 1, got {patch_size}")
        dim = num_attention_heads * attention_head_dim
        token_channels = in_channels * patch_size * patch_size
        blocks = sorted(set(int(k) for k in head_blocks))
        if any(k < 0 or k >= num_layers for k in blocks):
            raise ValueError(f"head_blocks {tuple(head_blocks)} must lie in [0, {num_layers - 1}]")
        if motion_block is not None and not 0 <= motion_block < num_layers:
            raise ValueError(f"motion_block {motion_block} must lie in [0, {num_layers - 1}]")
        if motion_block is not None and motion_frames < 1:
            raise ValueError("motion_block needs motion_frames ≥ 1 (the future latent frames it reads poses of)")
        if motion_feedback and motion_block is None:
            raise ValueError("motion_feedback needs a motion head (motion_block)")
        caption_channels = caption_channels or dim
        self.transformer = LTXVideoTransformer3DModel(
            in_channels=token_channels,  # LTX's in_channels are the packed tokens' (its pipeline packs)
            out_channels=token_channels,
            patch_size=patch_size,  # what LTX's RoPE scales the spatial grid by
            patch_size_t=1,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            cross_attention_dim=dim,  # LTX requires cross_attention_dim == heads × head_dim
            num_layers=num_layers,
            activation_fn=activation_fn,
            norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps,
            caption_channels=caption_channels,
            attention_bias=attention_bias,
            attention_out_bias=attention_out_bias,
        )
        self.cond = CondTokens(num_cond_tokens, caption_channels, num_commands, ego_dim, hidden=dim)
        self.heads = nn.ModuleDict({str(k): AdaLNVelocityHead(dim, token_channels) for k in blocks})
        self.context_proj = nn.Linear(token_channels, dim) if concat_last_context else None
        self.reset_context_proj()
        self.cond_adaln = AdaLNCond(num_commands, ego_dim, dim) if adaln_cond else None
        self.patch_size = patch_size
        self.future_residual = bool(future_residual)
        self.head_block_ids: tuple[int, ...] = tuple(blocks)
        self.rope_scale = tuple(float(s) for s in rope_interpolation_scale)
        self.motion_block = motion_block
        self.motion_head = MotionHead(dim, 3) if motion_block is not None else None
        self.motion_embed = MotionEmbed(dim, 3) if motion_feedback else None
        if motion_block is not None:  # the training clips' pose statistics per future latent frame (x, y, heading)
            self.register_buffer("motion_mean", torch.zeros(motion_frames, 3))
            self.register_buffer("motion_std", torch.ones(motion_frames, 3))

    def set_motion_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The per-frame pose statistics the motion head's outputs are normalised with: (motion_frames, 3) each."""
        if self.motion_head is None:
            raise ValueError("this Video DiT has no motion head (motion_block is None)")
        if mean.shape != self.motion_mean.shape or std.shape != self.motion_std.shape or not (std > 0).all():
            raise ValueError(f"motion statistics must be {tuple(self.motion_mean.shape)} with std > 0, got "
                             f"{tuple(mean.shape)} / {tuple(std.shape)}")
        self.motion_mean.copy_(mean), self.motion_std.copy_(std)

    def motion_normalise(self, poses: torch.Tensor) -> torch.Tensor:
        """Poses (B, motion_frames, 3) [m, m, rad] → the motion head's normalised units (`motion_poses`' inverse)."""
        return (poses - self.motion_mean.to(poses)) / self.motion_std.to(poses)

    def motion_poses(self, motion: torch.Tensor) -> torch.Tensor:
        """Normalised future-frame poses (B, motion_frames, 3) → [m, m, rad] in the ego frame at t = 0."""
        return motion * self.motion_std.to(motion) + self.motion_mean.to(motion)

    def reset_context_proj(self) -> None:
        """Zero the last-context projection: the model starts as the plain one (ControlNet's zero convolution)."""
        if self.context_proj is not None:
            nn.init.zeros_(self.context_proj.weight)
            nn.init.zeros_(self.context_proj.bias)

    # ----------------------------------------------------------------------------------------------
    def _timestep_embedding(self, sigma: torch.Tensor, n_context: int, t: int, tokens_per_frame: int, dtype,
                            cond: VideoCond | None = None):
        """Per-frame timesteps (context 0, future σ·1000) → per-token (temb (B, S, 6D), embedded (B, S, D)); with
        `adaln_cond`, the command and ego status are added to the embedded timestep of every frame first."""
        b = sigma.shape[0]
        frame_is_future = (torch.arange(t, device=sigma.device) >= n_context).to(sigma.dtype)  # (t,)
        timestep = sigma[:, None] * TIMESTEP_SCALE * frame_is_future[None, :]  # (B, t)
        if self.cond_adaln is None:
            temb, embedded = self.transformer.time_embed(timestep.flatten(), batch_size=b, hidden_dtype=dtype)
        else:  # LTX's AdaLayerNormSingle, its two halves apart: emb (timestep → D), then linear(silu(·)) → 6D
            te = self.transformer.time_embed
            embedded = te.emb(timestep.flatten(), resolution=None, aspect_ratio=None, batch_size=b, hidden_dtype=dtype)
            extra = self.cond_adaln(cond.command, cond.ego_status).to(embedded.dtype)  # (B, D)
            embedded = (embedded.view(b, t, -1) + extra[:, None]).flatten(0, 1)  # (B·t, D)
            temb = te.linear(te.silu(embedded))
        temb = temb.view(b, t, -1).repeat_interleave(tokens_per_frame, dim=1)  # (B, S, 6D)
        embedded = embedded.view(b, t, -1).repeat_interleave(tokens_per_frame, dim=1)  # (B, S, D)
        return temb, embedded

    def forward(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor | float,
        cond: VideoCond,
        n_context: int,
        *,
        return_heads: bool = False,
        return_hidden_states: Sequence[int] | None = None,
        return_lens: bool = False,
        return_motion: bool = False,
        motion_input: torch.Tensor | None = None,
        motion_input_rows: torch.Tensor | None = None,
        motion_null: torch.Tensor | bool = False,
    ) -> VideoDiTOutput:
        """Velocity `v ≈ ε − x0` for latents (B, C, t, h, w) whose first `n_context` latent frames are clean
        and the rest at noise level `sigma` (B,) or scalar in [0, 1]. `return_lens`: also the output layer's reading
        of every block (`VideoDiTOutput.lens_samples`); `return_motion`: the motion head's reading of every latent
        frame (`VideoDiTOutput.motion`, normalised). With `motion_feedback` (module docstring): `motion_input`
        (B, t − n_context, 3), normalised poses fed back instead of the head's reading, for the samples where
        `motion_input_rows` (B,) is True (all when None); `motion_null` (bool or (B,) bool): no feedback there."""
        if latents.ndim != 5:
            raise ValueError(f"latents must be (B, C, t, h, w), got {tuple(latents.shape)}")
        b, c, t, h, w = latents.shape
        if not 0 <= n_context <= t:
            raise ValueError(f"n_context={n_context} outside [0, {t}] latent frames")
        if return_motion and self.motion_head is None:
            raise ValueError("return_motion needs a motion head (motion_block is None)")
        if self.motion_embed is None:  # (no tensor made on the plain path: a CUDA sync per forward otherwise)
            if motion_input is not None or (motion_null is not False and bool(torch.as_tensor(motion_null).any())):
                raise ValueError("motion_input / motion_null need a Video DiT with motion_feedback")
            null = None
        else:
            null = torch.as_tensor(motion_null, dtype=torch.bool, device=latents.device).expand(b)  # (B,)
        if motion_input is not None and tuple(motion_input.shape) != (b, t - n_context, 3):
            raise ValueError(f"motion_input must be (B, t − n_context, 3) = {(b, t - n_context, 3)}, "
                             f"got {tuple(motion_input.shape)}")
        keep = sorted(set(int(k) for k in (return_hidden_states or ())))
        if any(k < 0 or k >= len(self.transformer.transformer_blocks) for k in keep):
            raise ValueError(f"return_hidden_states {keep} outside [0, {len(self.transformer.transformer_blocks) - 1}]")
        tr = self.transformer
        # σ stays at least float32 (a bf16 σ·1000 would round the timestep); the tokens take the weights' dtype
        sigma_dtype = torch.promote_types(latents.dtype, torch.float32)
        sigma = torch.as_tensor(sigma, dtype=sigma_dtype, device=latents.device).expand(b)  # (B,)

        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"latents of {h}×{w} do not divide into {p}×{p} patches")
        hp, wp = h // p, w // p
        guess = None
        if self.future_residual:
            if n_context == 0:
                raise ValueError("future_residual needs at least one context latent frame (n_context = 0)")
            # c on the future frames, 0 on the context: (B, C, t, h, w)
            is_future = (torch.arange(t, device=latents.device) >= n_context).view(1, 1, t, 1, 1)
            guess = latents[:, :, n_context - 1:n_context] * is_future.to(latents.dtype)
            keep_x = (1 - sigma).to(latents.dtype).view(b, 1, 1, 1, 1)
            latents = latents - keep_x * guess  # future frames: x_t − (1 − σ) c, the noised residual
        x = self.pack(latents).to(tr.proj_in.weight.dtype)  # (B, S, C·p²) frame-major tokens
        rotary = tr.rope(x, t, hp, wp, self.rope_scale, None)  # cos, sin: (B, S, D) each
        if self.context_proj is not None:
            if n_context == 0:
                raise ValueError("concat_last_context needs at least one context latent frame (n_context = 0)")
            last = self.pack(latents[:, :, n_context - 1:n_context]).to(x.dtype)  # (B, h'·w', C·p²)
            x = tr.proj_in(x) + self.context_proj(last).repeat(1, t, 1)  # every frame's tokens, frame-major
        else:
            x = tr.proj_in(x)  # (B, S, D)
        temb, embedded = self._timestep_embedding(sigma, n_context, t, hp * wp, x.dtype, cond)  # (B,S,6D), (B,S,D)
        context = tr.caption_projection(self.cond(cond.command, cond.ego_status))  # (B, N, D)

        heads: dict[int, torch.Tensor] = {}
        hidden: dict[int, torch.Tensor] = {}
        lens: dict[int, torch.Tensor] = {}
        motion = None
        for k, block in enumerate(tr.transformer_blocks):
            if torch.is_grad_enabled() and tr.gradient_checkpointing:
                x = tr._gradient_checkpointing_func(block, x, context, temb, rotary, None)
            else:
                x = block(hidden_states=x, encoder_hidden_states=context, temb=temb, image_rotary_emb=rotary)
            # x: (B, S, D)
            if k in keep:
                hidden[k] = x
            if return_heads and str(k) in self.heads:
                heads[k] = self._velocity(self._unpack(self.heads[str(k)](x, embedded), t, h, w), guess)
            if k == self.motion_block and (return_motion or self.motion_embed is not None):
                motion = self.motion_head(x.view(b, t, hp * wp, x.shape[-1]))  # (B, t, 3)
                if self.motion_embed is not None:
                    x = self._feed_motion(x, motion, n_context, hp * wp, motion_input, motion_input_rows, null)
            if return_lens and k < len(tr.transformer_blocks) - 1:
                lens[k] = self._velocity(self._output_layer(x, embedded, t, h, w), guess)

        v = self._velocity(self._output_layer(x, embedded, t, h, w), guess)
        if return_lens:
            lens[len(tr.transformer_blocks) - 1] = v
        return VideoDiTOutput(
            sample=v, head_samples=heads if return_heads else None, hidden_states=hidden if keep else None,
            lens_samples=lens if return_lens else None, motion=motion if return_motion else None,
        )

    def _feed_motion(self, x: torch.Tensor, motion: torch.Tensor, n_context: int, tokens_per_frame: int,
                     motion_input: torch.Tensor | None, rows: torch.Tensor | None, null: torch.Tensor) -> torch.Tensor:
        """Tokens x (B, S, D) after the motion block with each future frame's pose embedded and added (the head's
        reading `motion` (B, t, 3), detached, or `motion_input` on `rows`; nothing on `null` samples)."""
        feed = motion[:, n_context:].detach()  # (B, F, 3)
        if motion_input is not None:
            given = motion_input.to(feed)
            if rows is not None:
                given = torch.where(rows.to(device=feed.device, dtype=torch.bool).view(-1, 1, 1), given, feed)
            feed = given
        emb = self.motion_embed(feed.to(x.dtype)) * (~null).to(x.dtype).view(-1, 1, 1)  # (B, F, D)
        n = n_context * tokens_per_frame
        return torch.cat([x[:, :n], x[:, n:] + emb.repeat_interleave(tokens_per_frame, dim=1)], dim=1)

    def _velocity(self, out: torch.Tensor, guess: torch.Tensor | None) -> torch.Tensor:
        """The latents' velocity (B, C, t, h, w) from a network output: itself, or with `future_residual` the residual's
        velocity − c on the future frames (`guess`: c there, 0 on the context)."""
        return out if guess is None else out - guess.to(out.dtype)

    def _output_layer(self, x: torch.Tensor, embedded: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
        """LTX's output layer (norm, timestep shift and scale, projection) on tokens (B, S, D) → (B, C, t, h, w)."""
        tr = self.transformer
        shift, scale = (tr.scale_shift_table[None, None] + embedded[:, :, None]).unbind(dim=2)  # (B, S, D) each
        x = tr.norm_out(x) * (1 + scale) + shift  # (B, S, D)
        return self._unpack(tr.proj_out(x), t, h, w)  # (B, S, C) → (B, C, t, h, w)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, t, h, w) → (B, t·(h/p)·(w/p), C·p²), channels in LTX's order (C, p, p)."""
        b, c, t, h, w = latents.shape
        p = self.patch_size
        x = latents.reshape(b, c, t, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)  # (B, t, h', w', C, p, p)
        return x.reshape(b, t * (h // p) * (w // p), c * p * p)

    def _unpack(self, tokens: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
        """(B, t·(h/p)·(w/p), C·p²) → (B, C, t, h, w): `pack`'s inverse."""
        b, _, cpp = tokens.shape
        p = self.patch_size
        c = cpp // (p * p)
        x = tokens.view(b, t, h // p, w // p, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)  # (B, C, t, h', p, w', p)
        return x.reshape(b, c, t, h, w)

    def token_grid(self, h: int, w: int) -> tuple[int, int]:
        """Tokens per latent frame along (height, width) for latents of h × w."""
        return h // self.patch_size, w // self.patch_size

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype | None = None) -> "VideoDiT":
        """Strict load of a folder written by `save_pretrained` / `save_model_atomic` (CheckpointError on any
        missing, unexpected or mis-shaped key; never random weights)."""
        return load_model_strict(cls, path, dtype=dtype)

    @classmethod
    def from_preset(cls, name: str, *, meta: bool = False, **overrides) -> "VideoDiT":
        """A VideoDiT of a `VIDEO_DIT_PRESETS` size; `meta=True` allocates nothing (parameters on the meta
        device, to be filled by loading)."""
        if name not in VIDEO_DIT_PRESETS:
            raise KeyError(f"unknown Video DiT preset {name!r}; known: {sorted(VIDEO_DIT_PRESETS)}")
        kwargs = {**VIDEO_DIT_PRESETS[name], **overrides}
        if not meta:
            return cls(**kwargs)
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            return cls(**kwargs)

    @classmethod
    def from_ltx_transformer(
        cls, path: str | Path, *, dtype: torch.dtype | None = torch.float32, **new_args
    ) -> "VideoDiT":
        """A VideoDiT whose transformer is the `LTXVideoTransformer3DModel` saved in the local diffusers folder
        `path` (LTX-Video's `transformer/`, or the pipeline folder around it), loaded strictly; the conditioning
        tokens and heads are new. Built on the meta device, so the transformer's weights are allocated once. `new_args`: VideoDiT
        arguments that LTX has not (head_blocks, num_cond_tokens, rope_interpolation_scale, …)."""
        from accelerate import init_empty_weights

        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint folder not found: {path}")
        if not (path / "config.json").is_file() and not (path / "model_index.json").is_file():
            hint = " (pass its transformer/ subfolder)" if (path / "transformer" / "config.json").is_file() else ""
            raise CheckpointError(f"no LTX transformer config.json in {path}{hint}")
        path = diffusers_component(path, "transformer", "LTXVideoTransformer3DModel")  # a pipeline folder too
        ltx = LTXVideoTransformer3DModel.load_config(path)
        inner = ltx["num_attention_heads"] * ltx["attention_head_dim"]
        if ltx.get("patch_size", 1) != 1 or ltx.get("patch_size_t", 1) != 1:
            raise CheckpointError(f"{path}: only patch_size = patch_size_t = 1 LTX transformers are supported")
        out_channels = ltx.get("out_channels") or ltx["in_channels"]
        if ltx.get("cross_attention_dim", inner) != inner or out_channels != ltx["in_channels"]:
            raise CheckpointError(f"{path}: need cross_attention_dim == {inner} and out_channels == in_channels")
        arch = {
            k: ltx[k]
            for k in (
                "in_channels", "num_layers", "num_attention_heads", "attention_head_dim", "caption_channels",
                "activation_fn", "norm_elementwise_affine", "norm_eps", "attention_bias", "attention_out_bias",
            )
            if k in ltx
        }
        clash = sorted(set(arch) & set(new_args))
        if clash:
            raise ValueError(f"{clash} come from the LTX checkpoint and cannot be overridden")
        with init_empty_weights(include_buffers=False):
            model = cls(**arch, **new_args)
        state = read_state_dict(path)
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        load_state_dict_strict(model.transformer, state, where=str(path), assign=True)
        dtype = dtype or next(model.transformer.parameters()).dtype
        new_parts = [model.cond, model.heads] + [m for m in (model.context_proj, model.cond_adaln, model.motion_head,
                                                            model.motion_embed) if m is not None]
        for module in new_parts:  # new parts: real memory, fresh initialisation
            module.to_empty(device="cpu")
        model.cond.reset_parameters()
        for head in model.heads.values():
            head.reset_parameters()
        model.reset_context_proj()
        if model.cond_adaln is not None:
            model.cond_adaln.reset_parameters()
        if model.motion_head is not None:
            model.motion_head.reset_parameters()
        if model.motion_embed is not None:
            model.motion_embed.reset_parameters()
        for module in new_parts:
            module.to(dtype)
        return model.eval()


def ltx_rope_scale(frame_rate: float, temporal_ratio: int, spatial_ratio: int) -> tuple[float, float, float]:
    """LTX's RoPE interpolation scale for clips at `frame_rate` [Hz] through a VAE with these compression ratios:
    one latent frame spans `temporal_ratio / frame_rate` seconds and one latent pixel `spatial_ratio` pixels
    (diffusers' `LTXPipeline` and finetrainers' LTX recipe use the same). The one place it is computed."""
    if frame_rate <= 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    return (temporal_ratio / frame_rate, float(spatial_ratio), float(spatial_ratio))


def config_motion_frames(config: Config) -> int:
    """The `motion_frames` a Video DiT of `config` is built with when it has a motion head (`video.motion_block`):
    the future latent frames of the clip layout through the VAE that `config.vae` builds; 0 without a motion head.
    For tools that build a model from a config alone (benchmarks); training reads the count off its VAE."""
    if config.video.motion_block is None:
        return 0
    from reworld.models.vae import vae_ratios

    temporal = vae_ratios(config.vae)[1]
    if config.data.future_frames % temporal:
        raise ValueError(f"future_frames={config.data.future_frames} is not a multiple of the VAE's temporal ratio "
                         f"{temporal}")
    return config.data.future_frames // temporal


def video_dit_from_config(cfg: VideoConfig, in_channels: int,
                          rope_scale: tuple[float, float, float] | None = None, motion_frames: int = 0) -> VideoDiT:
    """The Video DiT of a run: from `cfg.pretrained` (an LTX transformer folder) when set, else new.
    `in_channels` = VAE latent channels. RoPE scale: `cfg.rope_interpolation_scale` when the config pins one, else
    `rope_scale` (the run's, from `ltx_rope_scale`), else VideoDiT's default; stored in the model's config."""
    new_args = dict(head_blocks=tuple(cfg.head_blocks), num_cond_tokens=cfg.num_cond_tokens,
                    concat_last_context=bool(cfg.concat_last_context), future_residual=bool(cfg.future_residual),
                    adaln_cond=bool(cfg.adaln_cond))
    if cfg.motion_block is not None:  # the motion head and its statistics' size (the future latent frames)
        new_args.update(motion_block=int(cfg.motion_block), motion_frames=int(motion_frames),
                        motion_feedback=bool(cfg.motion_feedback))
    elif cfg.motion_feedback:
        raise ValueError("video.motion_feedback needs video.motion_block (the head whose poses it feeds back)")
    scale = cfg.rope_interpolation_scale or rope_scale
    if scale is not None:
        if len(scale) != 3:
            raise ValueError(f"video.rope_interpolation_scale must be (t, h, w), got {tuple(scale)}")
        new_args["rope_interpolation_scale"] = tuple(float(s) for s in scale)
    if cfg.pretrained:
        if cfg.patch_size != 1:
            raise CheckpointError("video.patch_size must be 1 with an LTX-Video transformer (it packs patch 1)")
        model = VideoDiT.from_ltx_transformer(cfg.pretrained, **new_args)
        if model.config.in_channels != in_channels:
            raise CheckpointError(
                f"LTX transformer at {cfg.pretrained} has {model.config.in_channels} input channels, "
                f"the VAE {in_channels}"
            )
        return model
    kwargs = dict(in_channels=in_channels, num_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
                  attention_head_dim=cfg.attention_head_dim, patch_size=cfg.patch_size, **new_args)
    return VideoDiT(**kwargs)
