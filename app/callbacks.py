"""The app's actions. Each one checks its inputs (`validate`, `gr.Error`), calls one library function,
and formats the result for the UI and the API. `ctx` is the app's `AppContext`, `session` Gradio's
session hash, `progress(fraction, desc)` an optional progress reporter."""
from __future__ import annotations

import functools
import inspect
import math
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from . import media
from . import validate as V

PDM_COLUMNS = ["sample", "failure", "NC", "DAC", "TTC", "EP", "C", "PDMS", "progress [m]"]


def user_errors(fn):
    """The library's own input errors (bad dataset, checkpoint without planner, …) become `gr.Error`; every
    rejection or stop is logged as one line (`app: <endpoint>: <message>`), never as a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from reworld.data.loader import DatasetError
        from reworld.planning.scene import SceneFormatError
        from reworld.models.layers import CheckpointError

        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            error = e
        except (DatasetError, SceneFormatError, CheckpointError, ValueError) as e:
            error = gr.Error(str(e))
        error.print_exception = False  # a user's mistake is not the server's: one line, below
        print(f"app: {fn.__name__}: {error.message}".splitlines()[0], file=sys.stderr, flush=True)
        raise error

    return wrapper


def _status(result, what: str, extra: str = "") -> str:
    return f"**{what}** on `{result.device}` in **{result.seconds:.2f} s**" + (f" · {extra}" if extra else "")


def _command_text(clip, command: str | None, used: str) -> str:
    from reworld.data.types import COMMANDS

    logged = COMMANDS[clip.observation.command]
    return f"command {used}" + (" (logged)" if command is None else f" (override; logged {logged})")


# --------------------------------------------------------------------------- scenes


def list_scenes(ctx) -> list[dict]:
    return [{"scene": name, "description": ctx.descriptions.get(name, ""), "samples": len(idx),
             "split": ctx.split_of.get(name, "")} for name, idx in ctx.scenes.items()]


@user_errors
def scene_view(ctx, scene, index):
    """Camera frames (context, then the logged future), the BEV, and facts about the sample."""
    from reworld.data.types import COMMANDS
    from reworld.planning.scene import PlanningScene
    from reworld.viz.bev import bev_figure

    clip = ctx.clip(scene, index)
    d = ctx.data_cfg
    times = media.frame_times(d.context_frames, d.future_frames, d.frame_rate)
    frames = media.vstack([
        media.caption(media.frame_strip(media.to_uint8(clip.observation.frames), times[: d.context_frames]),
                      "observed context (what the model sees)"),
        media.caption(media.frame_strip(media.to_uint8(clip.target.frames), times[d.context_frames:]),
                      "logged future (ground truth)"),
    ])
    fig = None
    if clip.target.drivable_area:
        fig = bev_figure(PlanningScene.from_clip(clip), title=f"{clip.scene_name} · sample {int(index)}")
    speed, accel, yaw_rate = (float(v) for v in clip.observation.ego_status)
    info = {"scene": clip.scene_name, "description": ctx.descriptions.get(clip.scene_name, ""),
            "sample_index": int(index), "samples_in_scene": len(ctx.scenes[clip.scene_name]),
            "sample_token": clip.sample_token, "timestamp_us": int(clip.timestamp),
            "split": ctx.split_of.get(clip.scene_name, ""), "command": COMMANDS[clip.observation.command],
            "ego_speed_mps": round(speed, 2), "ego_accel_mps2": round(accel, 2), "ego_yaw_rate_rps": round(yaw_rate, 3),
            "agents": len(clip.target.agents), "has_map": bool(clip.target.drivable_area)}
    return frames, fig, info


def url_state(ctx, params: dict, tabs) -> dict:
    """The view a shared link asks for: scene, sample, checkpoint, seed, guidance and tab from the URL's query, each
    checked as if typed (`validate`); a missing value gives the default (first scene, sample 0, first checkpoint; None
    for seed, guidance and tab: leave them), a bad one too, with one log line that names it."""
    out = {"scene": next(iter(ctx.scenes)), "sample": 0, "checkpoint": ctx.names[0], "seed": None, "guidance": None,
           "tab": None}

    def take(key, check):
        if key not in params or params[key] in ("", None):
            return
        try:
            out[key] = check(params[key])
        except (gr.Error, ValueError) as e:
            print(f"app: url: ignored {key}={params[key]!r}: {getattr(e, 'message', e)}".splitlines()[0],
                  file=sys.stderr, flush=True)

    def number(parse, check):
        def f(text):
            try:
                value = parse(text)
            except ValueError:
                raise ValueError(f"not a number: {text!r}") from None
            return check(value)
        return f

    take("scene", lambda v: V.name(v, "scene", ctx.scenes))
    take("checkpoint", lambda v: V.name(v, "checkpoint", ctx.pipelines))
    take("sample", number(float, lambda v: V.count(v, "sample", 0, len(ctx.scenes[out["scene"]]) - 1)))
    take("seed", number(float, V.seed))
    take("guidance", number(float, V.guidance))
    take("tab", lambda v: V.name(v, "tab", tabs))
    return out


# --------------------------------------------------------------------------- generate & plan


def _sampler_progress(progress, what: str):
    if progress is None:
        return None
    return lambda step, steps, sigma: progress(step / steps, desc=f"{what}: step {step}/{steps} (σ = {sigma:.2f})")


def _check_guidance(pipe, w: float) -> None:
    if w != 1.0 and not pipe.trained_heads:
        raise gr.Error(_no_head(pipe) + ": guidance w ≠ 1 would " + (
            "only rescale its output, not guide it; use w = 1" if pipe.heads else "have nothing to guide with; use w = 1"))


def _no_head(pipe) -> str:
    name = pipe.config.name
    if pipe.heads:
        return (f"checkpoint {name!r} lists an intermediate head (block {', '.join(map(str, pipe.heads))}) that its "
                "run never trained (λ_ig = 0)")
    return f"checkpoint {name!r} has no intermediate velocity head"


def stoppable(fn):
    """A job a Stop button can end (`fn(ctx, …, session, …)`): it takes its armed share of the session
    (`StopFlags.start`) before anything can fail, validation included, and gives it back in `finally`, so that a
    rejected or failed job never leaves a stale stop request for the next one."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        ctx, session = bound.arguments["ctx"], bound.arguments["session"]
        ctx.stops.start(session)
        try:
            return fn(*args, **kwargs)
        finally:
            ctx.stops.finish(session)

    return wrapper


def _run_stoppable(ctx, session: str, steps: int, job, pipe):
    """Inside a `stoppable` job: run `job(should_stop)` under the model lock with `pipe` on its device; a stop
    request ends it between two sampler steps."""
    from reworld.sampling.euler import SamplingStopped

    event = ctx.stops.event(session)
    try:
        with ctx.using(pipe):
            return job(event.is_set)
    except SamplingStopped as e:
        raise gr.Error(f"Stopped after {e.steps_done} of {steps} steps.", title="Stopped", duration=4) from None


@user_errors
@stoppable
def generate(ctx, checkpoint, scene, index, steps, guidance, seed, command, session: str = "", progress=None):
    """Imagine the future; an MP4 with the generated future beside the logged one, and a status line."""
    pipe = ctx.pipeline(checkpoint)
    steps, w, seed, cmd = V.steps(steps), V.guidance(guidance), V.seed(seed), V.command(command)
    _check_guidance(pipe, w)
    clip = ctx.clip(scene, index)
    result = _run_stoppable(ctx, session, steps, lambda should_stop: pipe.generate(
        clip, steps=steps, guidance=w, seed=seed, command=cmd, callback=_sampler_progress(progress, "generating"),
        should_stop=should_stop), pipe)
    path = _video(ctx, clip, result.frames, f"generated ({checkpoint})")
    return str(path), _status(result, "generated", f"{clip.scene_name} · sample {int(index)} · {steps} steps · "
                              f"w = {w:g} · seed {seed} · " + _command_text(clip, cmd, result.command))


def _video(ctx, clip, generated, label: str) -> Path:
    frames = media.side_by_side_frames(clip.observation.frames, generated, clip.target.frames,
                                       ctx.data_cfg.frame_rate, left=label)
    return media.write_mp4(frames, ctx.new_path(".mp4"), fps=ctx.data_cfg.frame_rate)


def _pdm_table(result) -> pd.DataFrame:
    from reworld.planning.pdm import failure_kind

    rows = [[i, failure_kind(r), r.nc, r.dac, r.ttc, round(r.ep, 3), r.c, round(r.pdms, 3),
             round(r.progress_m, 1) if math.isfinite(r.progress_m) else None] for i, r in enumerate(result.scores)]
    return pd.DataFrame(rows, columns=PDM_COLUMNS)


@user_errors
@stoppable
def plan(ctx, checkpoint, scene, index, num_samples, seed, command, session: str = ""):
    """Sample trajectories, score them (PDM); the BEV with every sample, the sub-score table, a status line."""
    from reworld.planning.scene import PlanningScene
    from reworld.viz.bev import bev_figure

    pipe = ctx.pipeline(checkpoint)
    n, seed, cmd = V.num_samples(num_samples), V.seed(seed), V.command(command)
    clip = ctx.clip(scene, index)
    if not pipe.has_planner:  # a video-only checkpoint (stage video): its video still comes
        return None, pd.DataFrame(columns=PDM_COLUMNS), (f"`{checkpoint}` has no planner (a Video DiT without its "
                                                          "Action DiT): nothing to plan")
    steps = pipe.plan_steps
    result = _run_stoppable(ctx, session, steps, lambda _: pipe.plan(clip, steps=steps, num_samples=n, seed=seed,
                                                                     command=cmd), pipe)
    table = _pdm_table(result)
    fig = None
    if clip.target.drivable_area:
        fig = bev_figure(PlanningScene.from_clip(clip), result.trajectories, scores=result.scores or None,
                         title=f"{checkpoint}: {n} sampled trajectories · {clip.scene_name} · sample {int(index)}")
    extra = f"{clip.scene_name} · sample {int(index)} · {n} samples · seed {seed} · " + _command_text(
        clip, cmd, result.command)
    if len(table):
        extra += f" · mean PDMS {table['PDMS'].mean():.3f} · best {table['PDMS'].max():.3f}"
    else:
        extra += " · not scored (no map geometry)"
    return fig, table, _status(result, "planned", extra)


def generate_and_plan(ctx, checkpoint, scene, index, num_samples, steps, guidance, seed, command, session: str = "",
                      progress=None):
    """The *Generate & plan* button's two jobs as one event (measured no faster than two chained events; the page
    then shows one run, and the plan as soon as it is ready): yields the plan's outputs first — (BEV, table, plan
    status, skip, "Generating …") — then the video's (skip × 3, MP4, status). Both jobs must have been armed
    (`StopFlags.arm(session, jobs=2)`): a Stop during the plan reaches the video. A plan that fails says why in its
    status line (and as a warning) and the video still comes; a failed or stopped video raises `gr.Error` as
    `generate` does."""
    try:
        fig, table, status = plan(ctx, checkpoint, scene, index, num_samples, seed, command, session=session)
    except gr.Error as e:
        if e.title != "Stopped":
            gr.Warning(f"Not planned: {e.message}")
        fig, table, status = gr.skip(), gr.skip(), f"**not planned**: {e.message}"
    yield fig, table, status, gr.skip(), "Generating …"
    video, status = generate(ctx, checkpoint, scene, index, steps, guidance, seed, command, session=session,
                             progress=progress)
    yield gr.skip(), gr.skip(), gr.skip(), video, status


def generate_and_plan_shown(ctx, values: tuple, session: str = "", progress=None):
    """`generate_and_plan(ctx, *values, …)`, remembering `values` for the session once the video is done (what its
    Generate & plan tab shows: a pick of the same settings does not run them again)."""
    for i, out in enumerate(generate_and_plan(ctx, *values, session=session, progress=progress)):
        if i == 1:
            ctx.shown.put(session, repr(values))
        yield out


def generate_and_plan_on_pick(ctx, tab: str, run: bool, values: tuple, session: str = "", progress=None):
    """After a pick of scene or sample (or the tab being opened): Generate & plan when *Run on every pick* is on
    (`run`), the tab is open (`tab` == "generate") and it does not already show these settings (checked on the
    server, so the two events of one slider move, input and release, run once); else nothing changes (five skips).
    Arms both jobs itself (a Stop during the plan reaches the video)."""
    if not (run and tab == "generate") or ctx.shown.peek(session) == repr(values):
        yield (gr.skip(),) * 5
        return
    ctx.stops.arm(session, jobs=2)
    yield from generate_and_plan_shown(ctx, values, session, progress)


# --------------------------------------------------------------------------- velocity


@dataclass
class VelocityView:
    """A session's last velocity analysis: the report, the checkpoint and seed that made it (to decode a layer's
    x0 prediction on demand), and the previews decoded so far."""

    report: object  # analysis.velocity.VelocityReport
    checkpoint: str
    seed: int
    decoded: dict = field(default_factory=dict)  # (step, layer) → LayerPreview


def default_layer(report) -> str:
    """The layer the previews open on: the shallowest trained head, else the block in the middle of the stack."""
    from analysis.velocity import head_key, lens_key

    if report.blocks:
        return head_key(report.blocks[0])
    return lens_key(report.lens_blocks[len(report.lens_blocks) // 2 - 1 if len(report.lens_blocks) > 1 else 0])


def layer_choices(report) -> list[tuple[str, str]]:
    """(label, key) of every layer but the final output, for the layer picker."""
    from analysis.velocity import FINAL, layer_label

    n = max(report.lens_blocks) + 1 if report.lens_blocks else None
    return [(layer_label(k, n), k) for k in report.layers() if k != FINAL]


@user_errors
def preview_image(ctx, view, step, layer=None) -> np.ndarray:
    """At one denoising step: the chosen layer's x0 prediction (decoded), the final output's, and their difference
    amplified (its gain and size in the caption); columns are the future frames."""
    from analysis.velocity import FINAL, layer_label, layer_preview

    if view is None:
        raise gr.Error("run the velocity analysis first")
    report = view.report
    s = V.count(step, "step", 0, report.steps - 1)
    keys = [k for k in report.layers() if k != FINAL]
    key = default_layer(report) if layer in (None, "") else V.name(layer, "layer", keys)
    if (s, key) not in view.decoded:
        pipe = ctx.pipeline(view.checkpoint)
        with ctx.using(pipe):
            view.decoded[(s, key)] = layer_preview(
                report, lambda c, f: pipe.decode_future(c, f, seed=view.seed), s, key)
    p = view.decoded[(s, key)]
    n = max(report.lens_blocks) + 1 if report.lens_blocks else None

    def row(frames, text):
        return media.caption(media.hstack([media.upscale(f, 3) for f in frames]), text)

    return media.vstack([
        row(p.layer, f"{layer_label(key, n)}: x0 prediction at step {s} (sigma = {p.sigma:.2f})"),
        row(p.final, f"final output: x0 prediction at step {s}"),
        row(p.difference, f"|difference| x{p.gain:.1f} (white = {255 / p.gain:.0f} grey levels or more; "
                          f"mean {p.mean_levels:.1f}, max {p.max_levels:.0f} of 255)"),
    ])


@user_errors
@stoppable
def velocity(ctx, checkpoint, scene, index, steps, guidance, seed, command, session: str = "", progress=None):
    """Intermediate vs final velocity, on every block (the lens) and every trained head: heatmap, curves, the view
    (for the previews), its numbers, a status line."""
    from analysis import velocity as AV
    from analysis.output import to_jsonable

    pipe = ctx.pipeline(checkpoint)
    steps, w, seed, cmd = V.steps(steps), V.guidance(guidance), V.seed(seed), V.command(command)
    _check_guidance(pipe, w)
    clip = ctx.clip(scene, index)

    def job(should_stop):
        result = pipe.generate(clip, steps=steps, guidance=w, seed=seed, command=cmd, lens=True,
                               callback=_sampler_progress(progress, "sampling with records"), should_stop=should_stop)
        return AV.report_from_records(result.record, result.latents, scene_name=clip.scene_name,
                                      sample_token=clip.sample_token, guidance=w, seed=seed,
                                      heads=pipe.trained_heads), result

    report, result = _run_stoppable(ctx, session, steps, job, pipe)
    numbers = to_jsonable({**report.to_dict(), "checkpoint": checkpoint, "device": result.device,
                           "seconds": result.seconds})
    heads = (f"trained head(s) on block {', '.join(map(str, report.blocks))}" if report.blocks
             else _no_head(pipe) + "; the lens rows read every block with the output layer")
    status = _status(result, "sampled with records", f"{steps} steps · w = {w:g} · seed {seed} · {heads}")
    return (AV.cosine_heatmap(report), AV.discrepancy_curves(report), VelocityView(report, checkpoint, seed),
            numbers, status)


# --------------------------------------------------------------------------- representations


def embedding_clips(ctx, n: int) -> tuple[list[int], str]:
    """`n` dataset indices spread evenly over the held-out (val) samples, the same for every checkpoint, and the
    split they come from; a root without a val split gives every sample ("all")."""
    held_out = [i for i, ref in enumerate(ctx.dataset.samples) if ctx.split_of.get(ref.scene_name) == "val"]
    pool, split = (held_out, "val") if held_out else (list(range(len(ctx.dataset.samples))), "all")
    picks = np.linspace(0, len(pool) - 1, min(n, len(pool)))
    return sorted({pool[int(round(v))] for v in picks}), split


@user_errors
def embedding(ctx, checkpoints, n_clips, k, dims, seed, session: str = "", progress=None):
    """UMAP of Action DiT features (experts and hard negatives) per checkpoint, and separation metrics."""
    from analysis import representations as R
    from analysis.output import to_jsonable

    names = V.names(checkpoints, "checkpoint", ctx.pipelines, 1, 2)
    n_clips, k = V.count(n_clips, "number of clips", 2, 64), V.count(k, "hard negatives per clip", 1, 16)
    seed = V.seed(seed)
    dims = V.count(dims, "UMAP dimensions", 2, 3)
    indices, split = embedding_clips(ctx, n_clips)
    where = "held-out (val) clips" if split == "val" else "clips (no val split: training and held-out mixed)"
    figures, reports, numbers = [], {}, {"clips": len(indices), "split": split, "k": k, "seed": seed,
                                         "checkpoints": {}}
    for j, name in enumerate(names):
        pipe = ctx.pipelines[name]

        def collect(pipe=pipe, j=j):
            clips = [ctx.dataset[i] for i in indices]
            tick = None if progress is None else (
                lambda i, n: progress((j + i / n) / len(names), desc=f"{name}: features of clip {i}/{n}"))
            with ctx.using(pipe):
                return R.collect_features(pipe, clips, k=k, seed=seed, callback=tick)

        fs = ctx.features.get((name, tuple(indices), k, seed), collect)
        coords = R.umap_embedding(fs.feats, n_components=dims, random_state=seed,
                                  n_neighbors=max(2, min(15, len(fs.labels) - 1)), cache_dir=ctx.cache_dir,
                                  cache_key=f"{name}|{ctx.pipelines[name].path}|k={k}")
        entry = {"points": len(fs.labels), "counts": fs.counts}
        try:
            reports[name] = R.separation_metrics(fs.feats, fs.labels, seed=seed)
            entry["separation"] = reports[name].to_dict()
            auc = f"probe AUC {reports[name].probe_auc:.3f}"
        except ValueError as e:  # e.g. no hard negative in these clips: the picture stands, the numbers cannot
            entry["separation_error"] = str(e)
            auc = "no separation numbers"
        numbers["checkpoints"][name] = entry
        figures.append(R.embedding_figure(coords, fs.labels, fs.meta,
                                          f"UMAP of Action DiT features — {name} ({len(indices)} {where}; {auc})"))
    separation = R.separation_figure(reports) if reports else None
    second = figures[1] if len(figures) > 1 else None
    return figures[0], second, separation, to_jsonable(numbers)


# --------------------------------------------------------------------------- alignment


@user_errors
def alignment(ctx, checkpoints, scene, index, k, seed):
    """For the picked clip: the planner's features against the video representation they are aligned to, per block
    and waypoint, and the expert's against its hard negatives, for one or two checkpoints side by side."""
    from analysis import representations as R
    from analysis.output import to_jsonable

    names = V.names(checkpoints, "checkpoint", ctx.pipelines, 1, 2)
    k, seed = V.count(k, "hard negatives", 1, 16), V.seed(seed)
    clip = ctx.clip(scene, index)
    results, numbers = {}, {"scene": clip.scene_name, "sample": clip.sample_token,
                            "split": ctx.split_of.get(clip.scene_name, ""), "k": k, "seed": seed, "checkpoints": {}}
    for name in names:
        pipe = ctx.pipelines[name]
        if not pipe.has_planner:
            raise gr.Error(f"checkpoint {name!r} has no planner (train stage action)")
        with ctx.using(pipe):
            al, labels = R.alignment_of_clip(pipe, clip, k=k, seed=seed)
        results[name] = (al, labels)
        numbers["checkpoints"][name] = {
            "labels": labels, "pooled_cosine": al.pooled_cosine, "expert_cosine": al.cosine[0],
            "align_block": al.align_block, "video_block": al.video_block, "lambda_align": al.lambda_align,
            "lambda_hn": al.lambda_hn, "expert_share": al.expert_share(), "projector_trained": al.projector_trained}
    interval = ctx.data_cfg.horizon_s / ctx.data_cfg.num_poses
    split = numbers["split"] or "unknown split"
    note = (f"{clip.scene_name}, sample {clip.sample_token[:8]} (**{split}** split): the expert and "
            f"{len(labels) - 1} hard negatives.")
    untrained = [n for n, (al, _) in results.items() if not al.projector_trained]
    if untrained:
        note += (" " + ", ".join(f"`{n}`" for n in untrained) + " was trained without the alignment and hard-negative "
                 "losses: its projector is its initialisation, so its cosines show what an untrained read-out gives, "
                 "not a lack of alignment in its features (the Representations tab measures those directly).")
    return R.alignment_figure(results, interval_s=interval), note, to_jsonable(numbers)


# --------------------------------------------------------------------------- ablation compare


@user_errors
@stoppable
def compare(ctx, checkpoint_a, checkpoint_b, scene, index, steps, guidance, seed, num_samples, command,
            session: str = "", progress=None):
    """Two checkpoints on the same clip, seed and settings: video, trajectories, PDMS, velocity curves."""
    from analysis import velocity as AV
    from reworld.planning.scene import PlanningScene
    from reworld.viz.bev import bev_figure

    names = [V.name(c, "checkpoint", ctx.pipelines) for c in (checkpoint_a, checkpoint_b)]
    steps, w, seed = V.steps(steps), V.guidance(guidance), V.seed(seed)
    n, cmd = V.num_samples(num_samples), V.command(command)
    # guidance is defined only with a trained head: a checkpoint without one runs at w = 1, its own default (the
    # table says so), the other at the w asked for
    ws = [w if ctx.pipelines[name].trained_heads else 1.0 for name in names]
    clip = ctx.clip(scene, index)
    videos, bevs, curves, rows, tables = [], [], [], [], []
    for j, name in enumerate(names):
        pipe = ctx.pipelines[name]
        tick = None if progress is None else (
            lambda s, total, sigma, j=j, name=name: progress((j + s / total) / 2, desc=f"{name}: step {s}/{total}"))

        def job(should_stop, pipe=pipe, tick=tick, w=ws[j]):
            gen = pipe.generate(clip, steps=steps, guidance=w, seed=seed, command=cmd, lens=True, callback=tick,
                                should_stop=should_stop)
            return gen, pipe.plan(clip, steps=pipe.plan_steps, num_samples=n, seed=seed, command=cmd)

        gen, planned = _run_stoppable(ctx, session, steps, job, pipe)
        videos.append(str(_video(ctx, clip, gen.frames, name)))
        table = _pdm_table(planned)
        scene_ok = bool(clip.target.drivable_area)
        bevs.append(bev_figure(PlanningScene.from_clip(clip), planned.trajectories, scores=planned.scores or None,
                               title=f"{name}: {n} samples") if scene_ok else None)
        curves.append(AV.discrepancy_curves(AV.report_from_records(
            gen.record, gen.latents, scene_name=clip.scene_name, sample_token=clip.sample_token, guidance=ws[j],
            seed=seed, heads=pipe.trained_heads)))
        row = {"checkpoint": name, "w": ws[j] if pipe.trained_heads else "1 (no trained head)", "device": gen.device,
               "generate [s]": round(gen.seconds, 2),
               "plan [s]": round(planned.seconds, 2)}
        for col in ("PDMS", "NC", "DAC", "TTC", "EP", "C"):
            row[f"mean {col}"] = round(float(table[col].mean()), 3) if len(table) else None
        row["best PDMS"] = round(float(table["PDMS"].max()), 3) if len(table) else None
        row["collisions"] = int((table["failure"] == "collision").sum()) if len(table) else None
        rows.append(row)
        tables.append(table)
    if all(len(t) for t in tables):
        rows.append(paired_row(tables[0], tables[1]))
    return videos[0], videos[1], bevs[0], bevs[1], pd.DataFrame(rows), curves[0], curves[1]


def paired_row(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """The table's third row: A − B per trajectory sample (sample i of both checkpoints starts from the same noise),
    the mean with its 95 % bootstrap interval over samples, so that a difference within the samples' spread reads
    as one."""
    from reworld.evaluation.stats import paired_interval

    row = {"checkpoint": "A − B, paired by sample (95 % bootstrap)", "w": "", "device": "", "generate [s]": None,
           "plan [s]": None}
    for col in ("PDMS", "NC", "DAC", "TTC", "EP", "C"):
        d = a[col].to_numpy(float) - b[col].to_numpy(float)
        iv = paired_interval(d, resamples=2000)
        row[f"mean {col}"] = f"{iv.mean:+.3f} [{iv.boot_lo:+.3f}, {iv.boot_hi:+.3f}]"
    row["best PDMS"] = None
    row["collisions"] = int((a["failure"] == "collision").sum() - (b["failure"] == "collision").sum())
    return row


# --------------------------------------------------------------------------- ablation curves


# the claims study's parts in docs/study.md's order (the toy §1, convergence §2, fine-tuning §3, planning §4 as C3′ —
# its re-run on the fixed planner sampler, amendment 17, a ledger of its own in c3-fixed/ — then C3): the ablation tab
# lists them first, so that it opens on a part with its registered verdicts
STUDY_CSVS = ("guidance_toy.csv", "convergence_study.csv", "finetune_study.csv", "c3-fixed/planner_study.csv",
              "planner_study.csv")
# what the tab says of a part beyond its file: which reading it is
STUDY_NOTES = {
    "c3-fixed/planner_study.csv": "C3′: the planning claim on the fixed planner sampler (docs/study.md amendment 17), "
                                  "the study's reading of it",
    "planner_study.csv": "C3: its planners were sampled off their σ schedule (docs/study.md amendment 15); C3′ "
                         "(c3-fixed/planner_study.csv) is its re-run on the fixed sampler",
}


def ablation_files(ctx) -> list[str]:
    """The ablation CSVs, relative to the ablation folder: the claims study's parts first (`STUDY_CSVS`' order), then
    the others by name. A CSV one folder down is listed only as a study part's second ledger, i.e. with its results
    JSON beside it (`c3-fixed/planner_study.csv` + `.json`), not the ledgers' own score files."""
    d = ctx.ablation_dir
    if d is None or not d.is_dir():
        return []
    names = [p.name for p in d.glob("*.csv")]
    names += [f"{p.parent.name}/{p.name}" for p in d.glob("*/*.csv") if p.with_suffix(".json").is_file()]
    rank = {n: i for i, n in enumerate(STUDY_CSVS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def no_ablation_note(ctx) -> str:
    where = ctx.ablation_dir if ctx.ablation_dir is not None else "assets/ablation/"
    return (f"**No ablation data**: there is no CSV in `{where}`. The ablation runs export their training curves "
            "there (`step,run,seed,metric,value`, see `analysis/ablation.py`); until then this panel stays empty.")


VERDICT_COLUMNS = ["comparison", "effect", "95 % bootstrap", "95 % t", "smallest effect", "verdict"]


def _verdict_interval(lo, hi) -> str:
    """"[lo, hi]", or "—" for an interval not computed yet (one seed: no t interval over seeds; JSON null)."""
    if lo is None or hi is None:
        return "—"
    return f"[{float(lo):+.4f}, {float(hi):+.4f}]"


def study_verdicts(ctx, csv_name: str) -> pd.DataFrame:
    """The pre-registered comparisons of a claims-study part (docs/study.md) whose results sit beside its CSV
    (`<name>.json` with "comparisons": the effect — a mean, or for the convergence part the median speed-up —
    its intervals and verdict each), as a table; empty for other CSVs."""
    import json

    rel = Path(csv_name).with_suffix(".json").as_posix()  # named in errors as listed: c3-fixed/planner_study.json
    path = ctx.ablation_dir / rel
    try:
        comparisons = json.loads(path.read_text()).get("comparisons") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        raise gr.Error(f"{rel}: not readable as the study's results JSON") from None
    if not isinstance(comparisons, dict):
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    rows = []
    for name, c in comparisons.items():
        try:
            effect = c["mean"] if "mean" in c else c["median"]
            rows.append([name, f"{effect:+.4f}", _verdict_interval(c["boot_lo"], c["boot_hi"]),
                         _verdict_interval(c["t_lo"], c["t_hi"]), f"{c['smallest_effect']:.4f}", c["verdict"]])
        except (KeyError, TypeError, ValueError):
            raise gr.Error(f"{rel}: comparison {name!r} lacks its mean, intervals or verdict") from None
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


@user_errors
def ablation(ctx, csv_name):
    """Training curves (or a metric table) of one ablation CSV from the app's asset folder, and the pre-registered
    comparisons with their verdicts when the CSV is a claims-study part's (`study_verdicts`)."""
    from analysis import ablation as AB

    files = ablation_files(ctx)
    if not csv_name and not files:
        return None, no_ablation_note(ctx), pd.DataFrame(columns=VERDICT_COLUMNS)
    name = V.listed_file(csv_name or files[0], "ablation CSV", files)
    kind, df = AB.read_ablation_csv(ctx.ablation_dir / name)
    if kind == "curves":
        fig = AB.curves_figure(df)
        note = f"`{name}`: training curves of runs {', '.join(map(str, df['run'].unique()))}"
    elif kind == "results":
        fig = AB.results_figure(df)
        note = (f"`{name}`: results of arms {', '.join(map(str, df['arm'].unique()))} over seeds "
                f"{', '.join(map(str, sorted(df['seed'].unique())))} (dots: seeds; diamonds: means with 95 % "
                "t-intervals)")
    else:
        fig = AB.table_figure(df)
        note = f"`{name}`: metric table of runs {', '.join(map(str, df['run'].unique()))}"
    if name in STUDY_NOTES:
        note += f". {STUDY_NOTES[name]}"
    verdicts = study_verdicts(ctx, name)
    if len(verdicts):
        note += (". Below: the comparisons registered in docs/study.md before the runs, paired as the part registers "
                 "(the toy and convergence by seed, planning by clip with a t interval over seeds), with their "
                 "verdicts (*reproduces*: the intervals exclude 0 in the claimed direction; *does not*: they exclude "
                 "the smallest effect of interest; *inconclusive*: neither; *pending*: not every registered seed is "
                 "in)")
    return fig, note, verdicts


# --------------------------------------------------------------------------- guidance toy
TOY_SWEEP_W = tuple(np.round(np.arange(0.0, 3.01, 0.25), 2))  # the sweep's w values
TOY_SAMPLES, TOY_SWEEP_SAMPLES = 500, 2000


def toy_study_means(ctx) -> dict:
    """The toy study's mean outlier rates (assets/ablation/guidance_toy.csv, docs/study.md §1) for the reference
    lines: label → mean over its seeds. Empty when the study's CSV is absent."""
    path = ctx.ablation_dir / "guidance_toy.csv" if ctx.ablation_dir is not None else None
    if path is None or not path.is_file():
        return {}
    df = pd.read_csv(path)
    df = df[df["metric"] == "outlier_rate"]
    seeds = df["seed"].nunique()
    return {f"study, {arm} ({seeds} seeds)": float(df[df["arm"] == arm]["value"].mean())
            for arm in ("vanilla", "IG w=w*") if (df["arm"] == arm).any()}


@user_errors
def toy(ctx, guidance, seed):
    """The guidance toy at w: the three velocity fields with the samples they move (one frame per sampler step), the
    outlier rate against w for this model (cached per seed), and a line of numbers."""
    from analysis import guidance_toy as G

    w, seed = V.guidance(guidance), V.seed(seed)
    model, meta, density = ctx.toy()
    steps = meta["config"].sample_steps
    fig, numbers = G.toy_view(model, density, w, seed=seed, samples=TOY_SAMPLES, steps=steps)
    sweep = ctx.toy_sweeps.get(seed, lambda: G.toy_sweep(model, density, TOY_SWEEP_W, seed=seed,
                                                         samples=TOY_SWEEP_SAMPLES, steps=steps))
    refs = toy_study_means(ctx)
    near = int(np.argmin(np.abs(np.asarray(sweep["w"]) - w)))
    text = (f"**w = {w:g}** (model: arm `{meta['arm']}`, training seed {meta['seed']}; sampling seed {seed}, "
            f"{steps} Euler steps): {numbers['outlier_rate']:.1%} of the {TOY_SAMPLES} samples shown end off the "
            f"tree; on {TOY_SWEEP_SAMPLES} samples at w = {sweep['w'][near]:g}: {sweep['outlier_rate'][near]:.1%} "
            "(exact samples: 1 %).")
    if refs:
        text += " The study's means: " + ", ".join(f"{k.split(', ')[1].split(' (')[0]} {v:.1%}"
                                                   for k, v in refs.items()) + " (docs/study.md §1)."
    return fig, G.toy_sweep_figure(sweep, w, refs), text


SWEEP_PREFIX = "guidance_sweep_"  # assets/ablation/guidance_sweep_<checkpoint>.json (+ .png): analysis guidance-sweep
SWEEP_KEYS = ("rows", "references", "seconds", "clips", "samples_per_clip", "steps", "default_guidance",
              "reference_w")


def sweep_names(ctx) -> list[str]:
    """The guidance sweeps on real clips the app can show: `guidance_sweep_<name>.json` in its ablation folder."""
    d = ctx.ablation_dir
    if d is None or not d.is_dir():
        return []
    return sorted(p.stem[len(SWEEP_PREFIX):] for p in d.glob(f"{SWEEP_PREFIX}*.json"))


def _read_sweep(path: Path) -> dict:
    import json

    try:
        sweep = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise gr.Error(f"{path.name}: not readable as JSON ({type(e).__name__})") from None
    missing = [k for k in SWEEP_KEYS if not isinstance(sweep, dict) or k not in sweep]
    if missing or not sweep["rows"]:
        raise gr.Error(f"{path.name}: not a guidance sweep (missing {', '.join(missing) or 'rows'}); remake it "
                       "with `python -m analysis guidance-sweep`")
    return sweep


def _interval(iv) -> str:
    return f"[{iv[0]:+.2f}, {iv[1]:+.2f}]"


@user_errors
def guidance_sweep_view(ctx, sweep, guidance):
    """A shipped guidance sweep on real clips (`analysis.guidance_sweep`): the judge's distance and position error
    against w with the baselines, `guidance` marked; one clip's future at several horizons per w; a line of numbers
    at the swept w nearest `guidance`."""
    from PIL import Image

    from analysis.guidance_sweep import sweep_figure

    names = sweep_names(ctx)
    if not names:
        return None, None, ("**No guidance sweep on real clips** in the app's ablation folder: make one with "
                            "`python -m analysis guidance-sweep --checkpoint assets/checkpoints/reworld --judge "
                            "assets/checkpoints/judge --out assets/ablation`.")
    name = V.name(sweep or names[0], "guidance sweep", names)
    w = V.guidance(guidance)
    path = ctx.ablation_dir / f"{SWEEP_PREFIX}{name}.json"
    data = ctx.sweeps.get((name, path.stat().st_mtime_ns), lambda: _read_sweep(path))
    png = path.with_suffix(".png")
    image = np.asarray(Image.open(png).convert("RGB")) if png.is_file() else None
    rows = data["rows"]
    row = rows[int(np.argmin([abs(r["w"] - w) for r in rows]))]
    last = len(data["seconds"]) - 1
    ref = data["reference_w"]
    refs = data["references"]
    text = (f"`{name}` on {data['clips']} held-out clips × {data['samples_per_clip']} ({data['steps']} steps, the same "
            f"noise at every w; its default w = {data['default_guidance']:g}). At **w = {row['w']:g}**"
            + (f" (the swept value nearest {w:g})" if row["w"] != w else "")
            + f": FD {row['fd_judge']:.1f}, position error {row['position_m_mean']:.2f} m on average over the "
            f"horizon {_interval(row['position_m_mean_boot']).replace('+', '')}")
    if row["w"] != ref:
        d = row["minus_reference_position_m_at_s"][last]
        iv = row["minus_reference_position_m_at_s_boot"][last]
        text += f"; at {data['seconds'][last]:g} s, {d:+.2f} m against w = {ref:g} {_interval(iv)} (paired by clip)"
    names_b = {"repeat_last": "repeat-last", "copy_context": "copy-context", "real": "real futures"}
    text += ". References: " + ", ".join(
        f"{names_b.get(k, k)} " + (f"FD {v['fd_judge']:.1f}, " if v.get("fd_judge") is not None else "")
        + f"{v['position_m_mean']:.2f} m" for k, v in refs.items()) + ". Intervals: 95 % bootstrap over clips."
    return sweep_figure(data, w), image, text


# --------------------------------------------------------------------------- export
EXPORT_MAX_BYTES = 30_000_000  # one figure's JSON; the app's own largest (the toy's frames) is ~1 MB


@user_errors
def export_figures(ctx, view: str, payloads) -> str:
    """The figures a view shows, as one offline HTML page (plotly.js embedded once; every figure stays interactive:
    zoom, hover, the toy's animation; each has plotly's own "download as PNG" button). `payloads` are the views'
    `gr.Plot` values as the browser sends them back, so each is checked: a plotly figure, of bounded size, valid
    against plotly's schema."""
    import html

    import plotly.io as pio

    figures = []
    for p in payloads:
        if p is None:
            continue
        kind, text = getattr(p, "type", None), getattr(p, "plot", None)
        if kind != "plotly" or not isinstance(text, str):
            raise gr.Error("only plotly figures can be exported")
        if len(text) > EXPORT_MAX_BYTES:
            raise gr.Error(f"figure too large to export ({len(text) / 1e6:.0f} MB > {EXPORT_MAX_BYTES / 1e6:.0f} MB)")
        try:
            figures.append(pio.from_json(text, skip_invalid=False))
        except ValueError as e:
            raise gr.Error(f"not a valid figure: {str(e).splitlines()[0][:200]}") from None
    if not figures:
        raise gr.Error("nothing to export yet: run the view first")
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
             for i, f in enumerate(figures)]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ReWorld Studio — {html.escape(view)}</title>"
            "</head><body style='font-family:sans-serif'>" + "".join(f"<div>{p}</div>" for p in parts)
            + "</body></html>")
    path = ctx.out_dir / f"reworld-{view}-{uuid.uuid4().hex[:8]}.html"
    path.write_text(page, encoding="utf-8")
    return str(path)
