"""`reworld eval` on the tiny run: every key, honest baselines, and the Markdown table."""
import json
import subprocess
import sys

import numpy as np
import pytest

from reworld.evaluation.evaluate import PLAN_KEYS, constant_velocity, evaluate


def test_constant_velocity_holds_speed():
    cv = constant_velocity(np.array([8.0, 1.0, 0.2]))
    np.testing.assert_allclose(cv[:, 0], 8.0 * 0.5 * np.arange(1, 9))
    assert np.all(cv[:, 1:] == 0)


def test_eval_report(tiny_run, tiny_world):
    out, _ = tiny_run
    report = evaluate(str(out), dataroot=str(tiny_world), split="val", limit=3, video_clips=2, steps=2)
    assert report.num_clips == 3
    names = list(report.planners)
    assert names[0].startswith("ReWorld planner") and "constant velocity" in names and "expert (upper bound)" in names
    for row in report.planners.values():
        assert set(PLAN_KEYS) <= set(row)
        assert all(0.0 <= row[k] <= 1.0 for k in ("pdms", "nc", "dac", "ttc", "ep", "c", "collision_rate"))
    expert = report.planners["expert (upper bound)"]
    assert expert["l2_1s"] == 0.0 and expert["pdms"] >= 0.8
    assert {"psnr", "ssim", "psnr_repeat_last", "ssim_repeat_last"} <= set(report.video)
    table = report.markdown()
    assert table.count("\n|") >= 4 and "constant velocity" in table


def test_eval_cli_json(tiny_run, tiny_world, tmp_path):
    out, _ = tiny_run
    path = tmp_path / "eval.json"
    res = subprocess.run([sys.executable, "-m", "reworld", "eval", "--checkpoint", str(out), "--dataroot",
                          str(tiny_world), "--limit", "2", "--video-clips", "0", "--json", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "| planner |" in res.stdout
    doc = json.loads(path.read_text())
    assert set(PLAN_KEYS) <= set(doc["planners"]["constant velocity"])


def test_eval_under_navsims_definition(tiny_run, tiny_config):
    """The default scorer is NAVSIM's pipeline (tracker, collision types, TTC rule, PDM-Closed EP) on every planner
    row, and the settings say so; `scorer="spline"` is the first, untracked one, with the same L2."""
    from reworld.evaluation.evaluate import evaluate

    out, _ = tiny_run
    report = evaluate(str(out), dataroot=tiny_config.data.dataroot, split="val", limit=4, video_clips=0,
                      device="cpu")
    assert report.settings["scorer"] == "navsim"
    for row in report.planners.values():
        assert 0.0 <= row["pdms"] <= 1.0 and row["c"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    spline = evaluate(str(out), dataroot=tiny_config.data.dataroot, split="val", limit=4, video_clips=0,
                      scorer="spline", device="cpu")
    assert spline.settings["scorer"] == "spline"
    assert spline.planners["constant velocity"]["l2_3s"] == report.planners["constant velocity"]["l2_3s"]
    with pytest.raises(ValueError, match="scorer"):
        evaluate(str(out), split="val", limit=1, video_clips=0, scorer="lqr")


def test_reeval_rewrites_the_cards_figures_and_keeps_the_rest(tiny_run, tiny_config, tiny_config_path, tmp_path):
    """`reevaluate` replaces eval.json and the card's `## Evaluation` section (naming the scorer and the world);
    the commands and stages above it stay as they were."""
    import json

    from reworld.evaluation.evaluate import evaluate
    from reworld.ship import reevaluate, ship

    out, _ = tiny_run
    first = evaluate(str(out), dataroot=tiny_config.data.dataroot, split="val", limit=2, video_clips=0,
                     scorer="spline", device="cpu").to_json()
    dest = ship(str(out), str(tmp_path / "shipped"), None, str(tiny_config_path), first, ["python -m reworld x"])
    head = (dest / "MODEL_CARD.md").read_text().split("## Evaluation")[0]
    assert "--generator synth-1.1`" in head  # the world the run read, from its synth_meta.json
    again = evaluate(str(dest), dataroot=tiny_config.data.dataroot, split="val", limit=3, video_clips=0,
                     device="cpu").to_json()
    reevaluate(str(dest), again)
    card = (dest / "MODEL_CARD.md").read_text()
    assert card.startswith(head) and card.count("## Evaluation") == 1 and "python -m reworld x" in card
    assert "NAVSIM v1.1" in card and "on 3 held-out clips" in card and "untracked" not in card
    assert json.loads((dest / "eval.json").read_text())["num_clips"] == 3
    assert not list(dest.glob(".*.tmp"))
