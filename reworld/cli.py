"""`python -m reworld …`: one entry point for data, scoring, training and evaluation.

A user's mistake (a wrong path, a malformed file) prints one `error: …` line and exits 2; tracebacks
are for our bugs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reworld.config import STAGES
from reworld.paths import (ASSETS, CHECKPOINTS, DEFAULT_CONFIG, JUDGE_CONFIG, default_clip_net, default_judge,
                           resolve_dataroot)

__all__ = ["build_parser", "main", "resolve_dataroot"]  # resolve_dataroot: kept importable from here

CHECK_CLIPS = 8  # clips of the shipped checkpoints' quick re-evaluation


def _user_errors() -> tuple[type[BaseException], ...]:
    from reworld.config import ConfigError
    from reworld.data.loader import DatasetError
    from reworld.models.layers import CheckpointError
    from reworld.planning.scene import SceneFormatError

    return (ConfigError, DatasetError, FileNotFoundError, SceneFormatError, CheckpointError)


def _data_config(args):
    from reworld.config import load_config, replace

    cfg = load_config(args.config)
    changes = {}
    if getattr(args, "dataroot", None):
        changes["dataroot"] = args.dataroot
    if getattr(args, "version", None):
        changes["version"] = args.version
    if changes:
        cfg = replace(cfg, data=changes)
    return cfg


# ---------------------------------------------------------------------------------------------- synth
def cmd_synth(args) -> int:
    from tqdm import tqdm

    from reworld.data.synth import generate_world

    bar = tqdm(total=args.scenes, desc="synth scenes", unit="scene")

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    summary = generate_world(args.out, num_scenes=args.scenes, seed=args.seed, version=args.version,
                             image_size=(args.height, args.width), progress=progress, generator=args.generator,
                             workers=args.workers)
    bar.close()
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    from collections import Counter

    from reworld.data.loader import NuScenesClips
    from reworld.data.types import COMMANDS

    cfg = _data_config(args)
    ds = {split: NuScenesClips(cfg.data, split=split, geometry=False) for split in ("train", "val")}
    commands = Counter()
    for split in ds.values():
        for i in range(0, len(split), max(1, len(split) // 50)):
            commands[COMMANDS[split[i].observation.command]] += 1
    info = {
        "dataroot": str(ds["train"].root),
        "version": cfg.data.version,
        "scenes": {k: len(v.split_scenes[k]) for k, v in ds.items()},
        "clips": {k: len(v) for k, v in ds.items()},
        "commands (sampled)": dict(commands),
        "clip": {
            "context_frames": cfg.data.context_frames,
            "future_frames": cfg.data.future_frames,
            "frame_rate_hz": cfg.data.frame_rate,
            "image": [cfg.data.image_height, cfg.data.image_width],
        },
    }
    info["checkpoints"] = sorted(p.name for p in CHECKPOINTS.iterdir() if p.is_dir()) if CHECKPOINTS.is_dir() else []
    print(json.dumps(info, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- scenes
def cmd_export_scene(args) -> int:
    from reworld.config import DataConfig
    from reworld.data.loader import NuScenesClips
    from reworld.planning.scene import PlanningScene

    ds = NuScenesClips(DataConfig(dataroot=args.dataroot, version=args.version), split="all")
    index = {ref.sample_token: i for i, ref in enumerate(ds.samples)}
    if args.sample not in index:
        raise ValueError(f"sample {args.sample!r} is not a usable key frame of {args.dataroot} "
                         f"(it needs context before and a {ds.cfg.horizon_s:g} s future); "
                         f"e.g. {ds.samples[0].sample_token if ds.samples else 'none available'}")
    scene = PlanningScene.from_clip(ds[index[args.sample]])
    Path(args.out).write_text(json.dumps(scene.to_json_dict(), indent=1))
    print(f"wrote {args.out}: {len(scene.agents)} agents, {len(scene.drivable_area)} drivable polygons, "
          f"command {scene.command}")
    return 0


def cmd_score(args) -> int:
    from dataclasses import asdict

    from reworld.planning.pdm import score_trajectory
    from reworld.planning.scene import load_scene, load_trajectory

    scene = load_scene(args.scene)
    poses = load_trajectory(args.trajectory)
    result = score_trajectory(scene, poses)
    print(json.dumps({k: _json_value(v) for k, v in asdict(result).items()}))
    return 0


def _json_value(v):
    """Strict JSON: NaN / inf (undefined diagnostics) become null; numpy scalars become floats."""
    import math

    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ---------------------------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from reworld.training import run_stage

    run_stage(stage=args.stage, config_path=args.config, out=args.out, max_steps=args.max_steps,
              resume=args.resume, dataroot=args.dataroot, version=args.version, vae_path=args.vae)
    return 0


def cmd_prepare(args) -> int:
    from reworld.training.stages import prepare_run

    prepare_run(args.config, args.out, dataroot=args.dataroot, version=args.version, vae_path=args.vae)
    return 0


# ---------------------------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from reworld.evaluation.evaluate import evaluate, write_report

    feature_net = args.feature_net if args.feature_net is not None else default_clip_net(args.checkpoint)
    report = evaluate(args.checkpoint, args.dataroot, args.version, args.split, limit=args.limit,
                      video_clips=args.video_clips, steps=args.steps, guidance=args.guidance, seed=args.seed,
                      i3d=args.i3d, feature_net=feature_net, plan_batch=args.plan_batch, scorer=args.scorer,
                      judge=args.judge if args.judge is not None else default_judge(args.checkpoint),
                      judge_samples=args.judge_samples, every=args.every, judge_every=args.judge_every,
                      motion_guidance=args.motion_guidance)
    print(report.markdown())
    if args.json:
        write_report(report, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_train_video_net(args) -> int:
    from reworld.training.clip_net import train_feature_net

    result = train_feature_net(args.config, args.out, args.steps, args.dataroot, args.version)
    print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=2, default=str))
    return 0


def judge_train_config(settings: list[str]):
    """`--set KEY=VALUE` pairs (YAML values) over `JudgeTrainConfig`'s defaults; an unknown key is a ValueError."""
    import dataclasses

    import yaml

    from reworld.training.judge import JudgeTrainConfig

    known = {f.name: f for f in dataclasses.fields(JudgeTrainConfig)}
    changes = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(known)}")
        parsed = yaml.safe_load(value)
        default = getattr(JudgeTrainConfig(), key)
        try:  # the default's type (YAML 1.1 reads 5e-4 as a string)
            changes[key] = tuple(parsed) if isinstance(default, tuple) else type(default)(parsed)
        except (TypeError, ValueError):
            raise ValueError(f"--set {item!r}: {key} must be a {type(default).__name__}") from None
    return dataclasses.replace(JudgeTrainConfig(), **changes)


def cmd_train_judge(args) -> int:
    from reworld.training.judge import fit_judge

    train = judge_train_config(args.set)
    result = fit_judge(args.config, args.out, args.steps, args.dataroot, args.version, args.seed, train=train,
                       train_dataroot=args.train_dataroot, val_dataroot=args.val_dataroot,
                       stop_dataroot=args.stop_dataroot)
    print(json.dumps(result["validation"], indent=2, default=float))
    return 0 if result["validation"]["passed"] else 1


def cmd_judge_card(args) -> int:
    from reworld.training.judge import write_judge_card

    if not (Path(args.judge) / "validation.json").is_file():
        raise SystemExit(f"{args.judge}: no validation.json (a folder written by train-judge)")
    print(write_judge_card(args.judge))
    return 0


def cmd_validate_judge(args) -> int:
    from reworld.config import load_config, replace
    from reworld.evaluation.judge import load_judge, load_judge_set, validate_judge

    config = load_config(args.config)
    changes = {"dataroot": resolve_dataroot(args.dataroot or config.data.dataroot)}
    if args.version:
        changes["version"] = args.version
    data = replace(config, data=changes).data
    report = validate_judge(load_judge(args.judge), load_judge_set(data, args.split))
    print(json.dumps(report, indent=2, default=float))
    return 0 if report["passed"] else 1


def cmd_ablate(args) -> int:
    from reworld.training.ablation import ablate_planner, ablate_video

    if args.what == "video":
        result = ablate_video(args.config, args.vae, args.seeds, args.steps, args.val_every, args.out, args.assets,
                              args.jobs)
    else:
        result = ablate_planner(args.config, args.video_run, args.seeds[0], args.steps, args.val_every, args.out,
                                args.assets, args.jobs, val_clips=args.val_clips)
    print(json.dumps(result, indent=2, default=float))
    return 0


def cmd_ship(args) -> int:
    from reworld.evaluation.evaluate import evaluate
    from reworld.ship import ship

    report = None
    if not args.no_eval:
        net = default_clip_net(args.run)
        report = evaluate(args.run, split="val", video_clips=args.video_clips, seed=0, feature_net=net,
                          judge=default_judge(args.run), judge_samples=args.judge_samples,
                          judge_every=args.judge_every).to_json()
        # a small, quick re-evaluation that tests/test_shipped.py repeats and compares within tolerance
        report["check"] = evaluate(args.run, split="val", limit=CHECK_CLIPS, video_clips=2, steps=10,
                                   seed=0).to_json()
    commands = Path(args.commands).read_text().strip().splitlines() if args.commands else []
    dest = ship(args.run, args.to, args.shared_vae, args.config, report, commands)
    print(f"shipped {args.run} -> {dest}")
    return 0


def cmd_reeval(args) -> int:
    """Re-evaluate a shipped checkpoint in place (e.g. after the scorer or the world changed)."""
    from reworld.evaluation.evaluate import evaluate
    from reworld.ship import reevaluate

    ckpt = args.checkpoint
    if not (Path(ckpt) / "MODEL_CARD.md").is_file():
        raise SystemExit(f"{ckpt}: not a shipped checkpoint (no MODEL_CARD.md)")
    report = evaluate(ckpt, split="val", video_clips=args.video_clips, seed=0, feature_net=default_clip_net(ckpt),
                      judge=default_judge(ckpt), judge_samples=args.judge_samples,
                      judge_every=args.judge_every).to_json()
    report["check"] = evaluate(ckpt, split="val", limit=CHECK_CLIPS, video_clips=2, steps=10, seed=0).to_json()
    reevaluate(ckpt, report)
    print(f"re-evaluated {ckpt}: " + ", ".join(f"{k}: PDMS {v['pdms']:.3f}" for k, v in report["planners"].items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reworld", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="write the synthetic driving world as a nuScenes-format root")
    s.add_argument("--out", required=True, help="output dataroot")
    s.add_argument("--scenes", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--version", default="v1.0-synth")
    s.add_argument("--height", type=int, default=128, help="camera image height [px]")
    s.add_argument("--width", type=int, default=256, help="camera image width [px]")
    s.add_argument("--generator", choices=("synth-1.1", "synth-1.0"), default="synth-1.1",
                   help="synth-1.1: nuScenes' sensor timing (LIDAR-timed samples 450-550 ms apart, the camera 35 ms "
                        "earlier in 50/100 ms steps, pitch and roll) and median islands; synth-1.0: uniform 12 Hz "
                        "camera frames, no islands (the world the shipped checkpoints were trained on)")
    s.add_argument("--workers", type=int, default=None,
                   help="processes rendering scenes (default: the usable cores, at most 8); the world is the same "
                        "bytes with any number")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("info", help="what a dataroot holds (scenes, clips, commands) and which checkpoints exist")
    s.add_argument("--config", default=str(DEFAULT_CONFIG))
    s.add_argument("--dataroot")
    s.add_argument("--version")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("export-scene", help="write a scene.json (ego, map, agents, expert) for the scorer")
    s.add_argument("--dataroot", required=True)
    s.add_argument("--version", required=True)
    s.add_argument("--sample", required=True, help="key-frame sample token")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export_scene)

    s = sub.add_parser("score", help="PDM score of a trajectory in a scene (prints JSON)")
    s.add_argument("--scene", required=True)
    s.add_argument("--trajectory", required=True)
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("train", help="train one stage: vae, video, action or joint")
    s.add_argument("--stage", required=True, choices=STAGES)
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True, help="run folder shared by all stages")
    s.add_argument("--max-steps", type=int, default=None)
    s.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    s.add_argument("--dataroot")
    s.add_argument("--version")
    s.add_argument("--vae", help="local diffusers folder of a pretrained LTX-Video VAE (stage video)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("prepare", help="encode the train split's clips to per-clip latent files (stages video, "
                                       "action and joint do it when they are missing)")
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True, help="run folder (with its VAE, or --vae)")
    s.add_argument("--dataroot")
    s.add_argument("--version")
    s.add_argument("--vae", help="local diffusers folder of a pretrained LTX-Video VAE")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("eval", help="planning (PDMS, L2, collisions) and video (PSNR, SSIM, Fréchet) figures")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--dataroot")
    s.add_argument("--version")
    s.add_argument("--split", default="val", choices=["train", "val", "all"])
    s.add_argument("--limit", type=int, default=None, help="evaluate the first N clips of the split (after --every)")
    s.add_argument("--every", type=int, default=1,
                   help="evaluate every K-th clip of the split: a cheaper evaluation spread over all its scenes")
    s.add_argument("--video-clips", type=int, default=32, help="clips whose futures are sampled (0 = none)")
    s.add_argument("--steps", type=int, default=20, help="video sampling steps")
    s.add_argument("--guidance", type=float, default=None, help="w (default: the config's, 1 without heads)")
    s.add_argument("--motion-guidance", type=float, default=None,
                   help="s_m of a Video DiT with video.motion_feedback (default: the config's train.motion_guidance)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--plan-batch", type=int, default=16, help="clips planned together (same plans, faster)")
    s.add_argument("--scorer", choices=["navsim", "spline"], default="navsim",
                   help="PDM score definition: NAVSIM v1.1's (tracker, rules, PDM-Closed), or this project's first, "
                        "untracked spline (to compare)")
    s.add_argument("--i3d", help="local I3D folder (save_pretrained) for a real FVD")
    s.add_argument("--feature-net", help="ReWorldVideoNet folder (default runs/v1/video_net)")
    s.add_argument("--judge", help="video judge folder (default: the shipped judge when it reads this checkpoint's "
                   "clips); '' for none")
    s.add_argument("--judge-samples", type=int, default=4, help="sampled futures per clip for the judge's figures")
    s.add_argument("--judge-every", type=int, default=1,
                   help="the judge reads every K-th of the evaluated clips (default 1: all of them)")
    s.add_argument("--json", help="write the report as JSON")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("train-video-net", help="train the offline Fréchet feature network (FD-ReWorldNet)")
    s.add_argument("--config", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, default=1500)
    s.add_argument("--dataroot")
    s.add_argument("--version")
    s.set_defaults(func=cmd_train_video_net)

    s = sub.add_parser("train-judge", help="train and validate the video judge (FD-judge, KID, physical readings)")
    s.add_argument("--config", default=str(JUDGE_CONFIG), help="its data section: the clips it reads")
    s.add_argument("--out", required=True)
    s.add_argument("--steps", type=int, default=3000)
    s.add_argument("--seed", type=int)
    s.add_argument("--train-dataroot", help="train on every clip of this world (training-only scenes, e.g. "
                   "`reworld synth --seed 1 --scenes 96`) instead of the train split of --dataroot")
    s.add_argument("--val-dataroot", help="validate on every clip of this world (held-out scenes, e.g. "
                   "`reworld synth --seed 2 --scenes 24`) instead of the val split of --dataroot")
    s.add_argument("--stop-dataroot", help="keep the checkpoint (every val_every steps) that reads this third world "
                   "best against the constant-velocity guess (its worst reading's error ratio), e.g. "
                   "`reworld synth --seed 3 --scenes 12`; without it, the last step's")
    s.add_argument("--dataroot")
    s.add_argument("--version")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a JudgeTrainConfig setting (YAML value), e.g. --set frame_stages=2 --set widths=[32,64,96,128]")
    s.set_defaults(func=cmd_train_judge)

    s = sub.add_parser("judge-card", help="(re)write a judge folder's MODEL_CARD.md from its validation.json")
    s.add_argument("--judge", required=True, help="a folder written by train-judge")
    s.set_defaults(func=cmd_judge_card)

    s = sub.add_parser("validate-judge", help="the video judge's validation on held-out clips (prints JSON)")
    s.add_argument("--judge", default=str(CHECKPOINTS / "judge"))
    s.add_argument("--config", default=str(JUDGE_CONFIG), help="its data section: the clips it reads")
    s.add_argument("--dataroot")
    s.add_argument("--version")
    s.add_argument("--split", default="val", choices=["val", "train", "all"])
    s.set_defaults(func=cmd_validate_judge)

    s = sub.add_parser("ablate", help="ablation study: video (IG on/off over seeds) or planner (4 loss arms)")
    s.add_argument("what", choices=["video", "planner"])
    s.add_argument("--config", default=str(DEFAULT_CONFIG))
    s.add_argument("--vae", help="trained VAE folder shared by every video arm (video)")
    s.add_argument("--video-run", help="run folder with a trained Video DiT (planner)")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    s.add_argument("--steps", type=int, default=800)
    s.add_argument("--val-every", type=int, default=100)
    s.add_argument("--out", default="runs/ablation")
    s.add_argument("--assets", default=str(ASSETS / "ablation"))
    s.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    s.add_argument("--val-clips", type=int, help="held-out clips each validation scores (default: the config's)")
    s.set_defaults(func=cmd_ablate)

    s = sub.add_parser("ship", help="copy a run folder into a shipped checkpoint with eval.json and a model card")
    s.add_argument("--run", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--config", required=True, help="the config the run was trained with (for the card)")
    s.add_argument("--shared-vae", help="sibling folder holding the VAE shared by several checkpoints")
    s.add_argument("--commands", help="text file with the exact commands that trained the run")
    s.add_argument("--video-clips", type=int, default=32)
    s.add_argument("--judge-samples", type=int, default=4, help="sampled futures per clip the video judge reads")
    s.add_argument("--judge-every", type=int, default=1, help="the judge reads every K-th val clip")
    s.add_argument("--no-eval", action="store_true")
    s.set_defaults(func=cmd_ship)

    s = sub.add_parser("reeval", help="re-evaluate a shipped checkpoint in place: eval.json and its card's figures")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--video-clips", type=int, default=32)
    s.add_argument("--judge-samples", type=int, default=4, help="sampled futures per clip the video judge reads")
    s.add_argument("--judge-every", type=int, default=1, help="the judge reads every K-th val clip")
    s.set_defaults(func=cmd_reeval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() + (ValueError,) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
