"""`python -m analysis velocity|embedding|ablation …`: every figure to HTML (offline), every number to JSON.

    python -m analysis velocity  --checkpoint RUN [--dataroot D --version V] [--split val --clips 4
                                 --steps 20 --guidance 1.4 --seed 0] --out DIR
    python -m analysis embedding --checkpoint VANILLA [--checkpoint REWORLD] [--label vanilla --label ReWorld]
                                 [--clips 32 --k 8 --block B --sigma 0 --n-components 2] --out DIR
    python -m analysis ablation  --csv curves.csv [--csv table.csv] [--target 'val/loss<=0.2'] --out DIR
    python -m analysis guidance-toy [--seeds 1 2 3 4 5 --steps N --samples 10000 --guidance 1.4] --out DIR
    python -m analysis guidance-toy-model [--arm ig --seed 1] --out DIR    (the app's toy: one trained arm)
    python -m analysis guidance-sweep --checkpoint RUN --judge JUDGE [--w 0 0.5 1 1.4 2 3 --every 3 --samples 1]
    python -m analysis steps-sweep --checkpoint RUN --judge JUDGE [--steps 4 6 8 10 20 --guidance W]
                                 --out DIR    (the judge's readings against w on held-out clips; the app's view;
                                 stopped, the same command resumes at the setting it was on)
    python -m analysis plan-scores --checkpoint RUN [--samples 8 --split val --plan-shift S] --out scores.csv
    python -m analysis study-planner --out runs/study-c3 [--arms … --seeds 0 1 2 --parallel 2]  (docs/study.md §4)
    python -m analysis judge-scores --checkpoint RUN --guidance 1.4 [--samples 4] --out scores.npz
    python -m analysis study-finetune --out runs/study-c1 [--seeds 0 1 2 --samples 4]  (docs/study.md §3)
    python -m analysis study-finetune --summary-only      (its summary again from the committed score files)
    python -m analysis study-convergence --out runs/study-c2 [--seeds 0 1 2 3 4]  (docs/study.md §2, amendment 8)
    python -m analysis screen-video --out runs/screen --vae VAE --arm A=CFG --arm B=CFG [--seeds 0 1 2]
                                 (world-model screens, several seeds per arm, paired by seed: docs/world4s.md)

HTML files load plotly.js from `plotly.min.js` beside them (written once per folder; no CDN, viewers
may be offline); `--self-contained` embeds it in every file instead. A user's mistake (a missing
checkpoint or CSV, a malformed file, too few points) prints one `error: …` line and exits 2.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from reworld.paths import JUDGE_CHECKPOINT, resolve_dataroot

from .output import write_figure, write_json

def _user_errors() -> tuple[type[BaseException], ...]:
    from reworld.models.layers import CheckpointError

    return (CheckpointError, FileNotFoundError, ValueError)  # DatasetError, ConfigError, … are ValueErrors


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pipeline(path: str, device: str | None, require_planner: bool = False):
    from reworld.pipelines import WorldActionPipeline

    return WorldActionPipeline.from_pretrained(path, device=device, require_planner=require_planner)


def load_clips(data_cfg, split: str, n: int, geometry: bool, dataroot: str | None = None,
               version: str | None = None) -> list:
    """`n` clips spread evenly over the split (index order: scenes by name, then time)."""
    from reworld.data.loader import NuScenesClips

    if n < 1:
        raise ValueError(f"--clips must be ≥ 1, got {n}")
    ds = NuScenesClips(data_cfg, split, geometry=geometry, dataroot=resolve_dataroot(dataroot or data_cfg.dataroot),
                       version=version)
    if len(ds) == 0:
        raise ValueError(f"no clips in split {split!r} of {ds.root}")
    idx = sorted({int(round(i)) for i in np.linspace(0, len(ds) - 1, min(n, len(ds)))})
    return [ds[i] for i in idx]


# --------------------------------------------------------------------------- velocity


def cmd_velocity(args) -> int:
    from PIL import Image

    from . import velocity as V

    out = Path(args.out)
    pipe = _pipeline(args.checkpoint, args.device)
    if args.guidance is None:
        args.guidance = pipe.default_guidance
    if not pipe.trained_heads and args.guidance != 1.0:
        what = "lists a head its run never trained (λ_ig = 0)" if pipe.heads else "has no intermediate head"
        raise SystemExit(f"error: {args.checkpoint} {what}: guidance w ≠ 1 is not defined for it; pass --guidance 1 "
                         "(the report then reads every block through the output layer, the lens)")
    clips = load_clips(pipe.clip_spec, args.split, args.clips, geometry=False, dataroot=args.dataroot,
                       version=args.version)
    _log(f"velocity: {len(clips)} clip(s), {args.steps} steps, w = {args.guidance:g} on {pipe.device}")
    t0 = time.perf_counter()
    reports = []
    for i, clip in enumerate(clips):
        reports.append(V.velocity_discrepancy(pipe, clip, args.steps, args.guidance, args.seed,
                                              decode_previews=i == 0))
        _log(f"  clip {i + 1}/{len(clips)} {clip.scene_name} {clip.sample_token[:8]}")
    summary = V.summarize(reports)
    first = reports[0]
    comparison = None
    if pipe.trained_heads:  # without a trained head there is no guided run to compare
        plain = V.velocity_discrepancy(pipe, clips[0], args.steps, 1.0, args.seed, decode_previews=False, lens=False)
        comparison = V.guidance_comparison(first, plain)
    kw = dict(self_contained=args.self_contained)
    files = [
        write_figure(V.cosine_heatmap(summary, "cosine"), out / "velocity_cosine_heatmap.html", **kw),
        write_figure(V.cosine_heatmap(summary, "diff_rms"), out / "velocity_diff_heatmap.html", **kw),
        write_figure(V.discrepancy_curves(summary), out / "velocity_curves.html", **kw),
        write_figure(V.preview_strip_figure(first), out / "velocity_previews.html", **kw),
    ]
    if comparison is not None:
        files.append(write_figure(V.guidance_figure(comparison), out / "velocity_guidance.html", **kw))
    strip = out / "velocity_previews.png"
    Image.fromarray(V.preview_strip(first)).save(strip)
    files.append(strip)
    numbers = {"checkpoint": str(Path(args.checkpoint).resolve()), "split": args.split, "device": str(pipe.device),
               "seconds": time.perf_counter() - t0, "summary": summary.to_dict(),
               "clips": [r.to_dict() for r in reports],
               "guidance_comparison": comparison.to_dict() if comparison is not None else None,
               "preview_columns": V.preview_columns(first)}
    files.append(write_json(numbers, out / "velocity.json"))
    _print_files(files)
    return 0


# --------------------------------------------------------------------------- guidance toy


def cmd_guidance_toy(args) -> int:
    import dataclasses

    from PIL import Image

    from . import guidance_toy as G

    if len(set(args.seeds)) < 2:
        raise ValueError("--seeds: at least 2 distinct seeds (the intervals are over seeds)")
    if args.samples < 100:
        raise ValueError(f"--samples must be ≥ 100, got {args.samples}")
    cfg = _toy_config(args)
    out = Path(args.out)
    seeds = list(dict.fromkeys(args.seeds))
    _log(f"guidance-toy: {len(seeds)} seeds × 3 arms, {cfg.steps} steps each, w* = {cfg.guidance:g}")
    t0 = time.perf_counter()
    rows, shown, density = G.run_study(seeds, cfg, args.samples, log=_log)
    summary = G.summarize(rows, seeds)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "guidance_toy.png"
    Image.fromarray(G.samples_image(density, shown)).save(png)
    files = [G.write_csv(rows, out / "guidance_toy.csv"), png,
             write_figure(G.outlier_figure(summary, rows, seeds), out / "guidance_toy.html",
                          self_contained=args.self_contained)]
    numbers = {"seeds": seeds, "config": dataclasses.asdict(cfg), "samples": args.samples,
               "seconds": time.perf_counter() - t0, **summary}
    files.append(write_json(numbers, out / "guidance_toy.json"))
    _print_files(files)
    return 0


def _toy_config(args):
    """The toy's `ToyConfig` from `--guidance` and `--steps` (default: ToyConfig's steps)."""
    import dataclasses

    from reworld.guidance_toy import ToyConfig

    cfg = ToyConfig(guidance=args.guidance)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be ≥ 1, got {args.steps}")
        cfg = dataclasses.replace(cfg, steps=args.steps)
    return cfg


def cmd_guidance_toy_model(args) -> int:
    """One arm of the toy study trained as the study trains it, saved as a model folder (the app's toy view)."""
    from reworld.guidance_toy import ARMS, save_toy, train_toy

    if args.arm not in ARMS:
        raise ValueError(f"--arm must be one of {ARMS}, got {args.arm!r}")
    cfg = _toy_config(args)
    t0 = time.perf_counter()
    model = train_toy(args.arm, args.seed, cfg)
    save_toy(model, args.out, args.arm, args.seed, cfg)
    _log(f"guidance-toy-model: {args.arm}, seed {args.seed}, {cfg.steps} steps in {time.perf_counter() - t0:.0f} s")
    _print_files([Path(args.out)])
    return 0


# --------------------------------------------------------------------------- futures


def clips_of_scenes(data_cfg, split: str, n: int, dataroot: str | None = None, version: str | None = None) -> list:
    """One clip from each of `n` scenes spread over the split (each scene's middle clip)."""
    from reworld.data.loader import NuScenesClips

    if n < 1:
        raise ValueError(f"--scenes must be ≥ 1, got {n}")
    ds = NuScenesClips(data_cfg, split, geometry=False, dataroot=resolve_dataroot(dataroot or data_cfg.dataroot),
                       version=version)
    names = sorted({s.scene_name for s in ds.samples})
    if not names:
        raise ValueError(f"no clips in split {split!r} of {ds.root}")
    picked = [names[int(round(i))] for i in np.linspace(0, len(names) - 1, min(n, len(names)))]
    out = []
    for name in dict.fromkeys(picked):
        rows = [i for i, s in enumerate(ds.samples) if s.scene_name == name]
        out.append(ds[rows[len(rows) // 2]])
    return out


def cmd_futures(args) -> int:
    from PIL import Image

    from .futures import futures_grid

    out = Path(args.out)
    pipe = _pipeline(args.checkpoint, args.device)
    clips = clips_of_scenes(pipe.clip_spec, args.split, args.scenes, args.dataroot, args.version)
    _log(f"futures: {len(clips)} scene(s), horizons {args.horizons} s, {args.steps} steps on {pipe.device}")
    grid = futures_grid(pipe, clips, args.horizons, args.steps, args.guidance, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "futures.png"
    Image.fromarray(grid.image).save(png)
    numbers = {"checkpoint": str(Path(args.checkpoint).resolve()), "split": args.split, "steps": args.steps,
               "seed": args.seed, **grid.to_dict()}
    _print_files([png, write_json(numbers, out / "futures.json")])
    return 0


def _sweep_inputs(args):
    """A sampler sweep's pipeline, judge, dataset, clip indices and name from its arguments."""
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.judge import load_judge

    if args.every < 1:
        raise ValueError(f"--every must be ≥ 1, got {args.every}")
    pipe = _pipeline(args.checkpoint, args.device)
    judge = load_judge(args.judge).to(pipe.device)
    data = pipe.clip_spec
    ds = NuScenesClips(data, args.split, geometry=False,
                       dataroot=resolve_dataroot(args.dataroot or data.dataroot), version=args.version)
    indices = list(range(0, len(ds), args.every))[:args.limit]
    if not indices:
        raise ValueError(f"no clips in split {args.split!r} of {ds.root}")
    return pipe, judge, ds, indices, args.name or Path(args.checkpoint).resolve().name


def _sweep_keep(args, kind: str, name: str) -> Path:
    """Where a sweep keeps each setting's readings until its files are written (a hidden folder in --out): the same
    command run again after a stop resumes there."""
    keep = Path(args.out) / f".{kind}_{name}.partial"
    if any(keep.glob("*.safetensors")):
        _log(f"resuming: settings already read are in {keep}")
    return keep


def _write_sweep(args, sweep: dict, kind: str, name: str, command: str, t0: float, frame_rate: float) -> None:
    from PIL import Image

    from .guidance_sweep import sweep_figure, sweep_frames

    frames, truth = sweep.pop("_frames"), sweep.pop("_truth")
    sweep.update(name=name, split=args.split, every=args.every, judge=str(args.judge),
                 command=(command + f" --split {args.split} --every {args.every}"
                          + (f" --limit {args.limit}" if args.limit else "")
                          + f" --samples {args.samples} --seed {args.seed} --out {args.out}"),
                 seconds_taken=round(time.perf_counter() - t0, 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{kind}_{name}.png"
    Image.fromarray(sweep_frames(truth, frames, frame_rate)).save(png)
    files = [write_json(sweep, out / f"{kind}_{name}.json"), png]
    if args.html:
        files.append(write_figure(sweep_figure(sweep), out / f"{kind}_{name}.html", args.self_contained))
    shutil.rmtree(out / f".{kind}_{name}.partial", ignore_errors=True)  # written: what it kept is in the JSON
    _print_files(files)


def cmd_guidance_sweep(args) -> int:
    from .guidance_sweep import check_ws, guidance_sweep

    ws = check_ws(args.w)
    pipe, judge, ds, indices, name = _sweep_inputs(args)
    _log(f"guidance sweep of {name}: w = {ws} on {len(indices)} {args.split} clips × {args.samples}, "
         f"{args.steps} steps on {pipe.device}")
    t0 = time.perf_counter()
    keep = _sweep_keep(args, "guidance_sweep", name)
    sweep = guidance_sweep(pipe, ds, indices, judge, ws, args.steps, args.samples, args.seed, args.reference, _log,
                           keep)
    _write_sweep(args, sweep, "guidance_sweep", name,
                 f"python -m analysis guidance-sweep --checkpoint {args.checkpoint} --judge {args.judge} "
                 f"--w {' '.join(f'{w:g}' for w in ws)} --reference {args.reference:g} --steps {args.steps}",
                 t0, ds.cfg.frame_rate)
    return 0


def cmd_steps_sweep(args) -> int:
    from .guidance_sweep import check_steps_list, steps_sweep

    steps_list = check_steps_list(args.steps)
    pipe, judge, ds, indices, name = _sweep_inputs(args)
    w = pipe.default_guidance if args.guidance is None else args.guidance
    _log(f"steps sweep of {name}: {steps_list} steps at w = {w:g} on {len(indices)} {args.split} clips × "
         f"{args.samples} on {pipe.device}")
    t0 = time.perf_counter()
    keep = _sweep_keep(args, "steps_sweep", name)
    sweep = steps_sweep(pipe, ds, indices, judge, steps_list, w, args.samples, args.seed, args.reference, _log, keep)
    _write_sweep(args, sweep, "steps_sweep", name,
                 f"python -m analysis steps-sweep --checkpoint {args.checkpoint} --judge {args.judge} "
                 f"--steps {' '.join(map(str, steps_list))} --guidance {w:g} --reference {sweep['reference_steps']}",
                 t0, ds.cfg.frame_rate)
    f = sweep["fewest_steps"]
    print(f"fewest steps that read as {sweep['reference_steps']} ({f['rule']}): {f['steps']}")
    return 0


def cmd_plan_scores(args) -> int:
    from dataclasses import replace

    from reworld.data.loader import NuScenesClips

    from .study_planner import plan_scores, write_scores

    pipe = _pipeline(args.checkpoint, args.device, require_planner=True)
    if args.plan_shift is not None:  # the planner's σ grid only: plan-scores never samples a future
        if not args.plan_shift > 0:
            raise ValueError(f"--plan-shift must be > 0, got {args.plan_shift}")
        from reworld.config import replace as replace_config

        pipe.config = replace_config(pipe.config, loss={"shift": args.plan_shift})
    data = replace(pipe.config.data, dataroot=resolve_dataroot(args.dataroot or pipe.config.data.dataroot),
                   map_lanes=args.scorer == "navsim", **({"version": args.version} if args.version else {}))
    ds = NuScenesClips(data, split=args.split, geometry=True)
    if len(ds) == 0:
        raise ValueError(f"no {args.split} clips in {data.dataroot}")
    _log(f"plan scores of {args.checkpoint}: {len(ds)} {args.split} clips × {args.samples} plans, {args.scorer} scorer")
    t0 = time.perf_counter()
    rows = plan_scores(pipe, ds, args.samples, scorer=args.scorer, log=_log)
    path = write_scores(rows, Path(args.out))
    pdms = np.array([r["pdms"] for r in rows])
    _log(f"mean PDMS {pdms.mean():.4f} over {len(rows)} plans ({time.perf_counter() - t0:.0f} s)")
    _print_files([path])
    return 0


def cmd_judge_scores(args) -> int:
    from dataclasses import replace

    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.judge import load_judge
    from reworld.paths import default_judge

    from .study_finetune import judge_scores, write_npz

    judge_dir = args.judge or default_judge(args.checkpoint)
    if not judge_dir:
        raise FileNotFoundError(f"no video judge reads the clips of {args.checkpoint}; pass --judge")
    pipe = _pipeline(args.checkpoint, args.device)
    data = replace(pipe.clip_spec, dataroot=resolve_dataroot(args.dataroot or pipe.clip_spec.dataroot),
                   **({"version": args.version} if args.version else {}))
    ds = NuScenesClips(data, split=args.split, geometry=False)
    if len(ds) == 0:
        raise ValueError(f"no {args.split} clips in {data.dataroot}")
    if args.samples < 1:
        raise ValueError(f"--samples must be ≥ 1, got {args.samples}")
    _log(f"judge scores of {args.checkpoint}: {len(ds)} {args.split} clips × {args.samples} futures at w = "
         f"{args.guidance:g}, {args.steps} steps")
    t0 = time.perf_counter()
    arrays = judge_scores(pipe, ds, load_judge(judge_dir).to(pipe.device), args.samples, args.guidance, args.steps,
                          args.seed)
    path = write_npz(arrays, Path(args.out))
    _log(f"mean position error {arrays['position_m'].mean():.3f} m ({time.perf_counter() - t0:.0f} s)")
    _print_files([path])
    return 0


def cmd_study_finetune(args) -> int:
    from .study_finetune import BOOTSTRAP, SEEDS, rewrite_summary, run_study

    if args.samples < 1:
        raise ValueError("--samples must be ≥ 1")
    seeds = args.seeds if args.seeds is not None else list(SEEDS)
    if args.summary_only:
        summary = rewrite_summary(Path(args.results), seeds, args.resamples or BOOTSTRAP)
        if not summary:
            raise FileNotFoundError(f"{Path(args.results) / 'finetune_study' / 'scores'}: no score files to summarise")
    elif args.out is None:
        raise ValueError("--out is required (unless --summary-only)")
    else:
        summary = run_study(Path(args.out), Path(args.checkpoint), Path(args.config), seeds, args.samples,
                            Path(args.results), args.steps, args.resamples or BOOTSTRAP, args.judge,
                            args.sample_steps, _log)
    for name, c in summary.get("comparisons", {}).items():
        print(f"{name}: {100 * c['mean']:+.1f} % fd_judge, bootstrap over clips [{100 * c['boot_lo']:+.1f}, "
              f"{100 * c['boot_hi']:+.1f}] %, t over seeds [{100 * c['t_lo']:+.1f}, {100 * c['t_hi']:+.1f}] %: "
              f"{c['verdict']}")
        pos = c.get("position", {})
        cells = [f"{k} {v['mean']:+.2f} [{v['boot_lo']:+.2f}, {v['boot_hi']:+.2f}] (t [{v['t_lo']:+.2f}, "
                 f"{v['t_hi']:+.2f}])" for k, v in pos.items() if k != "unit"]
        if cells:
            print("  position error, arm − reference [m]: " + "; ".join(cells))
    return 0


def cmd_screen_video(args) -> int:
    from . import screen as SV

    if args.every < 1 or args.judge_samples < 1:
        raise ValueError("--every and --judge-samples must be ≥ 1")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds names a seed twice: {args.seeds}")
    doc = SV.run_screen(Path(args.out), SV.parse_arms(args.arm), args.seeds, Path(args.vae), args.judge, args.every,
                        args.judge_samples, _log, Path(args.evals) if args.evals else None)
    for arm, c in doc["compared"].items():
        d = c["b_minus_a_position_mean_m"]
        lo, hi = d.get("t_over_seeds", d.get("t"))
        print(f"{arm} − {doc['control']} over {len(c['seeds'])} seed(s): mean position error {d['mean']:+.3f} m, "
              f"t interval [{lo:+.3f}, {hi:+.3f}]")
    print(f"wrote {Path(args.out) / 'screen.json'}")
    return 0


def cmd_study_convergence(args) -> int:
    from . import study_convergence as SC

    checkpoints = tuple(args.checkpoints) if args.checkpoints else SC.CHECKPOINTS
    if len(checkpoints) < 2 or min(checkpoints) < 1:
        raise ValueError("--checkpoints needs at least two steps ≥ 1")
    if args.samples < 1 or args.sample_steps < 1:
        raise ValueError("--samples and --sample-steps must be ≥ 1")
    summary = SC.run_study(Path(args.out), Path(args.checkpoint), Path(args.config),
                           args.seeds if args.seeds is not None else list(SC.SEEDS), Path(args.results),
                           args.samples, args.sample_steps, checkpoints, args.resamples or SC.BOOTSTRAP, args.judge,
                           _log, summary_only=args.summary_only)
    print(f"vanilla's final step S_v = {summary['final_step']}")
    for name, c in summary.get("speed_ups", {}).items():
        if "median" in c:
            print(f"{name}: speed-up median {c['median']:.2f}×, bootstrap over seeds [{c['boot_lo']:.2f}, "
                  f"{c['boot_hi']:.2f}], t over seeds [{c['t_lo']:.2f}, {c['t_hi']:.2f}]: {c['verdict']}")
    return 0


def noise_terms_line(row: dict) -> str:
    """One point of `study-convergence-noise`: what moves its fd_judge (amendment 21), and how each part changed."""
    def fmt(x: dict, f: str = ".2f", unit: str = "") -> str:
        return f"{x['value']:{f}}{unit} [{x['interval'][0]:{f}}, {x['interval'][1]:{f}}]"

    t = row["terms"]
    line = (f"means' term {fmt(t['mean'])}, covariances' {fmt(t['covariance'])}, paired distance "
            f"{fmt(t['paired_distance'])}, spread {t['spread']['generated']:.1f} (real {t['spread']['real']:.1f})")
    if "speed_bias_mps" in row:
        line += f", speed − real {fmt(row['speed_bias_mps'], '+.2f', ' m/s')}"
    if "change_from_previous" in row:
        c = row["change_from_previous"]
        line += (f"; change: means' {fmt(c['terms']['mean'], '+.2f')}, covariances' "
                 f"{fmt(c['terms']['covariance'], '+.2f')}, paired {fmt(c['terms']['paired_distance'], '+.3f')}")
        if "speed_bias_mps" in c:
            line += f", speed {fmt(c['speed_bias_mps'], '+.2f', ' m/s')}"
    return line


def cmd_study_convergence_noise(args) -> int:
    from . import study_convergence as SC
    from .output import write_json

    if args.resamples is not None and args.resamples < 100:
        raise ValueError("--resamples must be ≥ 100")
    judge = None if args.judge.lower() == "none" else args.judge
    res = SC.clip_noise(Path(args.results), args.seeds if args.seeds is not None else list(SC.SEEDS),
                        resamples=args.resamples or SC.NOISE_RESAMPLES, judge=judge)
    if not res["seeds"]:
        raise FileNotFoundError(f"{args.results}: no score files of the convergence study (convergence_study/scores)")
    path = write_json(res, Path(args.json) if args.json else Path(args.results) / "convergence_noise.json")
    for seed, s in res["seeds"].items():
        for name, curve in s["curves"].items():
            for k, row in curve.items():
                line = f"seed {seed} {name:>14} @{k:>5}: fd_judge {row['fd_judge']:.2f} [{row['interval'][0]:.2f}, " \
                       f"{row['interval'][1]:.2f}]"
                for key, text, fmt in (("change_from_previous", "  change ", "+.2f"),
                                       ("minus_vanilla", "  − vanilla ", "+.2f"),
                                       ("position_m", "  | position ", ".2f"),
                                       ("position_minus_vanilla", "  − vanilla ", "+.2f")):
                    if key in row:
                        v, (lo, hi) = row[key]["value"], row[key]["interval"]
                        unit = " m" if key == "position_m" else ""
                        line += f"{text}{v:{fmt}}{unit} [{lo:{fmt}}, {hi:{fmt}}]"
                print(line)
                print("    " + noise_terms_line(row))
    print(f"wrote {path}")
    return 0


def cmd_study_planner(args) -> int:
    from .study_planner import SEEDS, run_study

    if args.parallel < 1 or args.samples < 1:
        raise ValueError("--parallel and --samples must be ≥ 1")
    max_steps = {k: v for k, v in (("action", args.action_steps), ("joint", args.joint_steps)) if v}
    if args.summary_only:
        from .study_planner import check_arms, summary_extra, write_summary

        seeds = args.seeds if args.seeds is not None else list(SEEDS)
        arms = check_arms(args.arms)
        summary = write_summary(Path(args.out), Path(args.results), arms, seeds,
                                summary_extra(Path(args.out), Path(args.checkpoint), Path(args.config), arms, seeds,
                                              args.samples, Path(args.results)))
        if not summary:
            raise FileNotFoundError(f"no scores in {Path(args.out) / 'scores'} yet")
    else:
        summary = run_study(Path(args.out), Path(args.checkpoint), Path(args.config), args.arms,
                            args.seeds if args.seeds is not None else list(SEEDS), args.samples, args.parallel,
                            Path(args.results), max_steps or None, _log)
    for name, c in summary.get("comparisons", {}).items():
        print(f"{name}: {c['mean']:+.2f} PDMS points, bootstrap over clips [{c['boot_lo']:+.2f}, {c['boot_hi']:+.2f}], "
              f"t over seeds [{c['t_lo']:+.2f}, {c['t_hi']:+.2f}]: {c['verdict']}")
    return 0


# --------------------------------------------------------------------------- embedding


def cmd_embedding(args) -> int:
    from . import representations as R

    out = Path(args.out)
    labels = args.label or []
    if labels and len(labels) != len(args.checkpoint):
        raise ValueError(f"give one --label per --checkpoint ({len(args.checkpoint)}), got {len(labels)}")
    if not labels:
        labels = [Path(c).resolve().name for c in args.checkpoint]
        if len(set(labels)) != len(labels):
            labels = [f"{name} ({i + 1})" for i, name in enumerate(labels)]
    for path in args.checkpoint:  # fail before any slow work
        if not Path(path).is_dir():
            from reworld.models.layers import CheckpointError

            raise CheckpointError(f"checkpoint folder not found: {path}")
    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "cache"
    clips, clips_data = None, None
    files, numbers, separations = [], {"checkpoints": {}}, {}
    for label, path in zip(labels, args.checkpoint):
        t0 = time.perf_counter()
        pipe = _pipeline(path, args.device, require_planner=True)
        if clips is None or pipe.clip_spec != clips_data:  # same clips for every checkpoint when they fit
            clips = load_clips(pipe.clip_spec, args.split, args.clips, geometry=True, dataroot=args.dataroot,
                               version=args.version)
            clips_data = pipe.clip_spec
        _log(f"embedding [{label}]: features of {len(clips)} clip(s) × (expert + ≤{args.k} hard negatives)")
        fs = R.collect_features(pipe, clips, k=args.k, block=args.block, sigma=args.sigma, seed=args.seed,
                                callback=lambda i, n: _log(f"  clip {i}/{n}"))
        del pipe
        slug = _slug(label)
        fs.save(out / f"features_{slug}")
        key = f"{Path(path).resolve()}|block={args.block}|sigma={args.sigma}|split={args.split}"
        coords = R.umap_embedding(fs.feats, n_components=args.n_components, random_state=args.seed,
                                  n_neighbors=args.n_neighbors, cache_dir=cache_dir, cache_key=key)
        sep = R.separation_metrics(fs.feats, fs.labels, folds=args.folds, seed=args.seed)
        separations[label] = sep
        block = args.block if args.block is not None else "align"
        title = f"UMAP of Action DiT features — {label} (block {block}, σ = {args.sigma:g}; " \
                f"probe AUC {sep.probe_auc:.3f})"
        files.append(write_figure(R.embedding_figure(coords, fs.labels, fs.meta, title),
                                  out / f"embedding_{slug}.html", self_contained=args.self_contained))
        numbers["checkpoints"][label] = {
            "path": str(Path(path).resolve()), "points": len(fs.labels), "counts": fs.counts,
            "feature_dim": int(fs.feats.shape[1]), "separation": sep.to_dict(), "seconds": time.perf_counter() - t0,
            "umap": {"n_components": args.n_components, "n_neighbors": args.n_neighbors, "random_state": args.seed,
                     "coords": coords},
        }
    numbers.update(split=args.split, clips=len(clips), k=args.k, block=args.block, sigma=args.sigma, seed=args.seed)
    files.append(write_figure(R.separation_figure(separations), out / "separation.html",
                              self_contained=args.self_contained))
    files.append(write_json(numbers, out / "embedding.json"))
    _print_files(files)
    return 0


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "checkpoint"


# --------------------------------------------------------------------------- ablation


def cmd_ablation(args) -> int:
    from . import ablation as A

    out = Path(args.out)
    targets: dict[str, tuple[float, str]] = {}
    for text in args.target or []:
        name, value, mode = A.parse_target(text)
        targets[name] = (value, mode)
    stems = [Path(p).stem for p in args.csv]
    names = [stem if stems.count(stem) == 1 else f"{stem}_{i}" for i, stem in enumerate(stems)]
    loaded = [A.read_ablation_csv(path) for path in args.csv]  # every file checked before anything is written
    curve_metrics = {m for kind, df in loaded if kind == "curves" for m in df["metric"]}
    missing = sorted(set(targets) - curve_metrics)
    if missing:
        raise ValueError(f"target metric(s) {missing} are in none of the curve CSVs")
    files, numbers = [], {"files": {}}
    for path, name, (kind, df) in zip(args.csv, names, loaded):
        if kind == "curves":
            stats = A.curve_stats(df, {m: t for m, t in targets.items() if m in set(df["metric"])}, args.smooth)
            fig = A.curves_figure(df, args.metric or None, args.smooth, targets, log_y=args.log_y)
            files.append(write_figure(fig, out / f"{name}_curves.html", self_contained=args.self_contained))
            numbers["files"][name] = {"path": str(path), "kind": kind, "runs": sorted(df["run"].unique()),
                                      "metrics": sorted(df["metric"].unique()), "stats": stats}
        else:
            files.append(write_figure(A.table_figure(df, args.metric or None), out / f"{name}_table.html",
                                      self_contained=args.self_contained))
            numbers["files"][name] = {"path": str(path), "kind": kind, "summary": A.table_summary(df)}
    numbers["targets"] = {m: {"value": v, "mode": mode} for m, (v, mode) in targets.items()}
    numbers["smooth"] = args.smooth
    files.append(write_json(numbers, out / "ablation.json"))
    _print_files(files)
    return 0


def _print_files(files) -> None:
    for f in files:
        print(f)


# --------------------------------------------------------------------------- parser


def _sweep_arguments(s, per: str) -> None:
    """The arguments a sampler sweep shares: its clips, samples, seed, names and outputs."""
    s.add_argument("--dataroot", help="nuScenes-format root (default: the checkpoint's config)")
    s.add_argument("--version", help="table folder, e.g. v1.0-synth or v1.0-mini")
    s.add_argument("--split", default="val", choices=["train", "val", "all"])
    s.add_argument("--every", type=int, default=3, help="every K-th clip of the split (as eval --every)")
    s.add_argument("--limit", type=int, default=None, help="at most this many clips (after --every)")
    s.add_argument("--samples", type=int, default=1, help=f"sampled futures per clip and {per}")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", default=None, help="file name part (default: the checkpoint folder's name)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--html", action="store_true", help="also write the figure as HTML")
    s.add_argument("--self-contained", action="store_true", help="embed plotly.js in the HTML file")
    s.add_argument("--out", required=True, help="output folder (created)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(s, clips: int):
        s.add_argument("--dataroot", help="nuScenes-format root (default: the checkpoint's config)")
        s.add_argument("--version", help="table folder, e.g. v1.0-synth or v1.0-mini")
        s.add_argument("--split", default="val", choices=["train", "val", "all"])
        s.add_argument("--clips", type=int, default=clips, help="clips spread evenly over the split")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        s.add_argument("--out", required=True, help="output folder (created)")
        s.add_argument("--self-contained", action="store_true", help="embed plotly.js in every HTML file")

    s = sub.add_parser("velocity", help="intermediate vs final velocity per step and block, x0 previews, guidance")
    s.add_argument("--checkpoint", required=True, help="run folder or shipped checkpoint")
    common(s, clips=4)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--guidance", type=float, default=None,
                   help="w of intermediate-supervised guidance (default: the checkpoint's own, 1 without a trained "
                        "head)")
    s.set_defaults(func=cmd_velocity)

    s = sub.add_parser("futures", help="generated vs true futures at native resolution, several horizons (PNG)")
    s.add_argument("--checkpoint", required=True, help="run folder or shipped checkpoint")
    s.add_argument("--dataroot", help="nuScenes-format root (default: the checkpoint's config)")
    s.add_argument("--version", help="table folder, e.g. v1.0-synth or v1.0-mini")
    s.add_argument("--split", default="val", choices=["train", "val", "all"])
    s.add_argument("--scenes", type=int, default=3, help="one clip from each of this many scenes")
    s.add_argument("--horizons", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="[s] after t = 0")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--guidance", type=float, default=None, help="w (default: the checkpoint's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--out", required=True, help="output folder (created)")
    s.set_defaults(func=cmd_futures)

    s = sub.add_parser("guidance-toy", help="intermediate guidance on a known 2-D density: arms × seeds, intervals "
                                             "(docs/study.md §1)")
    s.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    s.add_argument("--steps", type=int, default=None, help="training steps per arm (default: ToyConfig's)")
    s.add_argument("--samples", type=int, default=10_000, help="samples per arm and seed")
    s.add_argument("--guidance", type=float, default=1.4, help="the pre-registered w* of IG sampling")
    s.add_argument("--out", required=True, help="output folder (created)")
    s.add_argument("--self-contained", action="store_true", help="embed plotly.js in every HTML file")
    s.set_defaults(func=cmd_guidance_toy)

    s = sub.add_parser("guidance-toy-model", help="train one arm of the toy study and save it (the app's toy view)")
    s.add_argument("--arm", default="ig", help="vanilla, ig or ig_sg (default ig)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--steps", type=int, default=None, help="training steps (default: ToyConfig's)")
    s.add_argument("--guidance", type=float, default=1.4, help="w of the ig_sg arm's training target")
    s.add_argument("--out", required=True, help="model folder (written atomically)")
    s.set_defaults(func=cmd_guidance_toy_model)

    s = sub.add_parser("guidance-sweep", help="the video judge's readings of a world model's futures against the "
                       "guidance w, on held-out clips with the same noise at every w (JSON, frame grid PNG)")
    s.add_argument("--checkpoint", required=True, help="run folder or shipped checkpoint with a trained head")
    s.add_argument("--judge", required=True, help="video judge folder (e.g. assets/checkpoints/judge)")
    s.add_argument("--w", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.4, 2.0, 3.0], help="guidance values")
    s.add_argument("--reference", type=float, default=1.0, help="the w every other is paired with (default 1)")
    s.add_argument("--steps", type=int, default=20)
    _sweep_arguments(s, "w")
    s.set_defaults(func=cmd_guidance_sweep)

    s = sub.add_parser("steps-sweep", help="the video judge's readings of a world model's futures against the "
                       "sampler's step count, on held-out clips with the same noise at every count (JSON, frame grid "
                       "PNG, the registered rule's fewest steps; docs/sampler-steps.md)")
    s.add_argument("--checkpoint", required=True, help="run folder or shipped checkpoint")
    s.add_argument("--judge", required=True, help="video judge folder (e.g. assets/checkpoints/judge)")
    s.add_argument("--steps", type=int, nargs="+", default=[4, 6, 8, 10, 20], help="step counts (the registered ones)")
    s.add_argument("--guidance", type=float, default=None, help="w (default: the checkpoint's own)")
    s.add_argument("--reference", type=int, default=None, help="the count every other is paired with (default: "
                   "the most)")
    _sweep_arguments(s, "step count")
    s.set_defaults(func=cmd_steps_sweep)

    s = sub.add_parser("plan-scores", help="every clip of a split planned N times (seeds 0 … N−1) and scored by the "
                       "PDM score: one CSV row per clip and plan")
    s.add_argument("--checkpoint", required=True, help="run folder or shipped checkpoint with a planner")
    s.add_argument("--dataroot", help="nuScenes-format root (default: the checkpoint's config)")
    s.add_argument("--version", help="table folder, e.g. v1.0-synth or v1.0-mini")
    s.add_argument("--split", default="val", choices=["train", "val", "all"])
    s.add_argument("--samples", type=int, default=8, help="plans per clip")
    s.add_argument("--scorer", default="navsim", choices=["navsim", "spline"])
    s.add_argument("--plan-shift", type=float, default=None,
                   help="time shift of the planner's σ grid (default: the checkpoint's loss.shift, the one it was "
                   "trained with; 1: the unshifted grid every planner sampled on before 2026-12-04)")
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--out", required=True, help="CSV file (written atomically)")
    s.set_defaults(func=cmd_plan_scores)

    s = sub.add_parser("judge-scores", help="every clip of a split × N sampled futures at guidance w, read by the "
                       "video judge: embeddings and position errors (NPZ), the real clips' embeddings")
    s.add_argument("--checkpoint", required=True, help="run folder or shipped checkpoint")
    s.add_argument("--judge", default=None, help="video judge folder (default: the shipped one, when it reads these "
                                                 "clips)")
    s.add_argument("--guidance", type=float, required=True, help="w")
    s.add_argument("--samples", type=int, default=4, help="sampled futures per clip")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dataroot", help="nuScenes-format root (default: the checkpoint's config)")
    s.add_argument("--version", help="table folder, e.g. v1.0-synth or v1.0-mini")
    s.add_argument("--split", default="val", choices=["train", "val", "all"])
    s.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    s.add_argument("--out", required=True, help="NPZ file (written atomically)")
    s.set_defaults(func=cmd_judge_scores)

    s = sub.add_parser("study-finetune", help="the claims study's fine-tuning part (docs/study.md §3): the vanilla "
                       "Video DiT fine-tuned with λ_ig = 0 and 0.5, judged, summarised with intervals; resumable")
    s.add_argument("--out", default=None, help="study folder (run folders, shared latents, scores, logs)")
    s.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the registered 0 1 2")
    s.add_argument("--samples", type=int, default=4, help="sampled futures per clip")
    s.add_argument("--summary-only", action="store_true",
                   help="write the summary again from the ledger's score files (no run), keeping how they were made")
    s.add_argument("--checkpoint", default="assets/checkpoints/vanilla", help="whose Video DiT is fine-tuned")
    s.add_argument("--config", default="configs/world4s-vanilla.yaml", help="the config it was trained with")
    s.add_argument("--results", default="assets/ablation", help="folder of the summary files")
    s.add_argument("--steps", type=int, default=None, help="override the fine-tuning steps (tests)")
    s.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: the registered 10 000)")
    s.add_argument("--judge", default=None, help="video judge folder (default: the shipped one)")
    s.add_argument("--sample-steps", type=int, default=20, help="Euler steps of the sampled futures (registered: 20)")
    s.set_defaults(func=cmd_study_finetune)

    s = sub.add_parser("study-convergence", help="the claims study's convergence part (docs/study.md §2, amendment "
                       "8): stage 1 from scratch with and without IG, judged at log-scale checkpoints; resumable")
    s.add_argument("--out", required=True, help="study folder (run folders, shared latents, logs)")
    s.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="default: the registered 0 1 2 3 4 (and 5 6 7, once, if §2's power rule fires on them)")
    s.add_argument("--checkpoint", default="assets/checkpoints/vanilla", help="whose VAE the runs use")
    s.add_argument("--config", default="configs/study-c2.yaml",
                   help="the config the arms start from (C2's, frozen: amendment 19; the ledger refuses another)")
    s.add_argument("--results", default="assets/ablation", help="folder of the ledger and the summary files")
    s.add_argument("--checkpoints", type=int, nargs="+", default=None,
                   help="steps to judge at (default: the registered 250 500 1000 2000 4000; tests use fewer)")
    s.add_argument("--samples", type=int, default=2, help="sampled futures per val clip (registered: 2)")
    s.add_argument("--sample-steps", type=int, default=8, help="Euler steps of the futures (registered: 8)")
    s.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: the registered 10 000)")
    s.add_argument("--judge", default=None, help="video judge folder (default: the shipped one)")
    s.add_argument("--summary-only", action="store_true",
                   help="train and judge nothing: rewrite convergence_study.{csv,json} from the ledger's score files")
    s.set_defaults(func=cmd_study_convergence)

    s = sub.add_parser("study-convergence-noise", help="C2's curves with their clip-sampling noise: paired bootstrap "
                       "over the val clips, each change and arm − vanilla (a diagnostic, from the ledger)")
    s.add_argument("--results", default="assets/ablation", help="folder of the ledger (convergence_study/scores)")
    s.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the registered 0 1 2 3 4")
    s.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000)")
    s.add_argument("--json", default=None, help="write the diagnostic here (default: RESULTS/convergence_noise.json)")
    s.add_argument("--judge", default=str(JUDGE_CHECKPOINT),
                   help="the judge that scored the ledger, for its speed reading of the futures (default: the shipped "
                        "judge; 'none': leave the speed reading out)")
    s.set_defaults(func=cmd_study_convergence_noise)

    s = sub.add_parser("screen-video", help="a world-model screen: arms (configs) × training seeds, stage video "
                       "trained and judged on the same clips, compared with the first arm paired by seed; resumable")
    s.add_argument("--out", required=True, help="screen folder (runs, shared VAE and latents, evals, screen.json)")
    s.add_argument("--arm", required=True, action="append", help="NAME=CONFIG.yaml, repeated; the first is the control")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    s.add_argument("--vae", required=True, help="checkpoint or run folder whose trained VAE every run uses")
    s.add_argument("--judge", default=None, help="video judge folder (default: eval's, the shipped one)")
    s.add_argument("--every", type=int, default=3, help="the judge reads every K-th val clip (E8–E12: 3)")
    s.add_argument("--judge-samples", type=int, default=1, help="sampled futures per clip (E8–E12: 1)")
    s.add_argument("--evals", default=None, help="folder of the eval reports, the screen's ledger (default OUT/evals; "
                                                 "a run whose report is there is not run again)")
    s.set_defaults(func=cmd_screen_video)

    s = sub.add_parser("study-planner", help="the claims study's planning part (docs/study.md §4): arms × seeds "
                       "trained, scored, summarised with intervals; resumable")
    s.add_argument("--out", required=True, help="study folder (run folders, shared per-clip files, scores, logs)")
    s.add_argument("--arms", nargs="+", default=["vanilla", "full", "+align", "+hn"],
                   help="of vanilla full +align +hn (registered), full-1draw full-unclipped (a switch off), "
                        "full-frames full+hinge full-clean full-sigma0.2 (exploratory)")
    s.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the registered 0 1 2")
    s.add_argument("--samples", type=int, default=8, help="plans per clip")
    s.add_argument("--parallel", type=int, default=2, help="jobs at a time (each with cores ÷ this threads)")
    s.add_argument("--checkpoint", default="assets/checkpoints/reworld", help="whose Video DiT every arm starts from")
    s.add_argument("--config", default="configs/world4s.yaml", help="base config of every arm")
    s.add_argument("--results", default="assets/ablation", help="folder of the summary files")
    s.add_argument("--action-steps", type=int, default=None, help="override stage action's steps (tests)")
    s.add_argument("--joint-steps", type=int, default=None, help="override stage joint's steps (tests)")
    s.add_argument("--summary-only", action="store_true", help="only rewrite the summary from the scores there are")
    s.set_defaults(func=cmd_study_planner)

    s = sub.add_parser("embedding", help="UMAP and separation of experts vs hard negatives (Action DiT features)")
    s.add_argument("--checkpoint", required=True, action="append", help="repeat to compare (vanilla vs ReWorld)")
    s.add_argument("--label", action="append", help="name per --checkpoint (default: folder names)")
    common(s, clips=32)
    s.add_argument("--k", type=int, default=8, help="hard negatives per clip")
    s.add_argument("--block", type=int, default=None, help="Action DiT block (default: the alignment block)")
    s.add_argument("--sigma", type=float, default=0.0, help="noise level of the trajectories (0 = clean)")
    s.add_argument("--n-components", type=int, default=2, choices=[2, 3])
    s.add_argument("--n-neighbors", type=int, default=15)
    s.add_argument("--folds", type=int, default=5, help="cross-validation folds of the separation metrics")
    s.add_argument("--cache-dir", default=None, help="UMAP cache (default: OUT/cache)")
    s.set_defaults(func=cmd_embedding)

    s = sub.add_parser("ablation", help="training curves / metric tables from CSV (format: analysis/ablation.py)")
    s.add_argument("--csv", required=True, action="append", help="curves (step,run,seed,metric,value) or table "
                                                                  "(run[,seed],metric…); repeatable")
    s.add_argument("--out", required=True)
    s.add_argument("--metric", action="append", help="only these metrics (repeatable)")
    s.add_argument("--target", action="append", help="'METRIC<=VALUE' or 'METRIC>=VALUE': steps to reach it")
    s.add_argument("--smooth", type=int, default=1, help="trailing moving average over this many points")
    s.add_argument("--log-y", action="store_true")
    s.add_argument("--self-contained", action="store_true", help="embed plotly.js in every HTML file")
    s.set_defaults(func=cmd_ablation)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
