"""`python -m analysis guidance-sweep`: the video judge's readings of a world model's futures against the guidance w
(the app's guidance view on real clips), on the tiny run with a tiny judge."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.guidance_sweep import GAP, LABEL_H, LABEL_W, check_ws, guidance_sweep, sweep_figure


def test_sweep_is_the_eval_measurement_at_every_w(tiny_sweep, tiny_run, tiny_config, tiny_judge):
    """Each w's row is what `eval`'s judge gives at that w on the same clips, samples and seeds (one measurement,
    not a second one that could drift); the reference row differs from itself by exactly 0; the intervals hold
    their means."""
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.evaluate import judge_metrics
    from reworld.evaluation.judge import load_judge
    from reworld.pipelines import WorldActionPipeline

    sweep = json.loads((tiny_sweep / "guidance_sweep_tiny.json").read_text())
    assert [r["w"] for r in sweep["rows"]] == [0.0, 1.0, 2.0]  # sorted
    assert (sweep["clips"], sweep["samples_per_clip"], sweep["indices"]) == (6, 2, [0, 2, 4, 6, 8, 10])
    assert sweep["trained_heads"] == [1] and "guidance-sweep" in sweep["command"]
    pipe = WorldActionPipeline.from_pretrained(tiny_run[0])
    # the sweep names the weights it measured (the app trusts it for no others), whatever dtype they are loaded in
    assert sweep["world_model_digest"] == pipe.world_model_digest() == WorldActionPipeline.from_pretrained(
        tiny_run[0], torch_dtype=torch.bfloat16).world_model_digest()
    ds = NuScenesClips(pipe.clip_spec, "all", geometry=False, dataroot=tiny_config.data.dataroot)
    judge = load_judge(tiny_judge)
    for row in sweep["rows"]:
        ref = judge_metrics(pipe, ds, sweep["indices"], judge, samples=2, steps=2, guidance=row["w"], seed=0)
        assert row["fd_judge"] == pytest.approx(ref["fd_judge"], rel=1e-5)
        np.testing.assert_allclose(row["errors"]["position_m"], ref["errors"]["position_m"], rtol=1e-5)
        per_clip = np.asarray(ref["position_m_per_video"]).reshape(6, 2, -1).mean(1)  # clip j: videos 2j, 2j + 1
        assert row["position_m_mean"] == pytest.approx(per_clip.mean(), rel=1e-5)
        lo, hi = row["position_m_mean_boot"]
        assert lo <= row["position_m_mean"] <= hi
        if row["w"] == sweep["reference_w"]:
            assert row["minus_reference_position_m_at_s"] == [0.0] * len(sweep["seconds"])
    assert set(sweep["references"]) == {"real", "repeat_last", "copy_context"}
    # guidance changes the futures: w = 0 (the head alone) reads differently from w = 1
    assert sweep["rows"][0]["fd_judge"] != pytest.approx(sweep["rows"][1]["fd_judge"])


def test_sweep_frames_and_figure(tiny_sweep, tiny_config):
    grid = np.asarray(Image.open(tiny_sweep / "guidance_sweep_tiny.png"))
    h = tiny_config.data.image_height
    assert grid.shape[0] == LABEL_H + 4 * (h + GAP)  # the truth, then a row per w
    assert grid.shape[1] == LABEL_W + tiny_config.data.image_width + GAP  # 0.67 s of future: its last frame
    sweep = json.loads((tiny_sweep / "guidance_sweep_tiny.json").read_text())
    fig = sweep_figure(sweep, guidance=1.4)
    xs = [s.x for s in fig.data if s.name == "generated"][0]
    assert list(xs) == [0.0, 1.0, 2.0]
    assert any(getattr(sh, "x0", None) == 1.4 for sh in fig.layout.shapes)  # the asked w is marked


def test_sweep_refuses_what_it_cannot_measure(tiny_run, tiny_config, tiny_judge):
    from reworld.config import replace
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.judge import load_judge
    from reworld.pipelines import WorldActionPipeline

    pipe = WorldActionPipeline.from_pretrained(tiny_run[0])
    ds = NuScenesClips(pipe.clip_spec, "all", geometry=False, dataroot=tiny_config.data.dataroot)
    judge = load_judge(tiny_judge)
    with pytest.raises(ValueError, match="reference w = 1 must be one of"):
        guidance_sweep(pipe, ds, [0], judge, [0.0, 2.0])
    for bad in ([], [1.0, 1.0], [float("nan")], [-1.0]):
        with pytest.raises(ValueError, match="guidance"):
            check_ws(bad)
    pipe.config = replace(pipe.config, loss={"lambda_ig": 0.0})  # a vanilla run: its head is not a head
    with pytest.raises(ValueError, match="no trained intermediate head"):
        guidance_sweep(pipe, ds, [0], judge, [1.0, 2.0])


def test_a_stopped_sweep_resumes_with_the_same_numbers(tiny_sweep, tiny_run, tiny_config, tiny_judge, tmp_path,
                                                      monkeypatch):
    """A sweep keeps each w's readings as they land: run again after a stop it samples only what it has not read,
    and its rows are the uninterrupted run's; readings kept for other noise (another seed) or cut off mid-write are
    not used. The command's own keep folder is gone once its files are written."""
    import reworld.evaluation.evaluate as evaluate
    from reworld.config import replace
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.judge import load_judge
    from reworld.pipelines import WorldActionPipeline

    assert not list(tiny_sweep.glob(".*partial"))  # written: nothing left beside the JSON
    pipe = WorldActionPipeline.from_pretrained(tiny_run[0])
    ds = NuScenesClips(pipe.clip_spec, "all", geometry=False, dataroot=tiny_config.data.dataroot)
    judge = load_judge(tiny_judge)
    keep = tmp_path / "keep"
    args = (pipe, ds, [0, 2, 4, 6, 8, 10], judge, [0.0, 1.0])
    sampled = []
    real = evaluate.sampled_videos

    def counting(pipe, ds, indices, samples, steps, w, seed):
        sampled.append(w)
        return real(pipe, ds, indices, samples, steps, w, seed)

    monkeypatch.setattr(evaluate, "sampled_videos", counting)
    whole = guidance_sweep(*args, steps=2, samples=2, keep=keep)
    assert sampled == [0.0, 1.0] and whole["resumed_settings"] == []
    (keep / "2-steps-w1.safetensors").unlink()  # stopped while sampling w = 1
    resumed = guidance_sweep(*args, steps=2, samples=2, keep=keep)
    assert sampled == [0.0, 1.0, 1.0] and resumed["resumed_settings"] == [[2, 0.0]]
    def numbers(rows):  # all but the wall time of the w sampled again
        return json.dumps([{k: v for k, v in r.items() if k != "seconds_per_future"} for r in rows])

    assert numbers(resumed["rows"]) == numbers(whole["rows"])
    assert resumed["rows"][0]["seconds_per_future"] == whole["rows"][0]["seconds_per_future"]  # kept, not re-timed
    torch.testing.assert_close(resumed["_frames"]["w = 0"], whole["_frames"]["w = 0"], rtol=0, atol=0)
    # what the tiny_sweep command wrote (the same clips, samples, steps and seed) is these numbers
    written = json.loads((tiny_sweep / "guidance_sweep_tiny.json").read_text())["rows"]
    for row, other in zip(resumed["rows"], written[:2]):
        assert row["fd_judge"] == pytest.approx(other["fd_judge"], rel=1e-6)
    sampled.clear()
    guidance_sweep(*args, steps=2, samples=2, seed=1, keep=keep)  # other noise: every w sampled again
    assert sampled == [0.0, 1.0]
    config = pipe.config
    pipe.config = replace(config, train={"motion_guidance": 0.5})  # the same weights sampled otherwise: not reused
    sampled.clear()
    guidance_sweep(*args, steps=2, samples=2, seed=1, keep=keep)
    assert sampled == [0.0, 1.0]
    pipe.config = config
    sampled.clear()
    guidance_sweep(*args, steps=2, samples=2, seed=1, keep=keep)  # kept for seed 1 with the config above: resampled
    assert sampled == [0.0, 1.0]
    path = keep / "2-steps-w0.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # cut off
    sampled.clear()
    again = guidance_sweep(*args, steps=2, samples=2, seed=1, keep=keep)
    assert sampled == [0.0] and again["resumed_settings"] == [[2, 1.0]]


def test_sweep_cli_errors_are_one_line(tiny_run, tiny_judge, tmp_path, capsys):
    from analysis.cli import main

    assert main(["guidance-sweep", "--checkpoint", str(tiny_run[0]), "--judge", str(tiny_judge), "--w", "1", "1",
                 "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: guidance values repeat")


def test_steps_sweep_is_the_eval_measurement_at_every_count(tiny_run, tiny_config, tiny_judge, tmp_path):
    """`python -m analysis steps-sweep`: each step count's row is `eval`'s judge figures at that count (same clips,
    samples, seeds), paired with the most steps; the frame grid has a row per count; the rule's fewest steps is
    one that passes it."""
    from analysis.cli import main
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.evaluate import judge_metrics
    from reworld.evaluation.judge import load_judge
    from reworld.pipelines import WorldActionPipeline

    argv = ["steps-sweep", "--checkpoint", str(tiny_run[0]), "--judge", str(tiny_judge), "--steps", "3", "1",
            "--guidance", "1.4", "--split", "all", "--every", "2", "--limit", "4", "--samples", "1", "--name", "tiny",
            "--dataroot", str(tiny_config.data.dataroot), "--out", str(tmp_path)]
    assert main(argv) == 0
    sweep = json.loads((tmp_path / "steps_sweep_tiny.json").read_text())
    assert sweep["varies"] == "steps" and sweep["reference_steps"] == 3 and sweep["guidance"] == 1.4
    assert [r["steps"] for r in sweep["rows"]] == [1, 3] and all(r["seconds_per_future"] > 0 for r in sweep["rows"])
    pipe = WorldActionPipeline.from_pretrained(tiny_run[0])
    # the sweep names the weights it measured (the app trusts it for no others), whatever dtype they are loaded in
    assert sweep["world_model_digest"] == pipe.world_model_digest() == WorldActionPipeline.from_pretrained(
        tiny_run[0], torch_dtype=torch.bfloat16).world_model_digest()
    ds = NuScenesClips(pipe.clip_spec, "all", geometry=False, dataroot=tiny_config.data.dataroot)
    judge = load_judge(tiny_judge)
    for row in sweep["rows"]:
        ref = judge_metrics(pipe, ds, sweep["indices"], judge, samples=1, steps=row["steps"], guidance=1.4, seed=0)
        assert row["fd_judge"] == pytest.approx(ref["fd_judge"], rel=1e-5)
        np.testing.assert_allclose(row["errors"]["position_m"], ref["errors"]["position_m"], rtol=1e-5)
    three = sweep["rows"][1]
    assert three["minus_reference_position_m_mean"] == 0.0 and three["minus_reference_position_m_mean_boot"] == [0, 0]
    rule = sweep["fewest_steps"]
    assert rule["by_steps"]["3"]["passes"] and rule["steps"] in (1, 3)
    assert rule["by_steps"][str(rule["steps"])]["passes"]
    grid = np.asarray(Image.open(tmp_path / "steps_sweep_tiny.png"))
    assert grid.shape[0] == LABEL_H + 3 * (tiny_config.data.image_height + GAP)  # the truth, then 1 and 3 steps
    fig = sweep_figure(sweep)
    assert list([s.x for s in fig.data if s.name == "generated"][0]) == [1, 3]
    assert fig.layout.xaxis.title.text == "sampler steps"


def test_fewest_steps_rule_known_answers():
    from analysis.guidance_sweep import check_steps_list, fewest_steps

    def row(steps, fd, hi):
        return {"steps": steps, "fd_judge": fd, "minus_reference_position_m_mean_boot": [hi - 0.2, hi]}

    rows = [row(4, 13.0, 0.1), row(6, 10.9, 0.3), row(8, 10.9, 0.2), row(20, 10.0, 0.0)]
    out = fewest_steps(rows, 20)
    assert out["steps"] == 8  # 4: FD 30 % above; 6: the position interval reaches +0.3 m
    assert [out["by_steps"][k]["passes"] for k in ("4", "6", "8", "20")] == [False, False, True, True]
    assert out["by_steps"]["4"]["fd_ratio"] == pytest.approx(1.3)
    assert fewest_steps([row(20, 10.0, 0.0)], 20)["steps"] == 20
    for bad in ([], [0], [4, 4], [500]):
        with pytest.raises(ValueError, match="step count"):
            check_steps_list(bad)


def test_a_checkpoints_digest_changes_with_its_video_weights_not_its_dtype(tiny_run, tmp_path):
    """`world_model_digest` of a checkpoint folder: the same files give the same digest in any dtype; a Video DiT
    re-shipped into the same folder with one weight changed gives another (what the app's steps default keys on)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from reworld.pipelines import WorldActionPipeline

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_run[0], folder)
    before = WorldActionPipeline.from_pretrained(folder).world_model_digest()
    assert before == WorldActionPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).world_model_digest()
    weights = folder / "video_dit" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(weights))
    assert WorldActionPipeline.from_pretrained(folder).world_model_digest() != before
