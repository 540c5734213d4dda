"""Callback tests of the app on tiny untrained pipelines over the tiny synthetic world."""
from __future__ import annotations

import math
import re

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from test_app_support import tiny_demo, tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def app(tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("app-out")
    demo, ctx = tiny_demo(tiny_config, out)
    return demo, ctx


@pytest.fixture(scope="module")
def ctx(app):
    return app[1]


@pytest.fixture(scope="module")
def scene(ctx):
    return next(iter(ctx.scenes))


def test_list_scenes_and_scene_view(ctx, scene):
    from app import callbacks as C

    listed = C.list_scenes(ctx)
    assert [s["scene"] for s in listed] == sorted(ctx.scenes) and len(listed) == 4
    assert all(s["samples"] >= 1 and s["split"] in ("train", "val") for s in listed)
    img, fig, info = C.scene_view(ctx, scene, 0)
    d = ctx.data_cfg
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[1] >= d.context_frames * d.image_width * 2
    names = {t.name for t in fig.data}
    assert {"drivable area", "ego", "expert"} <= names
    assert info["scene"] == scene and info["sample_index"] == 0 and info["has_map"]
    assert info["command"] in ("left", "straight", "right")


def test_generate_writes_browser_playable_h264(ctx, scene):
    import av

    from app import callbacks as C

    path, status = C.generate(ctx, "reworld", scene, 0, 3, 1.4, 7, "logged", session="s-gen")
    assert path.endswith(".mp4") and str(ctx.out_dir) in path
    with av.open(path) as f:
        s = f.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    d = ctx.data_cfg
    assert len(frames) == d.context_frames + d.future_frames
    h, w = frames[0].shape[:2]
    assert h % 2 == 0 and w % 2 == 0 and w >= 2 * 4 * d.image_width and h >= 4 * d.image_height
    # during the context both panels show the same observed frame
    left, right = frames[0][30:, : w // 2 - 4].astype(int), frames[0][30:, w // 2 + 2: w - 2].astype(int)
    assert np.abs(left[:, : right.shape[1]] - right[:, : left.shape[1]]).mean() < 8
    assert "`cpu`" in status and " s**" in status and "3 steps" in status and "seed 7" in status
    # same seed, same video
    path2, _ = C.generate(ctx, "reworld", scene, 0, 3, 1.4, 7, "logged", session="s-gen")
    with av.open(path) as a, av.open(path2) as b:
        fa = [x.to_ndarray() for x in a.decode(video=0)]
        fb = [x.to_ndarray() for x in b.decode(video=0)]
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))


def test_yuv420p_planes_are_bt601_limited_range_with_2x2_chroma_means():
    """Known answers: BT.601 studio-range red, white and black; a 2×2 block's chroma is the mean of its pixels'."""
    from app.media import yuv420p_frame

    def planes(rgb):
        f = yuv420p_frame(np.asarray(rgb, np.uint8))
        return [np.frombuffer(bytes(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in f.planes]

    for colour, yuv in (((255, 0, 0), (81, 90, 240)), ((255, 255, 255), (235, 128, 128)), ((0, 0, 0), (16, 128, 128)),
                        ((0, 0, 255), (41, 240, 110))):
        got = planes(np.tile(np.array(colour, np.uint8), (4, 6, 1)))
        assert [int(np.unique(p)[0]) for p in got] == list(yuv) and all(len(np.unique(p)) == 1 for p in got), colour
    block = np.zeros((2, 2, 3), np.uint8)
    block[0, 0] = (255, 0, 0)  # one red pixel of four: chroma a quarter of the way from grey to red's
    y, u, v = planes(block)
    assert y.tolist() == [[81, 16], [16, 16]] and u.tolist() == [[round(128 - 37.797 / 4)]] \
        and v.tolist() == [[round(128 + 112 / 4)]]


def test_the_same_frames_give_the_same_video(tmp_path):
    """The video is a function of the frames: rows whose width leaves padding in the encoder's buffers
    (516 px here) once made two encodings of the same frames decode to different pictures. What is asserted is
    what a viewer sees, the decoded pixels; a difference in bytes alone is reported as a warning with where it
    starts (one CI run of 2026-12-02 found the first of four encodings' bytes different from the others' and
    could not be reproduced on 2 cores, under load, under tcmalloc or glibc with perturbed heaps)."""
    import warnings

    import av

    from app.media import write_mp4

    yy, xx = np.mgrid[0:150, 0:516]
    frames = np.zeros((6, 150, 516, 3), dtype=np.uint8)
    for i in range(6):  # colour gradients and a moving box
        frames[i, ..., 0], frames[i, ..., 1], frames[i, ..., 2] = xx * 255 // 515, yy * 255 // 149, 90
        frames[i, 40:80, 30 + 40 * i: 90 + 40 * i] = (230, 40, 40)
    a, *rest = [write_mp4(frames, tmp_path / f"{k}.mp4", 6.0) for k in range(4)]

    def planes(path):  # the decoded YUV planes, every frame
        with av.open(str(path)) as f:
            return np.stack([x.to_ndarray() for x in f.decode(video=0)]).astype(int)

    pa = planes(a)
    for k, b in enumerate(rest, 1):
        x, y = a.read_bytes(), b.read_bytes()
        if x == y:
            continue
        at = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
        pb = planes(b)
        what = f"encodings 0 and {k}: {len(x)} and {len(y)} bytes, the first difference at byte {at}"
        assert pa.shape == pb.shape and np.array_equal(pa, pb), (
            f"{what}; decoded frames that differ: "
            f"{np.argwhere((pa != pb).any(axis=(1, 2)))[:, 0].tolist() if pa.shape == pb.shape else pb.shape}")
        warnings.warn(f"{what}, the same decoded pictures")
    with av.open(str(a)) as f:
        decoded = np.stack([x.to_ndarray(format="rgb24") for x in f.decode(video=0)]).astype(int)
    assert decoded.shape == frames.shape and np.abs(decoded - frames).mean() < 3  # colours survive (BT.601)


def test_plan_draws_and_scores_every_sample(ctx, scene):
    from app import callbacks as C

    fig, table, status = C.plan(ctx, "reworld", scene, 0, 5, 1, "left", session="s-plan")
    assert len(table) == 5 and list(table.columns) == C.PDM_COLUMNS
    assert table["PDMS"].between(0, 1).all() and set(table["failure"]) <= {"safe", "collision", "off_road", "ttc"}
    drawn = [t for t in fig.data if t.name in ("safe", "collision", "off_road", "ttc")]
    assert len(drawn) == 5
    assert "5 samples" in status and "command left (override" in status and "`cpu`" in status


BAD = [
    ("generate", dict(steps=0), "steps"),
    ("generate", dict(steps=201), "steps"),
    ("generate", dict(steps=2.5), "whole number"),
    ("generate", dict(guidance=math.nan), "guidance"),
    ("generate", dict(guidance=math.inf), "guidance"),
    ("generate", dict(guidance=5.5), "guidance"),
    ("generate", dict(seed=-1), "seed"),
    ("generate", dict(seed=2**40), "seed"),
    ("generate", dict(seed="12"), "seed"),
    ("generate", dict(command="north"), "command"),
    ("generate", dict(checkpoint="nope"), "unknown checkpoint"),
    ("generate", dict(checkpoint="../reworld"), "not a path"),
    ("generate", dict(checkpoint="/etc/passwd"), "not a path"),
    ("generate", dict(scene="scene-9999"), "unknown scene"),
    ("generate", dict(scene="../../etc"), "not a path"),
    ("generate", dict(scene="http://example.com/x"), "not a path"),
    ("generate", dict(index=999), "sample index"),
    ("generate", dict(index=-1), "sample index"),
    ("plan", dict(num_samples=0), "trajectory samples"),
    ("plan", dict(num_samples=65), "trajectory samples"),
    ("plan", dict(seed=math.nan), "seed"),
    ("velocity", dict(steps=-3), "steps"),
    ("velocity", dict(guidance=-0.1), "guidance"),
]


@pytest.mark.parametrize("fn,bad,message", BAD, ids=[f"{f}-{list(b)[0]}={b[list(b)[0]]!r}" for f, b, _ in BAD])
def test_bad_values_are_rejected_before_the_model_runs(ctx, scene, monkeypatch, fn, bad, message):
    from app import callbacks as C

    calls = []
    for pipe in ctx.pipelines.values():
        for method in ("generate", "plan", "planner_features", "encode_context"):
            monkeypatch.setattr(pipe, method, lambda *a, _m=method, **k: calls.append(_m))
    args = dict(checkpoint="reworld", scene=scene, index=0, steps=2, guidance=1.0, seed=0, command="logged",
                num_samples=2)
    args.update(bad)
    with pytest.raises(gr.Error, match=message):
        if fn == "plan":
            C.plan(ctx, args["checkpoint"], args["scene"], args["index"], args["num_samples"], args["seed"],
                   args["command"], session="bad")
        else:
            getattr(C, fn)(ctx, args["checkpoint"], args["scene"], args["index"], args["steps"], args["guidance"],
                           args["seed"], args["command"], session="bad")
    assert calls == []


def test_bad_embedding_and_compare_values(ctx, scene, monkeypatch):
    from app import callbacks as C

    calls = []
    for pipe in ctx.pipelines.values():
        monkeypatch.setattr(pipe, "planner_features", lambda *a, **k: calls.append("planner_features"))
        monkeypatch.setattr(pipe, "generate", lambda *a, **k: calls.append("generate"))
    for ckpts, n, k, dims, message in ((["reworld", "vanilla", "reworld"], 4, 4, 2, "pick 1 to 2"),
                                       (["reworld", "reworld"], 4, 4, 2, "twice"), (["x/y"], 4, 4, 2, "not a path"),
                                       (["reworld"], 1, 4, 2, "clips"), (["reworld"], 4, 0, 2, "hard negatives"),
                                       (["reworld"], 4, 4, 4, "UMAP dimensions")):
        with pytest.raises(gr.Error, match=message):
            C.embedding(ctx, ckpts, n, k, dims, 0)
    with pytest.raises(gr.Error, match="unknown checkpoint"):
        C.compare(ctx, "reworld", "other", scene, 0, 2, 1.0, 0, 2, "logged")
    with pytest.raises(gr.Error, match="trajectory samples"):
        C.compare(ctx, "reworld", "vanilla", scene, 0, 2, 1.0, 0, 100, "logged")
    with pytest.raises(gr.Error, match="ablation CSV|No ablation"):
        C.ablation(ctx, "../secrets.csv")
    assert calls == []


def test_stop_really_stops_between_steps_and_a_stray_stop_is_harmless(ctx, scene, capsys):
    from app import callbacks as C

    session = "s-stop"

    def progress(fraction, desc=""):
        if "step 2/" in desc:
            assert ctx.stops.stop(session)  # the job is running: the request is taken

    with pytest.raises(gr.Error, match="Stopped after 2 of 50 steps") as stopped:
        C.generate(ctx, "reworld", scene, 0, 50, 1.0, 0, "logged", session=session, progress=progress)
    # it reads "Stopped", not "Error", and the server log has one line, no traceback
    assert stopped.value.title == "Stopped" and not stopped.value.print_exception
    assert capsys.readouterr().err.strip().splitlines()[-1] == "app: generate: Stopped after 2 of 50 steps."
    with pytest.raises(gr.Error, match="steps must be") as rejected:
        C.generate(ctx, "reworld", scene, 0, 0, 1.0, 0, "logged", session=session)
    assert rejected.value.title == "Error" and not rejected.value.print_exception
    assert not ctx.model_lock.locked()
    assert not ctx.stops.stop(session)  # nothing runs now: nothing to stop, nothing remembered
    path, _ = C.generate(ctx, "reworld", scene, 0, 2, 1.0, 0, "logged", session=session)
    assert path.endswith(".mp4")
    # another session's stop does not touch this one
    other = []
    C.generate(ctx, "reworld", scene, 0, 3, 1.0, 0, "logged", session="a",
               progress=lambda f, desc="": other.append(ctx.stops.stop("b")))
    assert other and not any(other)
    # a stop clicked while the job still waits in the queue stops it before its first step
    ctx.stops.arm("queued")
    assert ctx.stops.stop("queued")
    with pytest.raises(gr.Error, match="Stopped after 0 of 3 steps"):
        C.generate(ctx, "reworld", scene, 0, 3, 1.0, 0, "logged", session="queued")
    # Generate & plan arms two jobs: a Stop clicked while the plan runs stops the video that follows it
    ctx.stops.arm("chain", jobs=2)
    ctx.stops.start("chain")
    assert ctx.stops.stop("chain")
    ctx.stops.finish("chain")  # the plan ends; the request is kept for the video
    with pytest.raises(gr.Error, match="Stopped after 0 of 3 steps"):
        C.generate(ctx, "reworld", scene, 0, 3, 1.0, 0, "logged", session="chain")
    assert not ctx.stops.stop("chain")  # and then it is forgotten
    # an armed job that its own validation rejects still gives its share back: no stale request for the next run
    ctx.stops.arm("rejected")
    with pytest.raises(gr.Error, match="steps must be"):
        C.generate(ctx, "reworld", scene, 0, 0, 1.0, 0, "logged", session="rejected")
    assert not ctx.stops.stop("rejected")


def test_generate_and_plan_one_event(ctx, monkeypatch):
    """The page's Generate & plan as one event: the plan first, then the video; a Stop during the plan reaches the
    video; a failed plan says why in its status line and the video still comes; no stale stop is left."""
    from app import callbacks as C

    scene = list(ctx.scenes)[1]
    out = list(C.generate_and_plan(ctx, "reworld", scene, 0, 3, 2, 1.0, 0, "logged", session="both"))
    assert len(out) == 2
    fig, table, plan_status, video, gen_status = out[0]
    assert fig is not None and len(table) == 3 and "planned" in plan_status and gen_status == "Generating …"
    assert out[1][3].endswith(".mp4") and "generated" in out[1][4] and not ctx.stops.stop("both")

    # Stop clicked while the plan runs (both jobs armed, as the page does): the video stops before its first step
    ctx.stops.arm("both", jobs=2)
    pipe = ctx.pipeline("reworld")
    real_plan = pipe.plan

    def plan_then_stop(*a, **k):
        ctx.stops.stop("both")
        return real_plan(*a, **k)

    monkeypatch.setattr(pipe, "plan", plan_then_stop)
    events = C.generate_and_plan(ctx, "reworld", scene, 0, 3, 2, 1.0, 0, "logged", session="both")
    assert "planned" in next(events)[2]
    with pytest.raises(gr.Error, match="Stopped after 0 of 2 steps"):
        next(events)
    assert not ctx.stops.stop("both")

    # a plan that fails: its reason in the plan's status, and the video still comes
    def broken(*a, **k):
        raise ValueError("no map for this clip")

    monkeypatch.setattr(pipe, "plan", broken)
    out = list(C.generate_and_plan(ctx, "reworld", scene, 0, 3, 2, 1.0, 0, "logged", session="both"))
    assert "not planned" in out[0][2] and "no map for this clip" in out[0][2]
    assert out[1][3].endswith(".mp4") and not ctx.stops.stop("both")


def test_generate_and_plan_on_pick_runs_each_view_once(ctx):
    """Run on every pick: a pick runs Generate & plan while its tab is open and the box is ticked, once per settings
    (the slider's two events, or opening the tab again, do not rerun what the tab shows); another sample runs."""
    from app import callbacks as C

    scene = list(ctx.scenes)[2]
    values = ("reworld", scene, 0, 2, 2, 1.0, 0, "logged")
    skipped = list(C.generate_and_plan_on_pick(ctx, "scene", True, values, "pick"))  # another tab is open
    assert len(skipped) == 1 and all(isinstance(x, dict) and x.get("__type__") == "update" for x in skipped[0])
    assert len(list(C.generate_and_plan_on_pick(ctx, "generate", False, values, "pick"))) == 1  # box unticked
    ran = list(C.generate_and_plan_on_pick(ctx, "generate", True, values, "pick"))
    assert len(ran) == 2 and ran[1][3].endswith(".mp4") and "sample 0" in ran[1][4]
    assert len(list(C.generate_and_plan_on_pick(ctx, "generate", True, values, "pick"))) == 1  # shown: not rerun
    assert len(list(C.generate_and_plan_on_pick(ctx, "generate", True, values, "other session"))) == 2
    moved = ("reworld", scene, 1, *values[3:])
    out = list(C.generate_and_plan_on_pick(ctx, "generate", True, moved, "pick"))
    assert len(out) == 2 and "sample 1" in out[1][4]
    assert not ctx.stops.stop("pick")  # both armed jobs were taken: nothing left to stop


def test_url_state_restores_a_shared_view_and_ignores_bad_values(ctx, capsys):
    from app import callbacks as C
    from app.demo import TABS

    names = list(ctx.scenes)
    last = len(ctx.scenes[names[1]]) - 1
    r = C.url_state(ctx, {"scene": names[1], "sample": str(last), "checkpoint": "vanilla", "seed": "7",
                          "guidance": "1.2", "tab": "velocity"}, TABS)
    assert r == {"scene": names[1], "sample": last, "checkpoint": "vanilla", "seed": 7, "guidance": 1.2,
                 "tab": "velocity"}
    assert C.url_state(ctx, {}, TABS) == {"scene": names[0], "sample": 0, "checkpoint": ctx.names[0], "seed": None,
                                          "guidance": None, "tab": None}
    bad = C.url_state(ctx, {"scene": "../etc", "sample": "999", "checkpoint": "x", "seed": "-1", "guidance": "nan",
                            "tab": "admin"}, TABS)
    assert bad == C.url_state(ctx, {}, TABS)
    log = capsys.readouterr().err.splitlines()
    assert len(log) == 6 and all(line.startswith("app: url: ignored ") for line in log)


def test_velocity_view_lens_on_every_block_and_layer_previews(ctx, scene):
    from app import callbacks as C

    pipe = ctx.pipelines["reworld"]
    n_blocks = pipe.video_dit.config.num_layers
    heatmap, curves, view, numbers, status = C.velocity(ctx, "reworld", scene, 0, 3, 1.4, 0, "logged", session="v")
    rows = list(heatmap.data[0].y)
    # one row per block (the output layer on its hidden state) and one per trained head, marked
    assert heatmap.data[0].z.shape == (n_blocks + len(pipe.trained_heads), 3)
    assert [r for r in rows if r.startswith("★")] == [f"★ head on block {b} (trained)" for b in pipe.trained_heads]
    z = np.asarray(heatmap.data[0].z, dtype=float)
    out = rows.index(f"block {n_blocks - 1} (= output)")
    assert np.all(np.isfinite(z)) and np.allclose(z[out], 1.0)  # the last block's lens is the output itself
    assert numbers["steps"] == 3 and numbers["device"] == "cpu" and len(numbers["per_block"]["1"]["cosine"]) == 3
    assert set(numbers["lens"]) == {str(b) for b in range(n_blocks)}
    # the curves: 3 per head, v_f, and cosine + RMS for each block's lens but the last
    assert len(curves.data) == 3 * len(pipe.trained_heads) + 1 + 2 * (n_blocks - 1)
    keys = [k for _, k in C.layer_choices(view.report)]
    assert keys == [k for b in range(n_blocks) for k in [f"block_{b}"] + ([f"head_{b}"] if b in pipe.trained_heads
                                                                          else [])]
    d = ctx.data_cfg
    img0, img2 = C.preview_image(ctx, view, 0, "block_0"), C.preview_image(ctx, view, 2, "block_0")
    assert img0.shape == img2.shape and img0.shape[0] >= 3 * 3 * d.image_height  # layer, final, difference (×3)
    assert not np.array_equal(img0, img2)  # the x0 prediction changes over the run
    head = C.preview_image(ctx, view, 1, None)  # the default layer: the trained head
    assert head.shape == img0.shape and (1, "head_1") in view.decoded
    p = view.decoded[(1, "head_1")]
    diff = np.abs(p.layer.astype(int) - p.final.astype(int)).mean(-1)
    assert p.mean_levels == pytest.approx(diff.mean()) and 1.0 <= p.gain <= 64.0
    with pytest.raises(gr.Error, match="step"):
        C.preview_image(ctx, view, 3, "block_0")
    with pytest.raises(gr.Error, match="unknown layer"):
        C.preview_image(ctx, view, 0, "block_99")
    with pytest.raises(gr.Error, match="run the velocity analysis first"):
        C.preview_image(ctx, None, 0, None)


def test_embedding_one_and_two_checkpoints_cached(ctx, monkeypatch):
    from analysis import representations as R

    from app import callbacks as C

    fits = []

    def fake_fit(feats, n_components, **kw):  # UMAP itself is tested in test_analysis; keep this test fast
        fits.append(len(feats))
        return np.asarray(feats[:, :n_components], dtype=np.float32)

    monkeypatch.setattr(R, "_fit_umap", fake_fit)
    a, b, sep, numbers = C.embedding(ctx, ["reworld"], 3, 4, 2, 0)
    assert b is None and a.data and numbers["clips"] == 3
    # held-out clips only, and the figure says so
    indices, split = C.embedding_clips(ctx, 3)
    assert split == numbers["split"] == "val" and "held-out (val) clips" in a.layout.title.text
    assert all(ctx.split_of[ctx.dataset.samples[i].scene_name] == "val" for i in indices)
    entry = numbers["checkpoints"]["reworld"]
    assert entry["points"] == sum(entry["counts"].values()) and entry["counts"]["expert"] == 3
    calls = []
    pipe = ctx.pipelines["reworld"]
    original = pipe.planner_features
    monkeypatch.setattr(pipe, "planner_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    a, b, sep, numbers = C.embedding(ctx, ["reworld", "vanilla"], 3, 4, 3, 0)
    assert calls == []  # the first checkpoint's features came from the cache
    assert b is not None and a.data[0].type == "scatter3d"
    assert set(numbers["checkpoints"]) == {"reworld", "vanilla"}


def test_compare_two_checkpoints_on_the_same_sample(ctx, scene):
    from app import callbacks as C

    va, vb, bev_a, bev_b, table, curves_a, curves_b = C.compare(ctx, "reworld", "vanilla", scene, 0, 2, 1.0, 3, 3,
                                                                "logged")
    assert va.endswith(".mp4") and vb.endswith(".mp4") and va != vb
    assert list(table["checkpoint"])[:2] == ["reworld", "vanilla"] and table["mean PDMS"].notna().all()
    # the third row: A − B paired by trajectory sample, the mean and its bootstrap interval
    paired = table.iloc[2]
    assert paired["checkpoint"].startswith("A − B, paired by sample")
    mean, lo, hi = (float(v) for v in re.match(r"([-+][\d.]+) \[([-+][\d.]+), ([-+][\d.]+)\]",
                                                paired["mean PDMS"]).groups())
    assert mean == pytest.approx(table.iloc[0]["mean PDMS"] - table.iloc[1]["mean PDMS"], abs=2e-3)
    assert lo <= mean <= hi
    assert bev_a is not None and bev_b is not None and curves_a is not None and curves_b is not None


def test_ablation_panel_with_and_without_data(ctx, tmp_path, monkeypatch):
    from app import callbacks as C

    monkeypatch.setattr(ctx, "ablation_dir", tmp_path / "absent")
    fig, note, verdicts = C.ablation(ctx, None)
    assert fig is None and "No ablation data" in note and verdicts.empty
    monkeypatch.setattr(ctx, "ablation_dir", tmp_path)
    (tmp_path / "curves.csv").write_text("step,run,seed,metric,value\n0,vanilla,0,val/loss,1.0\n"
                                         "10,vanilla,0,val/loss,0.5\n"
                                         "0,reworld,0,val/loss,1.0\n10,reworld,0,val/loss,0.4\n")
    fig, note, verdicts = C.ablation(ctx, "curves.csv")
    assert len(fig.data) == 2 and "vanilla" in note and verdicts.empty
    with pytest.raises(gr.Error, match="unknown ablation CSV"):
        C.ablation(ctx, "other.csv")
    # the claims study's parts come first, in the study's order, so that the tab opens on the toy's verdicts
    for name in ("planner_study.csv", "a_first.csv", "finetune_study.csv", "guidance_toy.csv"):
        (tmp_path / name).write_text("arm,seed,metric,value\nvanilla,0,pdms,0.8\n")
    assert C.ablation_files(ctx) == ["guidance_toy.csv", "finetune_study.csv", "planner_study.csv", "a_first.csv",
                                     "curves.csv"]
    # one folder down only a study part's second ledger (its CSV with the results JSON beside it), not score files
    (tmp_path / "c3-fixed").mkdir()
    (tmp_path / "c3-fixed" / "planner_study.csv").write_text("arm,seed,metric,value\nvanilla,0,pdms,0.8\n")
    (tmp_path / "c3-fixed" / "planner_study.json").write_text("{}")
    (tmp_path / "c3-fixed" / "clips.csv").write_text("arm,seed,token,pdms\nvanilla,0,t,0.8\n")
    assert C.ablation_files(ctx)[2:4] == ["c3-fixed/planner_study.csv", "planner_study.csv"]
    assert "c3-fixed/clips.csv" not in C.ablation_files(ctx)
    for bad in ("c3-fixed/clips.csv", "../planner_study.csv", "/etc/passwd", "c3-fixed/../planner_study.csv",
                "http://x/y.csv"):
        with pytest.raises(gr.Error, match="ablation CSV"):
            C.ablation(ctx, bad)


def test_ablation_panel_shows_the_study_verdicts(ctx, tmp_path, monkeypatch):
    """A claims-study part's CSV comes with its registered comparisons and verdicts (from the JSON beside it)."""
    import json
    import shutil

    from app import callbacks as C
    from reworld.paths import ASSETS

    for suffix in (".csv", ".json"):
        shutil.copy(ASSETS / "ablation" / f"guidance_toy{suffix}", tmp_path)
    monkeypatch.setattr(ctx, "ablation_dir", tmp_path)
    fig, note, verdicts = C.ablation(ctx, "guidance_toy.csv")
    study = json.loads((tmp_path / "guidance_toy.json").read_text())["comparisons"]
    assert list(verdicts["comparison"]) == list(study) and list(verdicts["verdict"]) == [
        c["verdict"] for c in study.values()]
    assert "docs/study.md" in note and fig is not None
    (tmp_path / "guidance_toy.json").write_text('{"comparisons": {"a": {"mean": 1}}}')
    with pytest.raises(gr.Error, match="guidance_toy.json: comparison 'a' lacks"):
        C.ablation(ctx, "guidance_toy.csv")


def test_ablation_panel_shows_the_planning_rerun(ctx, monkeypatch):
    """C3′ (the planning claim re-run on the fixed sampler, its own ledger in assets/ablation/c3-fixed/) is in the
    tab beside C3, with its arms, its verdicts as its JSON computes them, and which reading each is."""
    import json

    from app import callbacks as C
    from reworld.paths import ASSETS

    monkeypatch.setattr(ctx, "ablation_dir", ASSETS / "ablation")
    files = C.ablation_files(ctx)
    assert files.index("c3-fixed/planner_study.csv") + 1 == files.index("planner_study.csv")
    fig, note, verdicts = C.ablation(ctx, "c3-fixed/planner_study.csv")
    study = json.loads((ASSETS / "ablation" / "c3-fixed" / "planner_study.json").read_text())["comparisons"]
    assert list(verdicts["verdict"]) == [c["verdict"] for c in study.values()]
    # the effect shown is the one the ledger's per-clip scores give: full − vanilla in points, paired by clip and seed
    import pandas as pd

    clips = pd.read_csv(ASSETS / "ablation" / "c3-fixed" / "planner_study" / "clips.csv")
    wide = clips.pivot_table(index=["seed", "token"], columns="arm", values="pdms")
    assert f"{100 * (wide['full'] - wide['vanilla']).mean():+.4f}" == verdicts["effect"].iloc[0]
    assert "C3′" in note and "amendment 17" in note and "vanilla" in note and fig is not None
    _, note_c3, _ = C.ablation(ctx, "planner_study.csv")
    assert "off their σ schedule" in note_c3


def test_guidance_sweep_view(ctx, tiny_sweep, tmp_path, monkeypatch):
    """The shipped sweep on real clips: its figure with the asked w marked, the frame grid, and the numbers of the
    swept w nearest it; no sweep is a note; an unknown name or a broken file a short error naming it."""
    import shutil

    from app import callbacks as C

    monkeypatch.setattr(ctx, "ablation_dir", tmp_path / "absent")
    fig, image, note = C.guidance_sweep_view(ctx, None, 1.4)
    assert fig is None and image is None and "No guidance sweep" in note
    monkeypatch.setattr(ctx, "ablation_dir", tiny_sweep)
    fig, image, note = C.guidance_sweep_view(ctx, "tiny", 1.9)
    assert image.shape == np.asarray(Image.open(tiny_sweep / "guidance_sweep_tiny.png").convert("RGB")).shape
    assert "**w = 2**" in note and "nearest 1.9" in note and "against w = 1" in note
    assert any(getattr(sh, "x0", None) == 1.9 for sh in fig.layout.shapes)
    with pytest.raises(gr.Error, match="unknown guidance sweep"):
        C.guidance_sweep_view(ctx, "other", 1.0)
    bad = tmp_path / "abl"
    shutil.copytree(tiny_sweep, bad)
    (bad / "guidance_sweep_broken.json").write_text('{"rows": [')
    monkeypatch.setattr(ctx, "ablation_dir", bad)
    with pytest.raises(gr.Error, match="guidance_sweep_broken.json"):
        C.guidance_sweep_view(ctx, "broken", 1.0)


def test_create_demo_refuses_mismatched_or_path_named_checkpoints(tiny_config, tmp_path):
    from reworld.config import replace
    from reworld.data.loader import NuScenesClips

    from app.demo import create_demo

    dataset = NuScenesClips(tiny_config.data, split="all")
    pipe = tiny_pipeline(0, tiny_config.data)
    with pytest.raises(gr.Error, match="not a path"):
        create_demo({"../x": pipe}, dataset, out_dir=tmp_path)
    pipe.config = replace(pipe.config, data={"image_height": 48})
    with pytest.raises(ValueError, match="image_height 48"):
        create_demo({"a": pipe}, dataset, out_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        create_demo({}, dataset, out_dir=tmp_path)


def test_cli_refuses_share_without_auth_and_missing_checkpoints(tmp_path, capsys):
    from app.cli import main, parse_auth

    assert main(["--share"]) == 2 and "needs --auth" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    assert parse_auth("me:pw") == ("me", "pw")
    for bad in ("me", ":pw", "me:"):
        with pytest.raises(ValueError):
            parse_auth(bad)
    import socket

    with socket.socket() as busy:  # a port another app listens on: one line pointing to --port, before any loading
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port), "--checkpoint", str(tmp_path / "missing")]) == 2
        err = capsys.readouterr().err
        assert f"port {port} on 127.0.0.1 is in use" in err and "--port" in err and "Traceback" not in err
    assert main(["--port", "70000"]) == 2 and "--port must be" in capsys.readouterr().err


def test_write_mp4_refuses_odd_sizes(tmp_path):
    from app.media import write_mp4

    with pytest.raises(ValueError, match="even"):
        write_mp4(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "x.mp4", 6.0)


def test_only_the_checkpoint_at_work_keeps_its_transformers_on_the_device(tiny_config, tmp_path):
    """With offload (on by default when several checkpoints sit on an accelerator), a job moves every other
    checkpoint's Video DiT and Action DiT to host memory first; the shared VAE stays; results do not change."""
    import torch

    _, ctx = tiny_demo(tiny_config, tmp_path)
    assert ctx.offload is False  # all on the CPU: nothing to gain
    ctx.offload = True
    a, b = ctx.pipelines["reworld"], ctx.pipelines["vanilla"]
    clip = ctx.dataset[0]
    with ctx.using(a):
        before = a.generate(clip, steps=2, guidance=1.0, seed=0).frames
    assert a.resident and not b.resident
    with ctx.using(b):
        assert b.resident and not a.resident
        b.plan(clip, steps=2, num_samples=2, seed=0, score=False)
    with ctx.using(a):
        assert a.resident and not b.resident
        after = a.generate(clip, steps=2, guidance=1.0, seed=0).frames
    assert torch.equal(before, after)
    assert all(p.device == a.device for p in a.video_dit.parameters())


def test_a_head_its_run_never_trained_is_not_a_head(ctx, scene, monkeypatch):
    """A config may list a head whose run had λ_ig = 0 (the shipped vanilla): guidance on it is refused with the
    reason, the velocity view shows the lens on every block and no head, and compare runs that checkpoint at w = 1 (its own
    default) beside the other at the w asked for."""
    import dataclasses

    from reworld.config import replace

    from app import callbacks as C

    untrained = tiny_pipeline(seed=5, data_cfg=ctx.data_cfg)
    untrained.config = dataclasses.replace(replace(untrained.config, loss={"lambda_ig": 0.0}), name="untrained")
    monkeypatch.setitem(ctx.pipelines, "untrained", untrained)
    assert untrained.heads and not untrained.trained_heads and untrained.default_guidance == 1.0
    with pytest.raises(gr.Error, match="never trained .* only rescale"):
        C.generate(ctx, "untrained", scene, 0, 2, 1.4, 0, "logged")
    with pytest.raises(gr.Error, match="never trained .* only rescale"):
        C.velocity(ctx, "untrained", scene, 0, 2, 1.4, 0, "logged")
    # the lens works for any checkpoint: every block, no head row, no NaN, a preview of a block
    heatmap, curves, view, numbers, status = C.velocity(ctx, "untrained", scene, 0, 2, 1.0, 0, "logged")
    n_blocks = untrained.video_dit.config.num_layers
    assert list(heatmap.data[0].y) == [f"block {b} (lens)" for b in range(n_blocks - 1)] + [
        f"block {n_blocks - 1} (= output)"]
    assert np.all(np.isfinite(np.asarray(heatmap.data[0].z, dtype=float))) and numbers["per_block"] == {}
    assert "never trained" in status and "lens" in status and len(curves.data) == 1 + 2 * (n_blocks - 1)
    assert C.default_layer(view.report).startswith("block_") and C.preview_image(ctx, view, 1, None).ndim == 3
    *_, table, curves_a, curves_b = C.compare(ctx, "reworld", "untrained", scene, 0, 2, 1.4, 0, 2, "logged")
    assert list(table["w"])[:2] == [1.4, "1 (no trained head)"] and curves_a is not None and curves_b is not None
    assert not any(t.name and t.name.startswith("head") for t in curves_b.data)


def test_guidance_toy_view_and_its_refusals(ctx, tmp_path, monkeypatch):
    """The toy tab: three fields with one frame per sampler step, the sweep (computed once per seed), the study's
    means as reference lines; a bad w is refused before anything runs; no toy model is one clear error."""
    from analysis import guidance_toy as G
    from app import callbacks as C
    from reworld.guidance_toy import ToyConfig, save_toy, train_toy

    cfg = ToyConfig(steps=20, dim=32, sample_steps=4)
    save_toy(train_toy("ig", 2, cfg), tmp_path / "toy", "ig", 2, cfg)
    monkeypatch.setattr(ctx, "toy_dir", tmp_path / "toy")
    monkeypatch.setattr(ctx, "_toy", None)
    monkeypatch.setattr(ctx, "ablation_dir", tmp_path)
    (tmp_path / "guidance_toy.csv").write_text("arm,seed,metric,value\nvanilla,1,outlier_rate,0.1\n"
                                               "vanilla,2,outlier_rate,0.2\nIG w=w*,1,outlier_rate,0.3\n"
                                               "IG w=w*,2,outlier_rate,0.3\nvanilla,1,mmd,9.0\n")
    monkeypatch.setattr(C, "TOY_SWEEP_SAMPLES", 300)
    sweeps = []
    real = G.toy_sweep
    monkeypatch.setattr(G, "toy_sweep", lambda *a, **k: sweeps.append(1) or real(*a, **k))

    fields, sweep, text = C.toy(ctx, 1.6, 5)
    assert len(fields.frames) == 5 and "w = 1.6" in text and "vanilla 15.0%" in text
    refs = sorted(round(s.y0, 3) for s in sweep.layout.shapes if s.y0 == s.y1)
    assert refs == [0.01, 0.15, 0.3]  # exact samples, the study's vanilla and IG w* means
    C.toy(ctx, 0.5, 5)
    assert len(sweeps) == 1  # the sweep is cached per seed
    with pytest.raises(gr.Error, match="guidance"):
        C.toy(ctx, 9.0, 5)
    monkeypatch.setattr(ctx, "_toy", None)
    monkeypatch.setattr(ctx, "toy_dir", tmp_path / "absent")
    with pytest.raises(gr.Error, match="guidance-toy-model"):
        C.toy(ctx, 1.0, 0)


def test_alignment_view_side_by_side_and_honest_about_untrained_projectors(ctx, scene, monkeypatch):
    """The alignment tab: one column per checkpoint, the clip's split named; a checkpoint trained without the
    alignment and hard-negative losses is said to have an untrained projector; bad values refused."""
    from dataclasses import replace as dc_replace

    from app import callbacks as C

    fig, note, numbers = C.alignment(ctx, ["reworld", "vanilla"], scene, 0, 4, 0)
    assert len([t for t in fig.data if t.type == "heatmap"]) == 2
    assert set(numbers["checkpoints"]) == {"reworld", "vanilla"} and "split" in note
    assert "never trained" not in " ".join(a.text for a in fig.layout.annotations)
    pipe = ctx.pipelines["vanilla"]
    off = dc_replace(pipe.config, loss=dc_replace(pipe.config.loss, lambda_align=0.0, lambda_hn=0.0))
    monkeypatch.setattr(pipe, "config", off)
    fig, note, numbers = C.alignment(ctx, ["vanilla"], scene, 0, 4, 0)
    assert "projector never trained" in fig.layout.annotations[0].text and "`vanilla` was trained without" in note
    assert numbers["checkpoints"]["vanilla"]["projector_trained"] is False
    with pytest.raises(gr.Error, match="hard negatives"):
        C.alignment(ctx, ["reworld"], scene, 0, 99, 0)
    with pytest.raises(gr.Error, match="checkpoint"):
        C.alignment(ctx, ["nope"], scene, 0, 4, 0)


def test_export_writes_one_offline_interactive_page_and_checks_what_it_gets(ctx):
    """Exported figures: one HTML page with plotly.js inside (works offline) and every figure; what comes back from
    the browser is checked: plotly only, schema-valid, not empty."""
    import plotly.graph_objects as go
    from gradio.components.plot import PlotData

    from app import callbacks as C

    a = go.Figure(go.Scatter(x=[0, 1], y=[2, 3], name="first-trace"))
    b = go.Figure(go.Bar(x=["u"], y=[1], name="second-trace"))
    path = C.export_figures(ctx, "velocity", [PlotData(type="plotly", plot=a.to_json()), None,
                                              PlotData(type="plotly", plot=b.to_json())])
    page = open(path, encoding="utf-8").read()
    assert path.startswith(str(ctx.out_dir)) and path.endswith(".html")
    assert "first-trace" in page and "second-trace" in page and page.count("Plotly.newPlot") == 2
    assert "<script src=" not in page and len(page) > 1_000_000  # plotly.js embedded, once
    with pytest.raises(gr.Error, match="only plotly"):
        C.export_figures(ctx, "x", [PlotData(type="matplotlib", plot="{}")])
    with pytest.raises(gr.Error, match="not a valid figure"):
        C.export_figures(ctx, "x", [PlotData(type="plotly", plot='{"data": [{"type": "nonsense"}]}')])
    with pytest.raises(gr.Error, match="nothing to export"):
        C.export_figures(ctx, "x", [None, None])


def test_a_clips_context_is_encoded_once_for_its_plan_and_its_video(ctx, scene, monkeypatch):
    """The app's pipelines keep the last clips' encoded contexts: the plan and then the video of one clip run the
    VAE encoder once, give what an uncached pipeline gives, and a reloaded clip (new frames) is encoded again."""
    import torch

    import reworld.pipelines.world_action as W
    from app import callbacks as C

    pipe = ctx.pipelines["reworld"]
    assert pipe.context_cache_size > 0
    from reworld.models.vae import OneDNNConv3d  # and its VAE convolves on oneDNN (benchmarks/bench_conv3d.py)

    assert {type(m) for m in pipe.vae.modules() if isinstance(m, torch.nn.Conv3d)} == {OneDNNConv3d}
    pipe._context_cache.clear()
    calls = []
    real = W.encode_frames
    monkeypatch.setattr(W, "encode_frames", lambda *a, **k: calls.append(1) or real(*a, **k))
    C.plan(ctx, "reworld", scene, 1, 2, 0, "logged")
    C.generate(ctx, "reworld", scene, 1, 2, 1.0, 0, "logged")
    assert len(calls) == 1
    clip = ctx.clip(scene, 1)
    cached = pipe.encode_context(clip)
    pipe.context_cache_size = 0
    try:
        torch.testing.assert_close(cached, real(pipe.vae, clip.observation.frames[None])[:, :, :cached.shape[2]])
    finally:
        pipe.context_cache_size = 16
    from dataclasses import replace

    fresh = replace(clip, observation=replace(clip.observation, frames=clip.observation.frames.clone()))
    pipe.encode_context(fresh)
    assert len(calls) == 2


def test_a_clips_reference_progress_is_computed_once_and_scores_as_uncached(ctx, scene, monkeypatch):
    """PDM's reference (PDM-Closed's progress) depends on the scene only: two plans of one clip (other seeds,
    other sample counts) compute it once and score exactly as a pipeline without the cache does."""
    import reworld.pipelines.world_action as W

    pipe = ctx.pipelines["reworld"]
    pipe._reference_cache.clear()
    calls = []
    real = W.reference_progress
    monkeypatch.setattr(W, "reference_progress", lambda *a, **k: calls.append(1) or real(*a, **k))
    clip = ctx.clip(scene, 1)
    a = pipe.plan(clip, steps=2, num_samples=3, seed=0)
    b = pipe.plan(clip, steps=2, num_samples=2, seed=5)
    assert len(calls) == 1 and a.scores and b.scores
    pipe.context_cache_size = 0
    try:
        c = pipe.plan(clip, steps=2, num_samples=2, seed=5)
    finally:
        pipe.context_cache_size = 16
    assert [r.pdms for r in c.scores] == [r.pdms for r in b.scores] and [r.ep for r in c.scores] == [r.ep for r in b.scores]
    assert len(calls) == 1  # uncached: score_trajectories computed it itself


def test_a_clips_plan_and_video_share_their_sigma_1_pass_and_give_what_uncached_pipelines_give(ctx, scene):
    """The planner's features and the sampler's first step are one Video DiT pass when a clip is planned and
    generated with one seed: with the app's cache the pair makes 1 pass fewer (either order, guided or not), and
    its trajectories and frames are exactly an uncached pipeline's; another seed or clip does not share it."""
    import torch

    pipe = ctx.pipelines["reworld"]
    assert pipe.config.action.feature_sigma == 1.0 and pipe.trained_heads
    passes = []
    real = pipe.video_dit.forward
    pipe.video_dit.forward = lambda *a, **k: passes.append(1) or real(*a, **k)
    clip, other = ctx.clip(scene, 1), ctx.clip(scene, 2)

    def pair(first_plan: bool, w: float, seed: int = 4, video_clip=None):
        pipe._first_passes.clear()
        passes.clear()
        jobs = [lambda: pipe.plan(clip, steps=2, num_samples=3, seed=seed, score=False),
                lambda: pipe.generate(video_clip or clip, steps=3, guidance=w, seed=4)]
        out = [job() for job in (jobs if first_plan else jobs[::-1])]
        plan, video = out if first_plan else out[::-1]
        return plan.trajectories, video.frames, len(passes)

    try:
        shared = {(order, w): pair(order, w) for order in (True, False) for w in (1.0, 1.4)}
        assert all(n == 1 + 3 - 1 for _, _, n in shared.values())
        assert pair(True, 1.4, seed=5)[2] == 4 and pair(True, 1.4, video_clip=other)[2] == 4  # nothing to share
        pipe.context_cache_size = 0
        for (order, w), (traj, frames, _) in shared.items():
            ref_traj, ref_frames, n = pair(order, w)
            assert n == 4 and np.array_equal(traj, ref_traj) and torch.equal(frames, ref_frames)
    finally:
        pipe.context_cache_size = 16
        del pipe.video_dit.forward
        pipe._first_passes.clear()


def test_frame_pictures_are_the_same_pixels_made_faster(tmp_path):
    """OpenCV's nearest-neighbour upscale is np.repeat's (every factor the app uses); a caption strip is drawn once
    and reused; the PNG the scene view serves decodes to its array exactly."""
    from app import media

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    for factor in (1, 2, 3, 4):
        assert np.array_equal(media.upscale(img, factor), np.repeat(np.repeat(img, factor, 0), factor, 1))
    batch = rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)  # (T, H, W, 3) keeps numpy's path
    assert media.upscale(batch, 2).shape == (2, 10, 12, 3)
    media._strip.cache_clear()
    a = media.caption(img, "t = +0.17 s")
    b = media.caption(img[::-1].copy(), "t = +0.17 s")
    assert media._strip.cache_info().hits == 1 and np.array_equal(a[:media.LABEL_HEIGHT], b[:media.LABEL_HEIGHT])
    assert np.array_equal(a[media.LABEL_HEIGHT:], img) and a[:media.LABEL_HEIGHT].std() > 0  # the text is drawn
    path = media.write_png(a, tmp_path / "x.png")
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), a)
    with pytest.raises(ValueError, match="uint8"):
        media.write_png(a.astype(np.float32), tmp_path / "y.png")


def test_the_app_keeps_only_its_last_output_files(ctx, monkeypatch):
    """Gradio serves its own copies of outputs, so the app's folder keeps the last KEEP_FILES it wrote, not one more
    per pick for as long as it runs."""
    import app.context as K

    monkeypatch.setattr(K, "KEEP_FILES", 3)
    paths = []
    for _ in range(5):
        paths.append(ctx.new_path(".png"))
        paths[-1].write_bytes(b"x")
    assert [p.exists() for p in paths] == [False, False, True, True, True]


def test_default_steps_come_from_the_checkpoints_own_steps_sweep(tiny_config, tmp_path):
    """The app samples a checkpoint with the fewest steps its own steps sweep read as its validated count (the slider's
    default, with a sentence that says so); a sweep of another checkpoint (folder or weights), w or count, or a broken
    file, changes nothing."""
    import json

    from reworld.data.loader import NuScenesClips

    from app.context import interactive_steps
    from app.demo import create_demo

    pipe = tiny_pipeline(0, tiny_config.data)
    validated, w = pipe.default_steps, pipe.default_guidance
    rows = [{"steps": 1, "fd_judge": 5.5, "minus_reference_position_m_mean": -0.1},
            {"steps": validated, "fd_judge": 5.0, "minus_reference_position_m_mean": 0.0}]
    digest = pipe.world_model_digest()
    doc = {"varies": "steps", "checkpoint": "somewhere/tiny", "reference_steps": validated, "guidance": w,
           "clips": 7, "rows": rows, "fewest_steps": {"steps": 1}, "world_model_digest": digest}
    (tmp_path / "steps_sweep_tiny.json").write_text(json.dumps(doc))
    steps, note = interactive_steps(tmp_path, "tiny", "assets/tiny", validated, w)
    assert steps == 1 and "**1**" in note and "fd_judge 5.50 against 5.00" in note and "7 held-out clips" in note
    assert interactive_steps(tmp_path, "tiny", "assets/other", validated, w) == (validated, "")  # another folder
    assert interactive_steps(tmp_path, "tiny", "assets/tiny", validated, w + 0.5) == (validated, "")  # another w
    assert interactive_steps(tmp_path, "tiny", "assets/tiny", validated + 1, w) == (validated + 1, "")
    assert interactive_steps(tmp_path, "nothing", "assets/nothing", validated, w) == (validated, "")
    assert interactive_steps(tmp_path, "tiny", "assets/tiny", validated, w, digest)[0] == 1  # these very weights
    # a checkpoint re-shipped into the same folder: other weights; a sweep that names none vouches for none
    assert interactive_steps(tmp_path, "tiny", "assets/tiny", validated, w, tiny_pipeline(1, tiny_config.data)
                             .world_model_digest()) == (validated, "")
    (tmp_path / "steps_sweep_old.json").write_text(json.dumps({k: v for k, v in doc.items()
                                                               if k != "world_model_digest"}))
    assert interactive_steps(tmp_path, "old", "assets/old", validated, w, digest) == (validated, "")
    (tmp_path / "steps_sweep_broken.json").write_text("{not json")
    assert interactive_steps(tmp_path, "broken", "assets/broken", validated, w) == (validated, "")

    pipe.path = tmp_path / "tiny"
    demo = create_demo({"tiny": pipe}, NuScenesClips(tiny_config.data, split="all"), out_dir=tmp_path / "out",
                       ablation_dir=tmp_path)
    slider = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "gen-steps")
    assert slider.value == 1
    assert any(getattr(b, "elem_id", None) == "steps-note" for b in demo.blocks.values())
