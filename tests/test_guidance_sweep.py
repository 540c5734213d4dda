"""`python -m analysis guidance-sweep`: the video judge's readings of a world model's futures against the guidance w
(the app's guidance view on real clips), on the tiny run with a tiny judge."""
from __future__ import annotations

import json

import numpy as np
import pytest
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


def test_sweep_cli_errors_are_one_line(tiny_run, tiny_judge, tmp_path, capsys):
    from analysis.cli import main

    assert main(["guidance-sweep", "--checkpoint", str(tiny_run[0]), "--judge", str(tiny_judge), "--w", "1", "1",
                 "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: guidance values repeat")
