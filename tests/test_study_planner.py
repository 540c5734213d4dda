"""The claims study's planning part (docs/study.md §4): the verdict rule and the summary on known scores, and the
whole driver end to end on the tiny world (prepare, both stages, scores, summary, resume)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import study_planner as SP


def test_verdict_rule_known_answers():
    small = SP.SMALLEST_EFFECT
    assert SP.verdict((0.8, 2.0), (0.7, 2.5), small) == "reproduces"
    assert SP.verdict((0.1, 0.5), (0.05, 0.6), small) == "reproduces, below the smallest effect"
    assert SP.verdict((-0.5, 0.4), (-1.0, 0.6), small) == "does not"
    assert SP.verdict((0.1, 0.5), (-3.0, 4.0), small) == "inconclusive"  # the seeds' interval disagrees
    assert SP.verdict((-0.2, 1.4), (-0.5, 1.5), small) == "inconclusive"
    assert SP.verdict((0.1, 0.5), None, small) == "reproduces, below the smallest effect"


def _scores(offset: float, seed: int, tokens, samples: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i, t in enumerate(tokens):
        base = 0.8 + 0.01 * i
        rows = np.zeros((samples, len(SP.METRICS)))
        rows[:, 0] = base + offset + rng.normal(0, 0.001, samples)
        out[t] = rows
    return out


def test_summary_effect_in_points_with_its_intervals():
    """An arm 2 PDMS points above vanilla on every clip and seed: the effect reads +2.0 points, both intervals are
    above 0 and above the smallest effect: 'reproduces'. With a seed missing, no verdict yet."""
    tokens = [f"t{i}" for i in range(30)]
    scores = {}
    for s in (0, 1, 2):
        scores["vanilla", s] = SP.run_result(_scores(0.0, 10 + s, tokens))
        scores["full", s] = SP.run_result(_scores(0.02, 20 + s, tokens))
    out = SP.summarize(scores, [0, 1, 2])
    c = out["comparisons"]["full − vanilla"]
    assert math.isclose(c["mean"], 2.0, abs_tol=0.05)
    assert 0.65 < c["boot_lo"] < c["mean"] < c["boot_hi"] and 0.65 < c["t_lo"] < c["t_hi"]
    assert c["clips"] == 30 and c["seeds"] == [0, 1, 2] and c["verdict"] == "reproduces"
    assert math.isclose(out["means"]["full"]["0"]["pdms"] - out["means"]["vanilla"]["0"]["pdms"], 0.02, abs_tol=1e-3)
    del scores["full", 2]
    c = SP.summarize(scores, [0, 1, 2])["comparisons"]["full − vanilla"]
    assert c["verdict"] == "pending (2 of 3 seeds)" and c["seeds"] == [0, 1]


def test_the_ledger_carries_runs_from_machine_to_machine(tmp_path):
    """A study summarised on one machine (seeds 0 and 1), then seed 2 scored on another that has only the committed
    results: the summary equals the one made with every score file at hand, and the ledger's runs are not run
    again."""
    tokens = [f"t{i}" for i in range(25)]
    scores = {(arm, s): _scores(0.01 * (arm == "full") - 0.005 * s, 30 + s + 7 * (arm == "full"), tokens)
              for arm in ("vanilla", "full") for s in (0, 1, 2)}
    first, second, results = tmp_path / "m1", tmp_path / "m2", tmp_path / "results"

    def write(out, seeds):
        for arm in ("vanilla", "full"):
            for s in seeds:
                rows = [{"token": t, "sample": j, **dict(zip(SP.METRICS, v[j]))}
                        for t, v in scores[arm, s].items() for j in range(len(v))]
                SP.write_scores(rows, out / "scores" / f"{SP.run_name(arm, s)}.csv")

    write(first, [0, 1])
    SP.write_summary(first, results, ["vanilla", "full"], [0, 1, 2], {})
    assert SP.summarize({k: SP.run_result(v) for k, v in scores.items() if k[1] < 2}, [0, 1, 2])["comparisons"] \
        == json.loads((results / "planner_study.json").read_text())["comparisons"]
    write(second, [2])  # the second machine: only seed 2's files, and the committed results
    got = SP.write_summary(second, results, ["vanilla", "full"], [2], {})["comparisons"]["full − vanilla"]
    want = SP.summarize({k: SP.run_result(v) for k, v in scores.items()}, [0, 1, 2])["comparisons"]["full − vanilla"]
    for key in ("mean", "boot_lo", "boot_hi", "t_lo", "t_hi"):
        assert math.isclose(got[key], want[key], abs_tol=1e-3), key  # the ledger keeps 6 significant digits
    assert got["seeds"] == [0, 1, 2] and not got["verdict"].startswith("pending")
    doc = json.loads((results / "planner_study.json").read_text())
    assert doc["run_sources"]["full-s0"] == "ledger" and doc["run_sources"]["full-s2"].endswith("full-s2.csv")
    held = SP.read_ledger(results)
    assert set(held) == set(scores) and held["full", 1].means["pdms"] == pytest.approx(
        SP.run_result(scores["full", 1]).means["pdms"], abs=1e-6)
    (results / "planner_study.csv").write_text("arm,seed,metric,value\nfull,0,pdms,0.8\n")
    with pytest.raises(ValueError, match="disagree on the runs"):
        SP.read_ledger(results)


def test_job_order_puts_the_claim_first():
    order = SP.job_order(["+align", "vanilla", "full"], [0, 1])
    assert order == [("vanilla", 0), ("full", 0), ("vanilla", 1), ("full", 1), ("+align", 0), ("+align", 1)]
    with pytest.raises(ValueError, match="unknown arm"):
        SP.check_arms(["vanilla", "bogus"])


def test_study_runs_end_to_end_and_resumes(tiny_run, tiny_config_path, tmp_path, monkeypatch):
    """Two arms × one seed on the tiny world through the repository's own commands: each run folder starts from the
    checkpoint's Video DiT, trains both stages with the study's switches, is scored on every val clip × 2 plans; the
    summary's per-clip file gives the comparison's mean; a second call runs nothing again."""
    src, _ = tiny_run
    monkeypatch.setattr("analysis.study_planner.IN_PROCESS", True)  # the commands without interpreter start-up
    out, results = tmp_path / "study", tmp_path / "results"
    summary = SP.run_study(out, src, tiny_config_path, ["vanilla", "full"], [0], samples=2, parallel=1,
                           results=results, max_steps={"action": 2, "joint": 1}, log=lambda m: None)
    c = summary["comparisons"]["full − vanilla"]
    assert not c["verdict"].startswith("pending") and c["clips"] > 0
    run_cfg = json.loads((out / "full-s0" / "config.json").read_text())
    assert run_cfg["action"]["feature_draws"] == 4 and run_cfg["loss"]["hn_clip_z"] == 3.0
    assert run_cfg["loss"]["lambda_align"] == 0.5 and run_cfg["loss"]["lambda_hn"] == 0.2
    assert json.loads((out / "vanilla-s0" / "config.json").read_text())["loss"]["lambda_align"] == 0.0
    from reworld.config import load_config
    from reworld.data.loader import NuScenesClips

    val = len(NuScenesClips(load_config(tiny_config_path).data, split="val", geometry=False))
    scores = SP.read_scores(out / "scores" / "full-s0.csv")
    assert len(scores) == val and all(v.shape == (2, len(SP.METRICS)) for v in scores.values())
    import pandas as pd

    clips = pd.read_csv(results / "planner_study" / "clips.csv")
    piv = clips.pivot_table(index="token", columns="arm", values="pdms")
    assert math.isclose((piv["full"] - piv["vanilla"]).mean() * 100, c["mean"], abs_tol=1e-3)
    table = pd.read_csv(results / "planner_study.csv")
    assert set(table["arm"]) == {"vanilla", "full"} and "pdms" in set(table["metric"])
    stamp = (out / "scores" / "full-s0.csv").stat().st_mtime_ns
    SP.run_study(out, src, tiny_config_path, ["vanilla", "full"], [0], samples=2, parallel=1, results=results,
                 max_steps={"action": 2, "joint": 1}, log=lambda m: None)
    assert (out / "scores" / "full-s0.csv").stat().st_mtime_ns == stamp
    again = SP.run_study(tmp_path / "elsewhere", src, tiny_config_path, ["vanilla", "full"], [0], samples=2, parallel=1,
                         results=results, max_steps={"action": 2, "joint": 1}, log=lambda m: None)  # a new machine
    assert not (tmp_path / "elsewhere" / "full-s0").exists()  # the committed results hold both runs: nothing runs
    assert math.isclose(again["comparisons"]["full − vanilla"]["mean"], c["mean"], abs_tol=1e-3)
    # a job from another Video DiT (e.g. a re-shipped checkpoint) is not the same study: refused before it runs
    other = tmp_path / "other"
    shutil.copytree(src, other)
    weights = next((other / "video_dit").glob("*.safetensors"))
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    name = next(iter(state))
    state[name] = state[name] + 1
    save_file(state, weights)
    with pytest.raises(ValueError, match="video_dit_digest"):
        SP.run_study(tmp_path / "third", other, tiny_config_path, ["vanilla", "full"], [1], samples=2, parallel=1,
                     results=results, max_steps={"action": 2, "joint": 1}, log=lambda m: None)
    assert not (tmp_path / "third").exists()


def test_the_committed_ledgers_name_the_model_their_jobs_started_from():
    """C3′'s ledger takes the shipped R2 `reworld` under configs/world4s.yaml (its jobs resume from any clone); C3's
    ledger, made on R1's Video DiT, refuses it, naming the Video DiT and the config keys R2 changed."""
    root = Path(__file__).resolve().parent.parent
    shipped, base = root / "assets" / "checkpoints" / "reworld", root / "configs" / "world4s.yaml"
    SP.check_ledger(root / "assets" / "ablation" / "c3-fixed", base, shipped)
    with pytest.raises(ValueError, match=r"video\.num_attention_heads.*video_dit_digest|video_dit_digest"):
        SP.check_ledger(root / "assets" / "ablation", base, shipped)


def test_arm_configs_carry_the_switches_and_their_exceptions(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("name: w\nloss: {lambda_ig: 0.5}\naction: {width: 128}\n")
    full = SP.arm_config(base, "full", 2)
    assert full["action"] == {"width": 128, "feature_draws": 4} and full["train"]["seed"] == 2
    assert full["loss"] == {"lambda_ig": 0.5, "hn_clip_z": 3.0, "lambda_align": 0.5, "lambda_hn": 0.2}
    assert SP.arm_config(base, "full-1draw", 0)["action"]["feature_draws"] == 1
    assert SP.arm_config(base, "full-unclipped", 0)["loss"]["hn_clip_z"] == 0.0
    assert SP.arm_config(base, "vanilla", 0)["loss"]["lambda_align"] == 0.0
    assert SP.arm_config(base, "full-frames", 0)["action"]["align_target"] == "frames"
    assert SP.arm_config(base, "full-clean", 0)["action"]["align_sigma"] == 0.0
    assert SP.arm_config(base, "full-sigma0.2", 0)["action"] == {"width": 128, "feature_draws": 4, "align_sigma": 0.2}


def test_frame_alignment_target_known_answer():
    """`action.align_target: frames`: waypoint k is aligned with the mean of the tokens of the future latent frame at
    its time; "pooled" is the mean of every future token."""
    import torch

    from reworld.pipelines.hidden_states import alignment_target, waypoint_frames

    assert waypoint_frames(8, 8) == list(range(8))
    assert waypoint_frames(4, 8) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert waypoint_frames(1, 8) == [0] * 8
    b, t, n_ctx, per, d = 2, 5, 1, 3, 4
    h = torch.arange(b * t * per * d, dtype=torch.float32).view(b, t * per, d)
    frames = alignment_target(h, n_ctx, t, "frames", 8)
    assert frames.shape == (b, 8, d)
    torch.testing.assert_close(frames[:, 0], h[:, per:2 * per].mean(1))  # future frame 0 = latent frame 1
    torch.testing.assert_close(frames[:, 7], h[:, 4 * per:5 * per].mean(1))
    torch.testing.assert_close(alignment_target(h, n_ctx, t, "pooled", 8), h[:, per:].mean(1))
    with pytest.raises(ValueError, match="align_target"):
        alignment_target(h, n_ctx, t, "spatial", 8)


def test_a_failed_command_names_its_log(tmp_path):
    import sys

    log = tmp_path / "logs" / "x.log"
    with pytest.raises(RuntimeError, match=r"exit 3.*x\.log"):
        SP.run_logged([sys.executable, "-c", "print('hello'); import sys; sys.exit(3)"], log, 1)
    assert "hello" in log.read_text()
    SP.run_logged([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"], log, 1)
    assert log.read_text().strip().endswith("1")


def test_plan_scores_command_and_its_plan_shift(tiny_run, tmp_path):
    """`plan-scores` writes one row per clip and plan; `--plan-shift` moves only the planner's σ grid (the tiny run
    trained at shift 1, so its default plans are `--plan-shift 1`'s and `--plan-shift 4`'s differ); a shift ≤ 0 is
    refused with one line."""
    from analysis.cli import main

    src, _ = tiny_run
    paths = {name: tmp_path / f"{name}.csv" for name in ("default", "one", "four")}
    for name, extra in (("default", []), ("one", ["--plan-shift", "1"]), ("four", ["--plan-shift", "4"])):
        assert main(["plan-scores", "--checkpoint", str(src), "--samples", "2", "--out", str(paths[name])] + extra) == 0
    scores = {name: SP.read_scores(p) for name, p in paths.items()}
    assert all(v.shape[0] == 2 for v in scores["default"].values())
    for t, v in scores["default"].items():
        np.testing.assert_array_equal(v, scores["one"][t])
    assert any(not np.array_equal(v[:, -3:], scores["four"][t][:, -3:]) for t, v in scores["default"].items())
    assert main(["plan-scores", "--checkpoint", str(src), "--plan-shift", "0", "--out", str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()
