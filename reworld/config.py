"""Frozen, annotated configuration, loaded from YAML and written as JSON beside every checkpoint."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

STAGES = ("vae", "video", "action", "joint")  # the training stages, in the order a run goes through them

# Keys that older configs (and the config.json of checkpoints written before them) carry but that no code
# reads any more; loading drops them, so such a checkpoint opens as it is. section → {key: why}
RETIRED_KEYS: dict[str, dict[str, str]] = {
    "video": {"meta_init": "never filled by a load; LTX weights go through video.pretrained"},
}


@dataclass(frozen=True)
class DataConfig:
    dataroot: str = "data/synth"  # nuScenes-format root (relative paths resolve against the repo root)
    version: str = "v1.0-synth"  # table folder under dataroot
    camera: str = "CAM_FRONT"
    image_height: int = 64  # [px] frames are resized to this
    image_width: int = 128  # [px]
    # how a camera image becomes a frame of image_height × image_width: "crop" (resized to cover the frame, the
    # overhang cut evenly from both sides, as LTX-Video's trainers prepare clips: nuScenes' 16:9 at 2:1 loses 50 of
    # its 900 rows top and bottom, nothing is distorted) or "stretch" (each axis resized on its own). The same when the
    # aspects agree (the synthetic world's 128×256 at 64×128)
    image_fit: str = "crop"
    context_frames: int = 5  # frames up to and including t=0
    future_frames: int = 4  # frames after t=0
    frame_rate: float = 6.0  # [Hz] frame spacing of a clip, taken from the 12 Hz sweeps
    val_fraction: float = 0.2  # share of scenes held out, split by scene name
    split_seed: int = 0
    horizon_s: float = 4.0  # [s] future trajectory / agent horizon (8 poses at 0.5 s)
    num_poses: int = 8
    # times of the future poses: "uniform" (every horizon_s / num_poses from t = 0, what the scorer expects) or
    # "keyframes" (the next num_poses key frames, 450–550 ms apart on real nuScenes: the convention of the nuScenes
    # planning literature's L2; the scene's clips then need that many key frames ahead)
    future_poses: str = "uniform"
    map_radius: float = 60.0  # [m] drivable area patch around the ego
    # lane / lane-connector and intersection polygons in each clip's map geometry: what NAVSIM's at-fault and TTC
    # rules read (the default scorer); without them the ego is never "in several lanes" or "in an intersection"
    map_lanes: bool = True
    centerline_behind: float = 10.0  # [m] route centreline kept behind the ego
    centerline_ahead: float = 120.0  # [m] and ahead of it
    command_threshold: float = 2.0  # [m] lateral offset at the horizon that makes a turn command (UniAD)
    ego_length: float = 4.5  # [m]
    ego_width: float = 1.9  # [m]
    # [m] the ego box's centre ahead of the ego pose, along the heading. The synthetic world's poses are box centres
    # (0). nuScenes' ego frame is the midpoint of the rear axle: for its Renault Zoe set ego_length 4.084,
    # ego_width 1.730, ego_center_offset_m 1.385 (configs/paper.yaml does)
    ego_center_offset_m: float = 0.0
    # synthetic world (reworld synth)
    synth_scenes: int = 24
    synth_seed: int = 0
    synth_image_height: int = 128  # [px] rendered camera size
    synth_image_width: int = 256  # [px]


@dataclass(frozen=True)
class VAEConfig:
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    latent_channels: int = 16
    patch_size: int = 2
    spatio_temporal_scaling: tuple[bool, ...] = (True, True, False)
    pretrained: str | None = None  # local diffusers folder of a pretrained AutoencoderKLLTXVideo (or its pipeline)
    # decoding a timestep-conditioned VAE (LTX-Video ≥ 0.9.1; ignored by others): the decoder's timestep and the
    # share of noise mixed into the latents first (the defaults of diffusers' LTX long-video pipeline; plain
    # LTXPipeline defaults to 0, i.e. no noise and timestep 0)
    decode_timestep: float = 0.05
    decode_noise_scale: float = 0.025
    tiling: bool = False  # decode (and encode) in overlapping spatial tiles: large frames in bounded memory
    # stage vae: frames per training window, 1 + k·(temporal ratio), cut at a random start from each clip; 0: whole
    # clips. The VAE is convolutional in time, so it learns on short windows and still encodes whole clips
    train_window: int = 0


@dataclass(frozen=True)
class VideoConfig:
    num_layers: int = 8
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    head_blocks: tuple[int, ...] = (2,)  # blocks with an intermediate velocity head
    feature_blocks: tuple[int, ...] = ()  # blocks whose hidden states the planner reads; () = all
    num_cond_tokens: int = 4  # learned tokens from command + ego status
    # p×p latent pixels packed into one token (LTX's spatial patch size; LTX-Video itself uses 1): a VAE with less
    # spatial compression, seen at the same token count
    patch_size: int = 1
    pretrained: str | None = None  # local diffusers folder with LTX-Video transformer weights (or its pipeline)
    # fine-tuning: stage video starts from this Video DiT folder (this package's own, e.g. a shipped checkpoint's
    # `video_dit/`), loaded strictly into the config's architecture; its untrained heads (all zeros) start as new ones
    init_from: str | None = None
    # LTX RoPE (t, h, w) interpolation scale; None: derived from the clips and the VAE as diffusers' LTXPipeline
    # does, (temporal ratio / frame rate, spatial ratio, spatial ratio) (`models.video_dit.ltx_rope_scale`)
    rope_interpolation_scale: tuple[float, ...] | None = None
    # image-to-video conditioning as Stable Video Diffusion adds it (its pipeline repeats the image latents for every
    # frame and concatenates them to the channels; CogVideoX-I2V puts them at the first frame only, zeros elsewhere):
    # every token also receives the last clean context latent frame at its own position (through a zero-initialised
    # projection, which equals the concatenation), so that copying what is there needs no attention to be learned
    concat_last_context: bool = False
    # RVD's residual with the last context latent frame c as the guess: the Video DiT reads future latents as
    # x_t − (1 − σ) c (the noised residual x0 − c) and its velocities are its output − c, so that at σ = 1 an output
    # equal to its input predicts x0 = c, a copy of the last context frame (a reparameterisation: loss, sampler and
    # x0 = x_t − σ v unchanged; `models.video_dit`)
    future_residual: bool = False
    # the command and the ego status also added to the embedded timestep that every block's adaLN reads, as DiT
    # conditions on a class (zero-initialised; the cross-attended conditioning tokens stay; `models.video_dit`)
    adaln_cond: bool = False
    # a motion head on this block's tokens (0-based; None = none): per future latent frame, the ego's pose at the frame's
    # last time, trained with loss.lambda_motion (docs/world4s.md, E15; `models.video_dit`)
    motion_block: int | None = None
    # the motion head's poses fed back to the blocks after it (a zero-initialised embedding added to each future
    # frame's tokens; docs/world4s.md, E17): what the sampler's motion guidance (train.motion_guidance) contrasts
    motion_feedback: bool = False
    # training-only worlds (nuScenes-format dataroots, the config's version and clip settings): every clip of every
    # scene in them joins the train split's clips in this stage (the Video DiT's), never its validation; the VAE
    # and planner stages train on the config's own train split
    train_worlds: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionConfig:
    width: int = 128
    num_heads: int = 4
    num_waypoints: int = 8
    feature_sigma: float = 1.0  # σ of the future tokens when video features are taken
    feature_pool: int = 2  # average-pool video tokens over pool×pool latent pixels before the planner
    # stage action: the frozen Video DiT's hidden states prepared once per clip on disk (bf16), or recomputed every
    # step with fresh noise (false: no disk, one frozen forward per step; what a paper-shaped model wants)
    feature_cache: bool = True
    # with the cache: noise draws prepared per clip (each step reads one per clip, chosen by the run's seed, the step
    # and the clip, so a resumed run reads the same); 1 = one fixed draw per clip for the whole stage. Without the
    # cache every step draws fresh noise (what DriveLaW does) at one frozen forward per step
    feature_draws: int = 1
    align_block: int = 1  # Action DiT block whose tokens are aligned
    align_video_block: int = 2  # Video DiT block that is the alignment target
    # what each waypoint token is aligned with: "pooled" (the mean of all future tokens, the same for every waypoint)
    # or "frames" (waypoint k: the mean of the tokens of the future latent frame at its time)
    align_target: str = "pooled"
    # the σ of the future in the Video DiT pass that gives the alignment target (REPA's teacher sees clean input):
    # None = the planner's own features (σ = feature_sigma, the same pass); 0 = the clean future (a second pass)
    align_sigma: float | None = None
    plan_steps: int = 10  # Euler steps of the planner at inference
    anchor: str = "constant_velocity"  # predict the residual from this kinematic anchor ("none": raw poses)
    per_waypoint_stats: bool = True  # normalise each waypoint with its own centre and half-range


@dataclass(frozen=True)
class LossConfig:
    lambda_ig: float = 0.5  # intermediate-guidance heads (0 = vanilla)
    # Internal Guidance's stop-gradient "training loss" (its project page): the final output learns the shifted
    # target u + ω·sg(v_f − v_i) (v_i: the shallowest head), which bakes guidance w = 1/(1 − ω) into v_f; 0 = off
    ig_target_shift: float = 0.0
    lambda_align: float = 0.5  # cross-modal alignment (0 = off)
    lambda_hn: float = 0.2  # hard-negative InfoNCE (0 = off)
    hn_temperature: float = 0.1
    hn_num_negatives: int = 8  # K hard negatives made per clip (cached)
    hn_negatives_per_step: int = 4  # of those, drawn per sample and step (0 = all K)
    hn_hinge_margin: float = 0.0  # [m] output-space repulsion margin (0 = off)
    # hard negatives clipped, once normalised with the expert's per-waypoint statistics, to |z| ≤ this before they
    # are noised: a negative far outside the expert's range is told apart by its magnitude alone (0 = off)
    hn_clip_z: float = 0.0
    lambda_hinge: float = 1.0  # weight of the output-space repulsion (0 = off)
    # how the Video DiT's flow loss weighs its future latent frames: "uniform" (the mean over them) or "linear"
    # (the k-th of F weighted k·2/(F + 1), mean 1: the last frame 2F/(F + 1) times the mean; docs/world4s.md, E14)
    future_frame_weighting: str = "uniform"
    # the Video DiT's motion head (video.motion_block): the mean squared error of its normalised future-frame poses
    # against the logged ego poses, weighted by this in the video and joint stages (0 = off; docs/world4s.md, E15)
    lambda_motion: float = 0.0
    # with video.motion_feedback, per training sample: the logged poses fed back instead of the head's reading
    # (teacher forcing) with this probability, and no feedback (the guidance's null condition) with motion_null's
    motion_teacher: float = 0.0
    motion_null: float = 0.0
    # per Video DiT training sample, with this probability every context latent frame is replaced by the last one
    # (the scene held at t = 0), so the ego status is left to carry the speed there (docs/world4s.md, E18; 0 = off)
    context_hold: float = 0.0
    logit_mean: float = 0.0  # shifted logit-normal σ sampling
    logit_std: float = 1.0
    # the model's noise schedule (diffusers' time shift, SD3: 3.0): training draws σ shifted by it and the sampler
    # spaces its steps with it (as diffusers' FlowMatchEulerDiscreteScheduler(shift=…)); > 1 spends both on high σ
    shift: float = 1.0
    # the Video DiT sampler's grid stretched so that its last σ before 0 is this (diffusers' `shift_terminal`;
    # LTX-Video's scheduler: 0.1); None: no stretch. Sampling only: training σ and the planner's grid do not use it
    shift_terminal: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    batch_size: int = 4  # clips per step in stages vae / video / joint
    action_batch_size: int = 32  # clips per step in stage action (cached features make steps cheap)
    lr: float = 3e-4
    lr_video_joint: float = 2e-5  # Video DiT learning rate in stage 3
    # Action DiT learning rate in stage 3: `lr` scaled linearly from action_batch_size to batch_size (the
    # joint step's batch), 3e-4 × 4/32; at `lr` itself the 8× noisier steps undo stage 2's precision
    lr_action_joint: float = 4e-5
    weight_decay: float = 0.0
    # diffusers' get_scheduler over each stage's max_steps: "constant" (the default), "cosine", "linear", …, after
    # lr_warmup_steps of linear warm-up (ignored by "constant")
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    # EMA of the trained weights (diffusers' EMAModel with warm-up: decay 1 − (1 + step)^−ema_power, capped at
    # ema_decay); validation and the exported models use the averages. 0: no EMA
    ema_decay: float = 0.0
    ema_power: float = 0.75
    max_steps: dict = field(default_factory=lambda: dict(zip(STAGES, (2000, 6000, 3000, 500))))  # per stage
    log_every: int = 10
    val_every: int = 500
    ckpt_every: int = 500
    val_clips: int = 16
    sample_steps: int = 20
    guidance: float = 1.4  # intermediate-supervised guidance w at sampling
    # the motion guidance s at sampling (VideoJAM's Inner-Guidance; needs video.motion_feedback): v + s (v − v_null)
    # with v_null the velocity without the fed-back poses; 0 = off
    motion_guidance: float = 0.0
    sharding: str = "ddp"  # with several processes: "ddp" (replicated) or "fsdp" (fully sharded, paper scale)
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (CUDA only): every step under autocast, fp32 master weights
    tf32: bool = True  # on CUDA: TF32 matmuls and convolutions (fp32 runs ~8× faster on tensor cores; CPU: no effect)
    gradient_checkpointing: bool = False  # recompute the Video DiT's blocks in backward: memory for ~30 % more time
    compile: bool = False  # torch.compile the Video DiT's repeated transformer blocks (regional compilation)
    # the Video DiT's attention kernel through diffusers' dispatcher: "native" (torch SDPA, which picks flash /
    # memory-efficient / cuDNN itself), "_native_flash", "_native_cudnn", "flash" (flash-attn installed), …;
    # backends that download kernels from a hub are refused
    attention_backend: str = "native"
    num_workers: int = 0  # DataLoader processes decoding clips while the latents are prepared (0: in this process)
    process_group_timeout_s: int = 1800  # [s] collectives wait this long (NCCL's 600 s default aborts long waits)


@dataclass(frozen=True)
class Config:
    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    action: ActionConfig = field(default_factory=ActionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ConfigError(ValueError):
    pass


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, f"{where}.{name}")
        elif isinstance(value, list) and (isinstance(default, tuple) or "tuple" in str(known[name].type)):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def drop_retired_keys(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config mapping without the `RETIRED_KEYS` (the converter applied to every config loaded)."""
    out = dict(values)
    for section, keys in RETIRED_KEYS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def config_from_dict(values: dict[str, Any]) -> Config:
    return _build(Config, drop_retired_keys(values) if isinstance(values, dict) else values, "config")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    return config_from_dict(values)


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config_json(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2))


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """`replace(cfg, data={"dataroot": d})`: a copy with some fields of some sections changed."""
    out = {}
    for name, changes in sections.items():
        out[name] = dataclasses.replace(getattr(config, name), **changes)
    return dataclasses.replace(config, **out)
