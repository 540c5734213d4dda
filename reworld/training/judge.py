"""Training of the video judge `WorldJudge` (`python -m reworld train-judge`): on real clips of the training scenes
it learns to read the world's truth per frame (`FrameLabels`, from the tables); `fit_judge` then validates it on
the held-out scenes (`reworld.evaluation.judge.validate_judge`) and saves both."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from dataclasses import replace as dc_replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reworld.config import load_config, replace
from reworld.data.types import COMMANDS
from reworld.evaluation.judge import (READING_CHECKS, JudgeOutput, JudgeSet, WorldJudge, constant_velocity_readings, load_judge_set,
                                     read_videos, reading_errors, reading_ratios, reading_score, validate_judge)
from reworld.models.layers import save_model_atomic
from reworld.data.synth.params import GENERATOR_VERSION
from reworld.paths import resolve_dataroot
from reworld.runtime import default_device


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class JudgeTrainConfig:
    batch_size: int = 16
    lr: float = 1e-3  # AdamW, cosine decay to 0
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (32, 64, 96, 128)
    frame_stages: int = 3  # the correlation at 1/8 resolution: 1.2× judge 4's step time (1/4 with radius 3: 2×)
    correlation_radius: int = 2
    correlation_channels: int = 32
    token_dim: int = 128
    num_layers: int = 2
    feature_dim: int = 32
    map_channels: int = 32
    dropout: float = 0.1
    # the road's motion in metres beside the learned comparison (WorldJudge ground_camera). On (docs/world4s.md, J7):
    # held-out speed 0.83 m/s instead of 0.87, position 1.54 m instead of 1.56, heading 0.81° instead of 0.9°
    ground_view: bool = True
    flip: float = 0.5  # share of clips mirrored left-right (labels mirrored with them)
    jitter: float = 0.15  # per-clip brightness shift, contrast and colour gain spread (0: none)
    # the lead vehicle's loss (docs/world4s.md, J9): its distance and lateral offset in units of the training labels'
    # spread (standard deviation over frames with a vehicle ahead; off: the fixed 40 m and 6 m), and the smooth-L1's
    # quadratic zone (β, in those units) around zero. Judge 9 against judge 8 (β = 1 in 40 m / 6 m): held-out lead
    # offset 0.49 m instead of 1.03, distance 1.40 m instead of 5.45, presence 94.8 % right instead of 84.3 %
    lead_spread: bool = True
    lead_beta: float = 0.1
    log_every: int = 50
    val_every: int = 400  # with val data: its reading errors are logged (for information; nothing is chosen on it);
    # with a stop world: the checkpoint is scored on it (`reading_score`) and the best kept


def _targets(data: JudgeSet, idx, device) -> dict[str, torch.Tensor]:
    k0 = data.n_context - 1
    pose = data.ego_pose[idx][:, k0 + 1:]
    prev = data.ego_pose[idx][:, k0:-1]
    # each step's motion in the previous frame's ego frame
    c, s = np.cos(prev[..., 2]), np.sin(prev[..., 2])
    d = pose[..., :2] - prev[..., :2]
    steps = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], pose[..., 2] - prev[..., 2]], -1)
    lead = data.lead[idx][:, k0 + 1:]

    def t(a, dtype=torch.float32):
        return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

    return {"pose": t(pose), "steps": t(steps), "speed": t(data.speed[idx][:, k0 + 1:]), "present": t(lead[..., 0]),
            "lead": t(np.nan_to_num(lead[..., 1:])), "command": t(data.command[idx], torch.long)}


def augment(videos: torch.Tensor, target: dict[str, torch.Tensor], train: JudgeTrainConfig,
            generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A share `train.flip` of the clips mirrored left-right, as the world mirrored about the ego's axis would look
    (lateral positions, headings, offsets and turn commands mirrored), and every clip's colours jittered (the same
    for all its frames: brightness, contrast, per-channel gain), so that the judge reads geometry, not a scene's
    lighting."""
    b = videos.shape[0]
    flip = torch.rand(b, generator=generator) < train.flip
    videos = torch.where(flip.view(b, 1, 1, 1, 1).to(videos.device), videos.flip(-1), videos)
    target = dict(target)
    sign = torch.where(flip, -1.0, 1.0).to(videos.device)
    mirror = torch.stack([torch.ones_like(sign), sign, sign], -1)[:, None]  # (B, 1, 3): y and heading change sign
    target["pose"] = target["pose"] * mirror
    target["steps"] = target["steps"] * mirror
    target["lead"] = target["lead"] * torch.stack([torch.ones_like(sign), sign], -1)[:, None]
    swapped = (len(COMMANDS) - 1) - target["command"]  # left ↔ right, straight stays
    target["command"] = torch.where(flip.to(videos.device), swapped, target["command"])
    if train.jitter > 0:
        j = train.jitter
        shift = (torch.rand(b, 1, 1, 1, 1, generator=generator) * 2 - 1) * j
        contrast = 1 + (torch.rand(b, 1, 1, 1, 1, generator=generator) * 2 - 1) * j
        gain = 1 + (torch.rand(b, 1, 3, 1, 1, generator=generator) * 2 - 1) * j * 0.5
        videos = ((videos * contrast * gain.to(videos.device)) + shift.to(videos.device)).clamp(-1, 1)
    return videos, target


def judge_losses(out: JudgeOutput, target: dict[str, torch.Tensor], judge: WorldJudge,
                 lead_beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-term losses, each in the judge's output units (so that every term is O(1)); the lead's smooth-L1 is
    quadratic within `lead_beta` of zero (in `lead_scale` units), linear beyond."""
    cfg = judge.config
    step_scale = target["steps"].new_tensor(cfg.step_scale)
    pose_scale = step_scale * torch.arange(1, out.ego_pose.shape[1] + 1, device=step_scale.device)[:, None].sqrt()
    lead_scale = target["lead"].new_tensor(cfg.lead_scale)
    present = target["present"]
    lead_err = F.smooth_l1_loss(out.lead / lead_scale, target["lead"] / lead_scale, reduction="none",
                                beta=lead_beta).sum(-1)
    return {
        "steps": F.smooth_l1_loss(out.step_motion / step_scale, target["steps"] / step_scale),
        "pose": F.smooth_l1_loss(out.ego_pose / pose_scale, target["pose"] / pose_scale),
        "speed": F.smooth_l1_loss(out.speed / cfg.speed_scale, target["speed"] / cfg.speed_scale),
        "present": F.binary_cross_entropy_with_logits(out.lead_logit, present),
        "lead": (lead_err * present).sum() / present.sum().clamp_min(1.0),
        "command": F.cross_entropy(out.command_logits, target["command"]),
    }


def output_scales(data: JudgeSet, lead_spread: bool = False) -> dict:
    """The judge's output units from the training labels: per-step motion and speed (root mean square) and, with
    `lead_spread`, the lead vehicle's distance and lateral offset (standard deviation over the future frames with a
    vehicle ahead; fewer than two such frames: the fixed default)."""
    t = _targets(data, np.arange(len(data)), "cpu")
    steps = t["steps"].reshape(-1, 3).square().mean(0).sqrt().clamp_min(1e-3)  # root mean square per component
    speed = float(t["speed"].square().mean().sqrt().clamp_min(1e-3))
    scales = {"step_scale": tuple(round(float(v), 4) for v in steps), "speed_scale": round(speed, 3)}
    lead = t["lead"][t["present"] > 0.5]  # (N, 2) [m]
    if lead_spread and len(lead) > 1:
        scales["lead_scale"] = tuple(round(float(v), 3) for v in lead.std(0).clamp_min(0.1))
    return scales


def train_judge(data: JudgeSet, steps: int, seed: int = 0, device: str | torch.device = "cpu",
                train: JudgeTrainConfig | None = None, frame_rate: float = 4.0,
                val: JudgeSet | None = None, stop: JudgeSet | None = None) -> tuple[WorldJudge, list[dict]]:
    """Train a `WorldJudge` on `data` for `steps` AdamW steps → (model in eval mode, log rows; with `val`, its mean
    reading errors every `train.val_every` steps, logged for information). With `stop` (clips of scenes in neither
    `data` nor `val`), every `train.val_every` steps and at the last the judge is scored on it (`reading_score`,
    logged as "stop") and the weights of the lowest score are the ones returned (the chosen row has "chosen": true)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    train = train or JudgeTrainConfig()
    device = torch.device(device)
    torch.manual_seed(seed)
    t_total = data.frames.shape[1]
    if train.ground_view and data.camera is None:
        raise ValueError("ground_view needs the clips' camera (JudgeSet.camera)")
    model = WorldJudge(context_frames=data.n_context, future_frames=t_total - data.n_context, frame_rate=frame_rate,
                       frame_size=tuple(data.frames.shape[-2:]), widths=tuple(train.widths),
                       frame_stages=train.frame_stages, correlation_radius=train.correlation_radius,
                       correlation_channels=train.correlation_channels,
                       token_dim=train.token_dim, num_layers=train.num_layers, feature_dim=train.feature_dim,
                       map_channels=train.map_channels, dropout=train.dropout,
                       ground_camera=data.camera if train.ground_view else None,
                       **output_scales(data, train.lead_spread)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(seed)
    log, start = [], time.perf_counter()
    stop_cv = reading_errors(constant_velocity_readings(stop), stop) if stop is not None else None
    best = None  # (score, step, weights) on the stop world
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(len(data), (min(train.batch_size, len(data)),), generator=generator).numpy()
        videos, target = augment(data.video(torch.as_tensor(idx)).to(device), _targets(data, idx, device), train,
                                 generator)
        terms = judge_losses(model(videos, torch.as_tensor(data.time[idx])), target, model, train.lead_beta)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % train.log_every == 0 or step in (1, steps):
            log.append({"step": step, "loss": round(loss.item(), 5), "seconds": round(time.perf_counter() - start, 1),
                        **{k: round(v.item(), 5) for k, v in terms.items()}})
            if val is not None and (step % train.val_every == 0 or step == steps):
                model.eval()
                err = reading_errors(read_videos(model, val.video(slice(None)), times=val.time), val)
                model.train()
                log[-1]["val"] = {k: round(float(np.mean(v)), 4) for k, v in err.items()}
            if stop is not None and (step % train.val_every == 0 or step == steps):
                model.eval()
                score = reading_score(reading_errors(read_videos(model, stop.video(slice(None)), times=stop.time),
                                                     stop), stop_cv)
                model.train()
                log[-1]["stop"] = round(score, 4)
                if best is None or score < best[0]:
                    best = (score, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
            print(json.dumps(log[-1]), flush=True)
    if best is not None:
        model.load_state_dict(best[2])
        next(row for row in log if row["step"] == best[1] and "stop" in row)["chosen"] = True
    return model.eval(), log


# ---------------------------------------------------------------------------------------------- model card
READINGS = (  # (key in the errors, label, unit, format)
    ("position_m", "ego position since t = 0", "m", "{:.2f}"),
    ("heading_deg", "ego heading change", "°", "{:.2f}"),
    ("speed_mps", "ego speed", "m/s", "{:.3f}"),
    ("lead_presence", "vehicle ahead present (right)", "%", "{:.1%}"),
    ("lead_distance_m", "its distance", "m", "{:.2f}"),
    ("lead_offset_m", "its lateral offset", "m", "{:.3f}"),
)


def judge_card(result: dict, name: str = "judge", out: str | None = None) -> str:
    """MODEL_CARD.md of a judge from its `validation.json` (`fit_judge`'s result): how it was made, and its
    validation on the held-out world, every figure read from `result`."""
    v, train = result["validation"], result.get("train", {})
    err, cv = v["errors"], v["cv_errors"]
    frames = len(err["position_m"])
    rate = float(result.get("data", {}).get("frame_rate", 4.0))
    defaults = asdict(JudgeTrainConfig())
    changed = {k: val for k, val in train.items() if k in defaults and _plain(val) != _plain(defaults[k])}
    command = (f"python -m reworld train-judge --out {out or name} --steps {result['steps']} --seed {result['seed']}"
               + (f" --train-dataroot {result['train_dataroot']}" if "(train split)" not in result["train_dataroot"]
                  else "")
               + (f" --val-dataroot {result['val_dataroot']}" if "(val split)" not in result["val_dataroot"] else "")
               + (f" --stop-dataroot {result['stop_dataroot']}" if result.get("stop_dataroot") else "")
               + "".join(f" --set {k}={_plain(val)}" for k, val in changed.items()))
    mean = lambda xs: float(np.nanmean(np.asarray(xs, float))) if isinstance(xs, list) else float(xs)  # noqa: E731
    lines = [
        f"# {name} — the video judge (`WorldJudge`, {result['metric_name']})", "",
        "Reads, per future frame of a 4 Hz clip (1 s of context, 4 s of future, 64×128), what the synthetic world "
        "knows exactly: the ego's displacement, heading change and speed, the nearest vehicle ahead (present, "
        "distance, lateral offset) and the clip's command; its features give the Fréchet distance "
        f"`{result['metric_name']}` and a KID. `reworld/evaluation/judge.py` says how.", "",
        f"Made by ({result['steps']} steps, seed {result['seed']}, {result['train_clips']} training clips, "
        f"{result['minutes']} min on 2 CPU cores; the checkpoint kept is step {result.get('chosen_step', '?')}"
        + (", the one that read the stop world best" if result.get("stop_dataroot") else "") + "):", "",
        *[f"    {line}" for line in _world_commands(result)],
        f"    {command}", "",
        f"Validation on the held-out world ({v['clips']} clips of {v['scenes']} scenes, `{result['val_dataroot']}`), "
        "means over the future frames; the guess holds the truth at t = 0 (`validate-judge`, recomputed by "
        "`tests/test_judge.py`):", "",
        "| reading | judge | constant-velocity guess | ratio | beats the guess |",
        "|---|---|---|---|---|",
    ]
    checks, ratios = v["checks"], reading_ratios(err, cv)
    for key, label, unit, fmt in READINGS:
        j, g = mean(err[key]), mean(cv[key])
        space = "" if unit in ("%", "°") else " "
        shown = [fmt.format(x) + ("" if unit == "%" else space + unit) for x in (j, g)]
        check = READING_CHECKS[key]
        ratio = ratios.get(key)
        lines.append(f"| {label} | {shown[0]} | {shown[1]} | {'' if ratio is None else f'{ratio:.3f}'} | "
                     f"{'yes' if checks.get(check) else 'no'} |")
    lines.append(f"| command (right) | {err['command_acc']:.1%} | {cv['command_acc']:.1%} | "
                 f"{'' if 'command' not in ratios else format(ratios['command'], '.3f')} | "
                 f"{'yes' if checks.get(READING_CHECKS['command']) else 'no'} |")
    steps_at = [k for k in range(frames) if abs(((k + 1) / rate) % 1.0) < 1e-6]  # 1 s, 2 s, … ahead
    lines += ["", "The floor per horizon (judge on real clips / the guess):", "",
              "| ahead | " + " | ".join(f"{(k + 1) / rate:g} s" for k in steps_at) + " |",
              "|---|" + "---|" * len(steps_at)]
    for key, label, unit, fmt in READINGS[:3] + READINGS[4:6]:
        cells = [f"{fmt.format(err[key][k])} / {fmt.format(cv[key][k])}" for k in steps_at]
        lines.append(f"| {label} [{unit}] | " + " | ".join(cells) + " |")
    lines.append("| vehicle ahead present [% right] | " + " | ".join(
        f"{err['lead_presence'][k]:.0%} / {cv['lead_presence'][k]:.0%}" for k in steps_at) + " |")
    fd, kid = v["fd"], v["kid"]
    order = ["real"] + [k for k in fd if k.startswith("blur_")] + [k for k in fd if k != "real" and not k.startswith("blur_")]
    lines += ["", f"Distances to the first half of the held-out clips ({v['clips_a']} clips; the other {v['clips_b']}, "
              f"the same scenes dealt in blocks of {v['block']} clips, as they are or "
              "altered):", "",
              "| futures | " + " | ".join(k.replace("_", " ") for k in order) + " |",
              "|---|" + "---|" * len(order),
              f"| {result['metric_name']} | " + " | ".join(f"{fd[k]:.2f}" for k in order) + " |",
              # validations from before 2026-12-06 read KID over all pairs (docs/world4s.md, K1): said so
              f"| KID{'' if v.get('kid_estimator') == 'K1' else ' (all pairs, before K1)'} | "
              + " | ".join("—" if kid[k] is None else f"{kid[k]:.3f}" for k in order) + " |", "",
              "Checks: " + ", ".join(f"{k} {'✓' if ok else '✗'}" for k, ok in checks.items())
              + f". **{'Passed' if v['passed'] else 'Failed'}.**", ""]
    return "\n".join(lines)


def _world_commands(result: dict) -> list[str]:
    """The `synth` commands that make the judge's worlds, from each synthetic root's synth_meta.json (where it is
    at hand; real nuScenes roots have none)."""
    lines = []
    for key in ("train_dataroot", "val_dataroot", "stop_dataroot"):
        root = str(result.get(key) or "").removesuffix(" (train split)").removesuffix(" (val split)")
        try:
            meta = json.loads((Path(resolve_dataroot(root)) / "synth_meta.json").read_text()) if root else None
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and f"--out {root} " not in " ".join(lines) + " ":
            lines.append(f"python -m reworld synth --out {root} --scenes {meta.get('num_scenes')} --seed "
                         f"{meta.get('seed')}" + (f" --generator {meta['generator']}" if meta.get("generator") not in
                                                  (None, GENERATOR_VERSION) else ""))
    return lines


def _plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def write_judge_card(folder: str | Path) -> Path:
    """(Re)write `folder`/MODEL_CARD.md from `folder`/validation.json, atomically."""
    folder = Path(folder)
    result = json.loads((folder / "validation.json").read_text())
    tmp = folder / "MODEL_CARD.md.tmp"
    tmp.write_text(judge_card(result, folder.name, str(folder)))
    tmp.replace(folder / "MODEL_CARD.md")
    return folder / "MODEL_CARD.md"


# ---------------------------------------------------------------------------------------------- entry point
def fit_judge(config_path: str | Path, out_dir: str | Path, steps: int, dataroot: str | None = None,
              version: str | None = None, seed: int | None = None, train: JudgeTrainConfig | None = None,
              train_dataroot: str | None = None, val_dataroot: str | None = None,
              stop_dataroot: str | None = None) -> dict:
    """Train the judge on the train split of the config's data (or on every clip of `train_dataroot`, a world of
    training-only scenes), validate it on the val split of the config's data (or on every clip of `val_dataroot`, a
    world of held-out scenes), keeping the checkpoint that scores best on every clip of `stop_dataroot` (a third
    world; without it the last step's), save it to `out_dir` (safetensors, atomically) with `validation.json` (the
    validation, the training log, the data it reads)."""
    config = load_config(config_path)
    named_root = str(dataroot or config.data.dataroot)  # as the user named it (recorded), not this machine's path
    config = replace(config, data={"dataroot": resolve_dataroot(named_root), **({"version": version} if version else {})})
    seed = config.train.seed if seed is None else seed
    started = time.perf_counter()
    if train_dataroot:
        train_set = load_judge_set(dc_replace(config.data, dataroot=resolve_dataroot(train_dataroot)), "all")
    else:
        train_set = load_judge_set(config.data, "train")
    if val_dataroot:
        val_set = load_judge_set(dc_replace(config.data, dataroot=resolve_dataroot(val_dataroot)), "all")
    else:
        val_set = load_judge_set(config.data, "val")
    stop_set = (load_judge_set(dc_replace(config.data, dataroot=resolve_dataroot(stop_dataroot)), "all")
                if stop_dataroot else None)
    model, log = train_judge(train_set, steps, seed=seed, device=default_device(), train=train,
                             frame_rate=config.data.frame_rate, val=val_set, stop=stop_set)
    validation = validate_judge(model, val_set)
    out = save_model_atomic(model, out_dir)
    data = {**asdict(config.data), "dataroot": named_root}
    result = {"metric_name": model.metric_name, "steps": steps, "seed": seed, "train_clips": len(train_set),
              "train_dataroot": str(train_dataroot) if train_dataroot else f"{named_root} (train split)",
              "val_dataroot": str(val_dataroot) if val_dataroot else f"{named_root} (val split)",
              "stop_dataroot": str(stop_dataroot) if stop_dataroot else None,
              "chosen_step": next((row["step"] for row in log if row.get("chosen")), steps),
              "minutes": round((time.perf_counter() - started) / 60, 1), "validation": validation, "log": log,
              "data": data, "train": asdict(train or JudgeTrainConfig())}
    tmp = out / "validation.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=float))
    tmp.replace(out / "validation.json")
    write_judge_card(out)
    return result
