"""`create_demo`: the Blocks layout and its wiring. `create_demo` makes the context, the header and the
scene/sample/checkpoint pickers every tab shares, then one builder per tab (in the order shown) makes that
tab's components and wires its events. Every callback is a thin wrapper around `callbacks`; heavy ones share
the concurrency group "model" (one at a time, queue position shown)."""
from __future__ import annotations

import atexit
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from reworld.paths import ASSETS, REPO_ROOT

from . import callbacks as C
from . import media
from . import validate as V
from .context import AppContext

HEAVY = dict(concurrency_id="model", concurrency_limit=1)
PRIVATE = dict(api_visibility="private")
CSS = """
.status-line p { margin: 0.2em 0; }
footer { display: none !important; }
"""


def default_out_dir() -> Path:
    """A fresh folder under outputs/app/ for this app's videos, removed when the process exits."""
    root = REPO_ROOT / "outputs" / "app"
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _session(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "anonymous") if request is not None else "anonymous"


def _header(ctx: AppContext) -> str:
    ckpts = " · ".join(f"**{n}** (`{p.device}`)" for n, p in ctx.pipelines.items())
    d = ctx.dataset
    return (f"# ReWorld Studio\nCheckpoints: {ckpts} — data: `{d.root}` ({d.version}), {len(ctx.scenes)} scenes, "
            f"{len(d.samples)} samples. Pick a scene and a moment on its timeline above; every tab works on it.")


@dataclass
class _Shared:
    """What every tab reads: the app's context, the Blocks (for load events), the pickers above the tabs, the
    session's open tab (its id: set when a tab is selected or restored from the URL), and the per-session stop
    actions (`stop` answers a Stop button, `arm` precedes a stoppable job, `arm_two` a chain of two)."""
    ctx: AppContext
    demo: gr.Blocks
    scene: gr.Dropdown
    sample: gr.Slider
    checkpoint: gr.Dropdown
    tab: gr.State
    stop: Callable
    arm: Callable
    arm_two: Callable


@dataclass
class _ScenePick:
    """The scene view's callback, inputs and outputs (the URL's restore shows them too), and the scene views a pick
    ends with (of a scene, its sample reset to 0; of a sample): later steps of a pick chain on them, after the view
    (on 2 cores, a model job beside the view made both slower than one after the other)."""
    show: Callable
    where: list
    outputs: list
    shown: list


@dataclass
class _Settings:
    """The *Generate & plan* controls that the velocity and compare tabs reuse."""
    steps: gr.Slider
    guidance: gr.Slider
    command: gr.Dropdown
    samples: gr.Slider
    seed: gr.Number
    run_on_pick: Callable  # (dependency) → the Generate & plan tab's run after it, when that tab is open


def create_demo(pipelines: dict, dataset, out_dir: str | Path | None = None,
                ablation_dir: str | Path | None = ASSETS / "ablation",
                cache_dir: str | Path | None = REPO_ROOT / "outputs" / "app" / "cache",
                toy_dir: str | Path | None = ASSETS / "checkpoints" / "guidance_toy") -> gr.Blocks:
    """The app over loaded `WorldActionPipeline`s (name → pipeline) and a `NuScenesClips` dataset.

    out_dir: where videos are written (serve it with `allowed_paths`); a fresh folder under outputs/app/ by default.
    ablation_dir: the ablation CSVs; cache_dir: UMAP coordinates, kept between launches; toy_dir: the guidance toy's
    model (`python -m analysis guidance-toy-model`).
    """
    ctx = AppContext(pipelines, dataset, out_dir or default_out_dir(), ablation_dir, cache_dir, toy_dir=toy_dir)

    # Gradio's own copies of served files: swept hourly, kept a day
    with gr.Blocks(title="ReWorld Studio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(_header(ctx))
        shared = _pickers(ctx, demo)
        with gr.Tabs() as tabs:
            pick = _scene_tab(shared)
            settings = _generate_tab(shared, ctx.pipelines[ctx.names[0]])
            _velocity_tab(shared, settings)
            _toy_tab(shared)
            _alignment_tab(shared, settings.seed, tabs)
            _representations_tab(shared, settings.seed)
            _compare_tab(shared, settings)
        _url_state(shared, settings, tabs, pick)
        _runs_on_pick(shared, settings, pick)

    demo.reworld_context = ctx  # for tests and the launcher (allowed output folder)
    return demo


def _pickers(ctx: AppContext, demo: gr.Blocks) -> _Shared:
    """The row above the tabs: scene, sample on its timeline, checkpoint; and the session's stop actions."""
    most = max(len(v) for v in ctx.scenes.values())
    with gr.Row():
        scene = gr.Dropdown(ctx.scene_choices(), value=list(ctx.scenes)[0], label="Scene", scale=3)
        # the bound is the longest scene's; picking a scene narrows it for this session
        sample = gr.Slider(0, most - 1, value=0, step=1, label="Sample on the scene's timeline (2 Hz key frames)",
                           scale=3, elem_id="pick-sample")
        checkpoint = gr.Dropdown(ctx.names, value=ctx.names[0], label="Checkpoint", scale=1)

    def stop(request: gr.Request):
        return "Stop requested." if ctx.stops.stop(_session(request)) else "Nothing is running."

    def arm(request: gr.Request):
        ctx.stops.arm(_session(request))

    def arm_two(request: gr.Request):  # the plan, then the video: a Stop during the plan stops the video too
        ctx.stops.arm(_session(request), jobs=2)

    return _Shared(ctx, demo, scene, sample, checkpoint, gr.State("scene"), stop, arm, arm_two)


def _scene_tab(shared: _Shared) -> None:
    ctx, scene, sample = shared.ctx, shared.scene, shared.sample
    with gr.Tab("Scene", id="scene"):
        gr.Markdown("The observed context and the logged future of the front camera; the bird's-eye view "
                    "with the drivable area, the other road users (now, and faded at 1–4 s) and the expert's "
                    "trajectory.")
        frames = gr.Image(label="Camera frames", elem_id="scene-frames", type="numpy", format="png",
                          interactive=False)
        with gr.Row():
            bev = gr.Plot(label="Bird's-eye view", elem_id="scene-bev", scale=3)
            info = gr.JSON(label="Sample", elem_id="scene-info", scale=1)
        _export(shared, "scene", [bev])
        with gr.Accordion("All scenes", open=False):
            scenes_json = gr.JSON(label="Scenes")

    def on_scene(scene_name):
        n = len(ctx.scenes[V.name(scene_name, "scene", ctx.scenes)])
        return gr.Slider(maximum=n - 1, value=0)

    def show_scene(scene, sample):  # parameter names are the API's (gradio_client's keywords)
        frames, fig, info = C.scene_view(ctx, scene, sample)
        # served as our own fast PNG: Gradio would encode the array again at zlib level 6 on every pick (≈ 4× slower)
        return media.write_png(frames, ctx.new_path(".png")), fig, info

    where = [scene, sample]
    # a user's pick (not the URL's restore, which sets the sample too) starts the scene's timeline at 0
    picked = scene.input(on_scene, scene, sample, queue=False, **PRIVATE)  # no model: not queued
    scene_shown = picked.then(show_scene, where, [frames, bev, info], **PRIVATE)
    sample_shown = gr.on([sample.release, sample.input], show_scene, where, [frames, bev, info], api_name="scene",
                         trigger_mode="always_last")
    shared.demo.load(lambda: C.list_scenes(ctx), None, scenes_json, api_name="list_scenes")
    return _ScenePick(show_scene, where, [frames, bev, info], [scene_shown, sample_shown])


TABS = ("scene", "generate", "velocity", "toy", "alignment", "representations", "compare")
# the view's state in the address bar (replaceState: no new history entry), so that a link restores it
# Nothing is written before the page has restored the URL's own state (Gradio selects the first tab and sets the
# defaults while it mounts, which would overwrite the link being opened).
RESTORED = "() => { window.reworldRestored = true; return []; }"
WRITE_URL = """(scene, sample, checkpoint, seed, guidance) => {
  if (!window.reworldRestored) return [];
  const u = new URL(window.location.href);
  const values = {scene, sample, checkpoint, seed, guidance};
  for (const [k, v] of Object.entries(values)) { if (v !== null && v !== undefined && v !== "") u.searchParams.set(k, v); }
  window.history.replaceState(null, "", u);
  return [];
}"""


def _write_tab(tab: str) -> str:
    return ("() => { if (!window.reworldRestored) return []; const u = new URL(window.location.href); "
            "u.searchParams.set('tab', '" + tab
            + "'); window.history.replaceState(null, '', u); return []; }")


def _export(shared: _Shared, view: str, plots: list) -> None:
    """A button under a view that writes its figures into one offline, interactive HTML page to download (each
    figure's PNG is plotly's own camera button, in the figure's corner)."""
    with gr.Row():
        button = gr.Button("Export figures (interactive HTML)", size="sm", scale=0, elem_id=f"{view}-export-btn")
        file = gr.File(label="Exported figures", interactive=False, elem_id=f"{view}-export", scale=1,
                       visible=False)

    def export(*payloads):
        return gr.File(value=C.export_figures(shared.ctx, view, payloads), visible=True)

    button.click(export, plots, file, **PRIVATE)


def _url_state(shared: _Shared, settings: _Settings, tabs: gr.Tabs, pick: _ScenePick) -> None:
    """Scene, sample, checkpoint, seed, guidance and tab live in the URL's query (`?scene=…&sample=…&tab=velocity`):
    the page restores them on load (each value checked on the server; a bad one is left at its default and named
    in the log) and writes them back whenever they change."""
    ctx = shared.ctx
    state = [shared.scene, shared.sample, shared.checkpoint, settings.seed, settings.guidance]

    def restore(request: gr.Request):
        r = C.url_state(ctx, dict(request.query_params) if request is not None else {}, TABS)
        n = len(ctx.scenes[r["scene"]])
        return (r["scene"], gr.Slider(maximum=n - 1, value=r["sample"]), r["checkpoint"],
                r["seed"] if r["seed"] is not None else gr.skip(),
                r["guidance"] if r["guidance"] is not None else gr.skip(),
                gr.Tabs(selected=r["tab"]) if r["tab"] else gr.skip(), r["tab"] or "scene")

    restored = shared.demo.load(restore, None, [*state, tabs, shared.tab], **PRIVATE)
    restored.then(None, None, None, js=RESTORED, queue=False, **PRIVATE)
    # a shared link to the Generate & plan tab shows its results, after the scene's view
    settings.run_on_pick(restored.then(pick.show, pick.where, pick.outputs, **PRIVATE))
    gr.on([c.change for c in state], None, state, None, js=WRITE_URL, queue=False, **PRIVATE)
    for tab in tabs.children:
        if isinstance(tab, gr.Tab) and tab.id in TABS:
            tab.select(None, None, None, js=_write_tab(tab.id), queue=False, **PRIVATE)
            tab.select(lambda t=tab.id: t, None, shared.tab, queue=False, **PRIVATE)


def _runs_on_pick(shared: _Shared, settings: _Settings, pick: _ScenePick) -> None:
    """While the Generate & plan tab is open, a new scene or sample runs it (its *run on every pick* box), once the
    scene's view is shown."""
    for shown in pick.shown:
        settings.run_on_pick(shown)


def _generate_tab(shared: _Shared, first_pipe) -> _Settings:
    """Generate & plan; its sampler settings (defaults: the first checkpoint's) serve the later tabs too."""
    ctx, where = shared.ctx, [shared.checkpoint, shared.scene, shared.sample]
    first = ctx.names[0]
    with gr.Tab("Generate & plan", id="generate") as gen_tab:
        with gr.Row():
            steps = gr.Slider(1, V.MAX_STEPS, value=ctx.interactive[first][0], step=1,
                              label="Denoising steps", elem_id="gen-steps")
            guidance = gr.Slider(*V.GUIDANCE_RANGE, value=first_pipe.default_guidance, step=0.05,
                                 label="Guidance w (1 = unguided)")
            command = gr.Dropdown(list(V.COMMAND_CHOICES), value=V.LOGGED, label="Driving command")
            samples = gr.Slider(*V.SAMPLES_RANGE, value=16, step=1, label="Trajectory samples")
        with gr.Row():
            seed = gr.Number(0, label="Seed", precision=None, scale=2)
            randomise = gr.Button("Randomise seed", scale=1)
            run_btn = gr.Button("Generate & plan", variant="primary", scale=2)
            stop_btn = gr.Button("Stop", variant="stop", scale=1)
            auto = gr.Checkbox(True, label="Run on every pick", elem_id="gen-auto", scale=1,
                               info="while this tab is open, a new scene or sample generates and plans")
            # the plan and the video on their own, for scripts (`/plan`, `/generate`); the page runs both at once
            plan_only, generate_only = gr.Button(visible=False), gr.Button(visible=False)
        if ctx.interactive[first][1]:
            gr.Markdown(ctx.interactive[first][1], elem_id="steps-note")
        gen_status = gr.Markdown(elem_id="gen-status", elem_classes="status-line")
        plan_status = gr.Markdown(elem_id="plan-status", elem_classes="status-line")
        with gr.Row():
            video = gr.Video(label="Generated future (left) beside the logged future (right)",
                             elem_id="gen-video", autoplay=True, loop=True, interactive=False, buttons=["download"],
                             scale=2)
            plan_bev = gr.Plot(label="Sampled trajectories (hover: PDM sub-scores)", elem_id="plan-bev", scale=2)
        pdm_table = gr.Dataframe(label="PDM sub-scores per sampled trajectory", elem_id="pdm-table",
                                 interactive=False)
        _export(shared, "generate", [plan_bev])

    def run_generate(checkpoint, scene, sample, steps, guidance, seed, command, request: gr.Request,
                     progress=gr.Progress()):
        return C.generate(ctx, checkpoint, scene, sample, steps, guidance, seed, command, _session(request), progress)

    def run_plan(checkpoint, scene, sample, samples, seed, command, request: gr.Request):
        return C.plan(ctx, checkpoint, scene, sample, samples, seed, command, _session(request))

    # one event, the plan first: it is ready in a fraction of the video's time (shown at once), and both share the
    # clip's encoded context and the Video DiT's σ = 1 pass; both jobs are armed, so a Stop during the plan reaches
    # the video, and a failed plan still lets the video come
    def run_both(checkpoint, scene, sample, samples, steps, guidance, seed, command, request: gr.Request,
                 progress=gr.Progress()):
        yield from C.generate_and_plan_shown(ctx, (checkpoint, scene, sample, samples, steps, guidance, seed, command),
                                             _session(request), progress)

    def run_picked(tab, run, checkpoint, scene, sample, samples, steps, guidance, seed, command,
                   request: gr.Request, progress=gr.Progress()):
        yield from C.generate_and_plan_on_pick(ctx, tab, run, (checkpoint, scene, sample, samples, steps, guidance,
                                                               seed, command), _session(request), progress)

    outputs = [plan_bev, pdm_table, plan_status, video, gen_status]
    inputs = [*where, samples, steps, guidance, seed, command]
    randomise.click(lambda: secrets.randbelow(V.MAX_SEED + 1), None, seed, queue=False, **PRIVATE)
    run_btn.click(shared.arm_two, None, None, queue=False, **PRIVATE).then(
        run_both, inputs, outputs, api_name="generate_and_plan", **HEAVY)
    plan_only.click(run_plan, [*where, samples, seed, command], [plan_bev, pdm_table, plan_status], api_name="plan",
                    **HEAVY)
    generate_only.click(run_generate, [*where, steps, guidance, seed, command], [video, gen_status],
                        api_name="generate", **HEAVY)
    stop_btn.click(shared.stop, None, gen_status, queue=False, api_name="stop")

    def run_on_pick(after) -> None:
        """Chains the tab's run after `after` (a dependency: the scene view a pick ends with)."""
        after.then(run_picked, [shared.tab, auto, *inputs], outputs, trigger_mode="always_last", **HEAVY, **PRIVATE)

    def run_opened(run, checkpoint, scene, sample, samples, steps, guidance, seed, command,
                   request: gr.Request, progress=gr.Progress()):
        # the select event sets `shared.tab` too, in no set order: this tab is the open one
        yield from run_picked("generate", run, checkpoint, scene, sample, samples, steps, guidance, seed, command,
                              request, progress)

    # opening the tab after a pick made elsewhere shows that pick's results
    gen_tab.select(run_opened, [auto, *inputs], outputs, trigger_mode="always_last", **HEAVY, **PRIVATE)

    return _Settings(steps, guidance, command, samples, seed, run_on_pick)


VELOCITY_GUIDE = (
    "**What to look for.** The heatmap has one row per transformer block: the model's own output layer applied to "
    "that block's hidden state (a *lens*, as Diffusion Lens reads text-to-image models), and a ★ row for each "
    "intermediate head the run trained. Colour is the cosine between that layer's velocity and the final one: "
    "blue rows agree with the output, white or red rows do not yet. Read down a column to see at which depth the "
    "prediction forms at that noise level, and along a row to see how it changes from noise (left) to the clean "
    "future (right). Guidance `v_i + w (v_f − v_i)` pushes the sample away from the ★ head's prediction, so it only "
    "matters where the ★ row differs from the output. Below, pick a layer and a step: the layer's x0 prediction is "
    "decoded beside the final one, with their difference amplified (its gain is printed) so that small changes show.")


def _velocity_tab(shared: _Shared, settings: _Settings) -> None:
    ctx = shared.ctx
    with gr.Tab("Intermediate vs final velocity", id="velocity"):
        _intro("At each denoising step, the velocity of every block (read through the output layer) and of each "
               "trained intermediate head against the final `v_f` of the same forward pass, and what a layer would "
               "output if sampling stopped there (decoded x0).", VELOCITY_GUIDE)
        with gr.Row():
            vel_btn = gr.Button("Analyse this sample", variant="primary")
            vel_stop = gr.Button("Stop", variant="stop")
        vel_status = gr.Markdown(elem_classes="status-line")
        heatmap = gr.Plot(label="cos(v_layer, v_f) per step and layer", elem_id="vel-heatmap", show_label=False)
        curves = gr.Plot(label="Curves per step", elem_id="vel-curves", show_label=False)
        with gr.Row():
            layer = gr.Dropdown([], label="Layer of the x0 preview", elem_id="vel-layer", scale=2,
                                allow_custom_value=True)  # the choices are the last analysis's; checked server-side
            step = gr.Slider(0, V.MAX_STEPS - 1, value=0, step=1, label="Denoising step of the x0 previews", scale=3)
        preview = gr.Image(label="x0 previews", elem_id="vel-preview", type="numpy", format="png",
                           interactive=False, show_label=False)
        _export(shared, "velocity", [heatmap, curves])
        with gr.Accordion("Numbers (JSON)", open=False):
            vel_json = gr.JSON()
        view = gr.State(None)

    def run_velocity(checkpoint, scene, sample, steps, guidance, seed, command, request: gr.Request,
                     progress=gr.Progress()):
        return C.velocity(ctx, checkpoint, scene, sample, steps, guidance, seed, command, _session(request), progress)

    def show_preview(view, step, layer):  # parameter names are the API's
        return C.preview_image(ctx, view, step, layer)

    def last_preview(view):
        rep, first = view.report, C.default_layer(view.report)
        return (gr.Slider(maximum=rep.steps - 1, value=rep.steps // 2),
                gr.Dropdown(choices=C.layer_choices(rep), value=first),
                C.preview_image(ctx, view, rep.steps // 2, first))

    inputs = [shared.checkpoint, shared.scene, shared.sample, settings.steps, settings.guidance, settings.seed,
              settings.command]
    vel_stop.click(shared.stop, None, vel_status, queue=False, **PRIVATE)
    vel_btn.click(shared.arm, None, None, queue=False, **PRIVATE).then(
        run_velocity, inputs, [heatmap, curves, view, vel_json, vel_status], api_name="velocity", **HEAVY).success(
        last_preview, view, [step, layer, preview], **PRIVATE)
    step.release(show_preview, [view, step, layer], preview, api_name="velocity_preview")
    layer.input(show_preview, [view, step, layer], preview, **PRIVATE)


TOY_GUIDE = (
    "The grey shape is a density we know exactly: a tree whose branches get thinner and lighter. A small flow model "
    "was trained on it by our own stage-1 code, with an intermediate head after block 2 of 6 (as Internal Guidance "
    "puts one after block 8 of 28). Arrows show where a sample moves at the noise level σ on the slider (−v: the "
    "sampler steps σ down), at one common scale across the three panels.\n\n"
    "- **Orange, the head** `v_i`: a shallow, weaker model. It points to where the mass is (the trunk), not along the "
    "thin branches.\n- **Blue, the final output** `v_f`: better, but it still leaves some samples between branches.\n"
    "- **Green, guided** `v_w = v_i + w (v_f − v_i)`: for w > 1 it steps *away* from the head's error, so samples "
    "commit to a branch; w = 1 is the plain model, w = 0 the head alone. Press ▶ to watch the samples move from "
    "noise (σ = 1) to data (σ = 0); red crosses are samples off the tree (below the density's own 1st percentile).\n\n"
    "Below, the share of samples off the tree against w for this model. What the study found (5 seeds, "
    "docs/study.md §1): guidance helps a given IG model (w = 1.4 beats w = 1), but training the head costs about "
    "what guidance wins back, so an IG model at w = 1.4 is not better than a plain model trained as long.")


SWEEP_GUIDE = (
    "The same guidance on the world model itself, read by the video judge (a network trained to read the ego's "
    "motion and the vehicle ahead from rendered clips, validated before use) on held-out clips. Every w samples the "
    "same clips from the same noise, so differences between w are the guidance's, not the noise's.\n\n"
    "- **Left**: the Fréchet distance between the judge's features of the generated futures and of the real ones "
    "(lower: closer to real video). Dashed lines: repeating the last frame, copying the context forward, and two "
    "halves of the real clips (the floor: what sampling noise alone gives).\n"
    "- **Right**: how far from the truth the judge reads the ego's position in the generated future, averaged over "
    "the horizon (solid) and at its last second (dotted), with 95 % intervals over clips; the dashed lines here are "
    "the baselines' and the floor's means over the horizon (compare them with the solid line).\n"
    "- **Below**: one clip's future at +1, +2 and +4 s, the truth on top and a row per w.\n\n"
    "On the toy, w > 1 pulls samples onto the branches. Here, look for whether the curves move with w at all and "
    "whether any w reaches the dashed lines: if they stay flat, the head and the final output disagree little and "
    "guidance changes little of what the judge can read. The grey vertical line is the slider's w; the dotted one "
    "the checkpoint's default.")


def _intro(summary: str, guide: str, open_guide: bool = False) -> None:
    """A view's first lines: what it shows, then its "What to look for" note."""
    gr.Markdown(summary)
    with gr.Accordion("What to look for", open=open_guide):
        gr.Markdown(guide)


def _toy_tab(shared: _Shared) -> None:
    ctx = shared.ctx
    with gr.Tab("Guidance (toy and real clips)", id="toy"):
        _intro("Intermediate guidance on a 2-D density where every number is exact: the head's, the final and the "
               "guided velocity field, and samples moving under them.", TOY_GUIDE, open_guide=True)
        with gr.Row():
            toy_w = gr.Slider(V.GUIDANCE_RANGE[0], 3.0, value=1.4, step=0.05, label="Guidance w", scale=3,
                              elem_id="toy-w")
            toy_seed = gr.Number(0, precision=0, label="Sampling seed", minimum=0, maximum=V.MAX_SEED, scale=1)
            toy_btn = gr.Button("Show", variant="primary", scale=1)
        toy_note = gr.Markdown(elem_classes="status-line", elem_id="toy-note")
        toy_fields = gr.Plot(label="Velocity fields and samples", elem_id="toy-fields", show_label=False)
        toy_sweep = gr.Plot(label="Samples off the tree against w", elem_id="toy-sweep", show_label=False)
        gr.Markdown("### On real clips: what the video judge reads against w")
        with gr.Accordion("What to look for", open=False):
            gr.Markdown(SWEEP_GUIDE)
        sweeps = C.sweep_names(ctx)
        gs_name = gr.Dropdown(sweeps, value=sweeps[0] if sweeps else None, label="Guidance sweep (assets/ablation/)",
                              elem_id="sweep-name")
        gs_note = gr.Markdown(elem_classes="status-line", elem_id="sweep-note")
        gs_plot = gr.Plot(label="The judge against w", elem_id="sweep-plot", show_label=False)
        gr.Markdown("One held-out clip's future at +1, +2 and +4 s: the truth on top, then a row per w.")
        gs_frames = gr.Image(label="Futures per w", elem_id="sweep-frames", show_label=False, interactive=False,
                             buttons=["download"])
        _export(shared, "toy", [toy_fields, toy_sweep, gs_plot])

    def show_toy(guidance, seed):  # parameter names are the API's
        return C.toy(ctx, guidance, seed)

    def show_sweep(sweep, guidance):  # parameter names are the API's
        return C.guidance_sweep_view(ctx, sweep, guidance)

    outputs = [toy_fields, toy_sweep, toy_note]
    toy_btn.click(show_toy, [toy_w, toy_seed], outputs, api_name="toy", **HEAVY)
    toy_w.release(show_toy, [toy_w, toy_seed], outputs, **PRIVATE, **HEAVY)
    sweep_out = [gs_plot, gs_frames, gs_note]
    gs_name.change(show_sweep, [gs_name, toy_w], sweep_out, api_name="guidance_sweep")
    toy_w.release(show_sweep, [gs_name, toy_w], sweep_out, **PRIVATE)
    shared.demo.load(show_sweep, [gs_name, toy_w], sweep_out, **PRIVATE)


ALIGNMENT_GUIDE = (
    "ReWorld trains the planner (Action DiT) so that its features, through a small projector, point the same way as "
    "the Video DiT's representation of the future (cross-modal alignment, REPA-style), and so that the expert's "
    "pooled feature is closer to that representation than the features of *hard negatives*: plausible-looking "
    "trajectories that collide, leave the road or get too close (an InfoNCE loss).\n\n"
    "- **Top**: for the logged (expert) trajectory, the cosine between each planner block's waypoint token and the "
    "video target; ★ marks the block the alignment loss supervises. A trained ReWorld checkpoint shows high values "
    "on that row; blocks after it inherit some of it.\n"
    "- **Bottom**: the same cosine for the pooled feature of the expert (★) and of each hard negative, coloured by "
    "how it fails. Separation means the expert sits above the negatives; the title gives the expert's share under the "
    "loss's softmax (1 / N is chance).\n\n"
    "One clip is an anecdote: the Representations tab measures the same separation over many held-out clips, "
    "with numbers that do not depend on a picture.")


def _alignment_tab(shared: _Shared, seed: gr.Number, tabs: gr.Tabs) -> None:
    ctx = shared.ctx
    with gr.Tab("Alignment", id="alignment"):
        _intro("For the picked sample: the planner's features against the video representation they are aligned "
               "to, and the expert trajectory against its hard negatives.", ALIGNMENT_GUIDE)
        with gr.Row():
            al_ckpts = gr.Dropdown(ctx.names, value=ctx.names[:2], multiselect=True, max_choices=2,
                                   label="Checkpoints (one or two)", scale=3)
            al_k = gr.Slider(1, 16, value=8, step=1, label="Hard negatives", scale=2)
            al_btn = gr.Button("Show alignment", variant="primary", scale=1)
            al_more = gr.Button("Over many clips → Representations", scale=1)
        al_note = gr.Markdown(elem_classes="status-line", elem_id="al-note")
        al_plot = gr.Plot(label="Alignment", elem_id="al-plot", show_label=False)
        _export(shared, "alignment", [al_plot])
        with gr.Accordion("Numbers (JSON)", open=False):
            al_json = gr.JSON()

    def show_alignment(checkpoints, scene, sample, negatives, seed):  # parameter names are the API's
        return C.alignment(ctx, checkpoints, scene, sample, negatives, seed)

    al_btn.click(show_alignment, [al_ckpts, shared.scene, shared.sample, al_k, seed], [al_plot, al_note, al_json],
                 api_name="alignment", **HEAVY)
    al_more.click(lambda: gr.Tabs(selected="representations"), None, tabs, **PRIVATE)


def _representations_tab(shared: _Shared, seed: gr.Number) -> None:
    ctx = shared.ctx
    with gr.Tab("Representations", id="representations"):
        gr.Markdown("Action DiT features of each clip's expert trajectory and its hard negatives (labelled "
                    "by PDM failure), embedded with UMAP; the separation numbers are measured on the raw "
                    "features, so they do not depend on the picture.")
        with gr.Row():
            emb_ckpts = gr.Dropdown(ctx.names, value=ctx.names[:2], multiselect=True, max_choices=2,
                                    label="Checkpoints (one or two)")
            n_clips = gr.Slider(2, 64, value=16, step=1, label="Clips", elem_id="emb-clips")
            k = gr.Slider(1, 16, value=8, step=1, label="Hard negatives per clip")
            dims = gr.Radio([2, 3], value=2, label="UMAP dimensions")
            emb_btn = gr.Button("Embed", variant="primary")
        with gr.Row():
            emb_a = gr.Plot(label="UMAP (first checkpoint)", elem_id="emb-a")
            emb_b = gr.Plot(label="UMAP (second checkpoint)")
        separation = gr.Plot(label="Separation of experts from hard negatives", elem_id="emb-separation")
        _export(shared, "representations", [emb_a, emb_b, separation])
        with gr.Accordion("Numbers (JSON)", open=False):
            emb_json = gr.JSON()

    def run_embedding(checkpoints, clips, negatives, dims, seed, request: gr.Request, progress=gr.Progress()):
        return C.embedding(ctx, checkpoints, clips, negatives, dims, seed, _session(request), progress)

    emb_btn.click(run_embedding, [emb_ckpts, n_clips, k, dims, seed], [emb_a, emb_b, separation, emb_json],
                  api_name="embedding", **HEAVY)


def _compare_tab(shared: _Shared, settings: _Settings) -> None:
    """Two checkpoints side by side with the *Generate & plan* settings; below, the ablation training curves."""
    ctx = shared.ctx
    with gr.Tab("Ablation compare", id="compare"):
        gr.Markdown("Two checkpoints on the same sample, seed and settings (those of *Generate & plan*).")
        with gr.Row():
            ckpt_a = gr.Dropdown(ctx.names, value=ctx.names[0], label="Checkpoint A")
            ckpt_b = gr.Dropdown(ctx.names, value=ctx.names[-1], label="Checkpoint B")
            cmp_btn = gr.Button("Compare", variant="primary")
            cmp_stop = gr.Button("Stop", variant="stop")
        cmp_status = gr.Markdown(elem_classes="status-line")
        with gr.Row():
            video_a = gr.Video(label="A: generated vs logged", elem_id="cmp-video-a", autoplay=True, loop=True,
                               buttons=["download"], interactive=False)
            video_b = gr.Video(label="B: generated vs logged", elem_id="cmp-video-b", autoplay=True, loop=True,
                               buttons=["download"], interactive=False)
        with gr.Row():
            bev_a = gr.Plot(label="A: trajectories", elem_id="cmp-bev-a")
            bev_b = gr.Plot(label="B: trajectories")
        cmp_table = gr.Dataframe(label="Side by side", elem_id="cmp-table", interactive=False)
        with gr.Row():
            curves_a = gr.Plot(label="A: intermediate vs final velocity")
            curves_b = gr.Plot(label="B: intermediate vs final velocity")
        gr.Markdown("### Ablation training curves")
        files = C.ablation_files(ctx)
        csv = gr.Dropdown(files, value=files[0] if files else None, label="Ablation CSV (assets/ablation/)")
        abl_note = gr.Markdown(elem_id="abl-note")
        abl_plot = gr.Plot(label="Training curves")
        abl_verdicts = gr.Dataframe(label="Pre-registered comparisons and verdicts", elem_id="abl-verdicts",
                                    interactive=False)
        _export(shared, "compare", [bev_a, bev_b, curves_a, curves_b, abl_plot])

    def run_compare(checkpoint_a, checkpoint_b, scene, sample, steps, guidance, seed, samples, command,
                    request: gr.Request, progress=gr.Progress()):
        return C.compare(ctx, checkpoint_a, checkpoint_b, scene, sample, steps, guidance, seed, samples, command,
                         _session(request), progress)

    def show_ablation(csv):
        return C.ablation(ctx, csv)

    inputs = [ckpt_a, ckpt_b, shared.scene, shared.sample, settings.steps, settings.guidance, settings.seed,
              settings.samples, settings.command]
    cmp_stop.click(shared.stop, None, cmp_status, queue=False, **PRIVATE)
    cmp_btn.click(shared.arm, None, None, queue=False, **PRIVATE).then(
        run_compare, inputs, [video_a, video_b, bev_a, bev_b, cmp_table, curves_a, curves_b], api_name="compare",
        **HEAVY)
    csv.change(show_ablation, csv, [abl_plot, abl_note, abl_verdicts], api_name="ablation")
    shared.demo.load(lambda name: C.ablation(ctx, name), csv, [abl_plot, abl_note, abl_verdicts], **PRIVATE)
