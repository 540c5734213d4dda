"""The claims study's convergence part (docs/study.md §2, amendment 8): the speed-up's known answers, S_v's rule, the
summary over a ledger built to a known answer, and the driver end to end on the tiny world (segments resumed from
scratch, judge scores per checkpoint, summary, resume)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis import study_convergence as SC
from analysis.ledger import IDENTITY
from analysis import study_finetune as SF


def test_log_steps_to_reach_and_the_final_step_known_answers():
    curve = {250: 10.0, 500: 6.0, 1000: 4.0, 2000: 3.9}
    # between 500 (6) and 1000 (4), target 5: half way in log2 steps, the geometric mean of 500 and 1000
    assert SC.log_steps_to_reach(curve, 5.0, 2000) == (pytest.approx(math.sqrt(500 * 1000)), "reached")
    assert SC.log_steps_to_reach(curve, 4.0, 2000) == (1000.0, "reached")
    assert SC.log_steps_to_reach(curve, 12.0, 2000) == (250.0, "at or before")
    assert SC.log_steps_to_reach(curve, 3.0, 2000) == (2000.0, "not reached")
    assert SC.log_steps_to_reach(curve, 3.95, 1000) == (1000.0, "not reached")  # nothing past the final step counts
    # S_v: the first doubling that improves fd_judge by less than 5 %: 1000 → 2000 (4 → 3.9, 2.5 %)
    assert SC.final_step(curve) == 2000
    assert SC.final_step({250: 10.0, 500: 9.9}) == 500  # already flat after one doubling
    assert SC.final_step({250: 10.0, 500: 9.0}) is None  # still falling: not decided yet
    falling = {k: 100.0 / k for k in SC.CHECKPOINTS}  # never flat: the last registered checkpoint
    assert SC.final_step(falling) == SC.CHECKPOINTS[-1]
    assert SC.final_step({250: 10.0, 500: 10.5}) == 500  # worse counts as not improving


def test_verdicts_known_answers():
    assert SC.verdict((1.6, 2.4), (1.5, 2.6), 2.0) == "reproduces"
    assert SC.verdict((1.1, 1.4), (1.05, 1.45), 1.2) == "reproduces, below the smallest effect"
    assert SC.verdict((0.8, 1.3), (0.7, 1.4), 1.0) == "does not"
    assert SC.verdict((0.8, 2.2), (0.6, 2.9), 1.1) == "inconclusive"
    assert SC.verdict((1.2, 2.0), (0.9, 2.3), 1.6) == "inconclusive"  # the intervals disagree


def _write(results, arm, seed, step, w, level):
    """A score file whose futures sit `level` away from the real clips along one fixed draw per seed (fd_judge grows
    with `level`; equal levels give exactly equal distances)."""
    rng = np.random.default_rng(seed)
    n, samples, d = 30, 2, 5
    real = rng.normal(size=(n, d))
    clip_of = np.repeat(np.arange(n), samples)
    gen = real[clip_of] + level * (rng.normal(size=(n * samples, d)) + 1)
    SF.write_npz({"embedding": gen, "clip_of": clip_of, "position_m": np.full((n * samples, 16), level),
                  "real_embedding": real, "frame_rate": np.array(4.0)}, SC.score_path(results, arm, seed, step, w))


def test_summary_reads_a_two_fold_speed_up_from_the_ledger(tmp_path):
    """Vanilla's curve flattens at 2000; IG at w = 1.4 is at every checkpoint where vanilla is a doubling later, so it
    reaches vanilla's final value at 1000: 2× on every seed, 'reproduces'; IG at w = 1 is vanilla's twin (1×, 'does
    not'); the stop-gradient arm is missing a seed: pending."""
    vanilla = {250: 2.0, 500: 1.4, 1000: 1.0, 2000: 0.98, 4000: 0.97}
    doubled = {250: 1.4, 500: 1.0, 1000: 0.98, 2000: 0.97}
    seeds = [0, 1, 2, 3, 4]
    for seed in seeds:
        for k in (250, 500, 1000, 2000):
            _write(tmp_path, "vanilla", seed, k, 1.0, vanilla[k])
            _write(tmp_path, "ig", seed, k, 1.4, doubled[k])
            _write(tmp_path, "ig", seed, k, 1.0, vanilla[k])
            if seed < 4:
                _write(tmp_path, "ig-sg", seed, k, 1.0, doubled[k])
    out = SC.summarize(tmp_path, seeds, resamples=200)
    assert out["final_step"] == 2000 and out["decided_on"] == "vanilla, seed 0"
    claim = out["speed_ups"]["ig w=1.4"]
    assert claim["role"] == "the claim (C2)" and claim["seeds"] == seeds
    assert [claim["per_seed"][str(s)]["speed_up"] for s in seeds] == [pytest.approx(2.0)] * 5
    assert all(claim["per_seed"][str(s)]["bound"] == "reached" for s in seeds)
    assert claim["median"] == pytest.approx(2.0) and claim["verdict"] == "reproduces" and not claim["power_rule"]
    alone = out["speed_ups"]["ig w=1"]
    assert alone["median"] == pytest.approx(1.0) and alone["verdict"] == "beside the claim: does not"
    assert out["speed_ups"]["ig-sg w=1"]["verdict"] == "pending (4 of 5 seeds)"
    # the app's ablation tab shows them with the other parts' registered comparisons
    from analysis.output import write_json
    from app import callbacks as C

    write_json(out, tmp_path / "convergence_study.json")
    table = C.study_verdicts(type("Ctx", (), {"ablation_dir": tmp_path})(), "convergence_study.csv")
    row = table[table.comparison.str.startswith("ig w=1.4 against vanilla")].iloc[0]
    assert row["effect"] == "+2.0000" and row["verdict"] == "reproduces" and len(table) == 3
    # the curves file has every arm, seed and checkpoint, in the app's curve format
    SC.write_curves_csv(tmp_path, seeds)
    import pandas as pd

    df = pd.read_csv(tmp_path / "convergence_study.csv")
    assert list(df.columns) == ["step", "run", "seed", "metric", "value"]
    fd = df[(df.metric == "fd_judge") & (df.run == "vanilla w=1")]
    assert len(fd) == 5 * 4 and fd.groupby("step").value.mean().is_monotonic_decreasing


def test_a_twin_of_a_vanilla_curve_that_rises_before_s_v_reads_one(tmp_path):
    """Amendment 20: vanilla's curve reaches its value at S_v (1.2) before S_v, between 500 and 1000 steps, then
    rises. An arm that is vanilla's exact twin reads 1× — the numerator is where vanilla first reaches that value —
    where the registered S_v ÷ S_arm, kept beside, would read it as more than 2×; an arm a doubling ahead reads 2×."""
    vanilla = {250: 2.0, 500: 1.4, 1000: 1.0, 2000: 1.2}
    ahead = {250: 1.4, 500: 1.0, 1000: 1.0, 2000: 1.2}
    seeds = [0, 1, 2]
    for seed in seeds:
        for k in (250, 500, 1000, 2000):
            _write(tmp_path, "vanilla", seed, k, 1.0, vanilla[k])
            _write(tmp_path, "ig", seed, k, 1.0, vanilla[k])
            _write(tmp_path, "ig", seed, k, 1.4, ahead[k])
    out = SC.summarize(tmp_path, seeds, checkpoints=(250, 500, 1000, 2000), resamples=200)
    assert out["final_step"] == 2000
    twin = out["speed_ups"]["ig w=1"]
    for s in seeds:
        row = twin["per_seed"][str(s)]
        assert 500 < row["vanilla_steps"] < 1000 and row["vanilla_bound"] == "reached"
        assert row["steps"] == row["vanilla_steps"] and row["speed_up"] == pytest.approx(1.0)
        assert row["speed_up_registered"] == pytest.approx(2000 / row["vanilla_steps"])
        assert row["speed_up_registered"] > 2.0
    assert twin["median"] == pytest.approx(1.0) and twin["verdict"] == "beside the claim: does not"
    assert twin["registered_form"]["median"] > 2.0 and "verdict" not in twin["registered_form"]
    claim = out["speed_ups"]["ig w=1.4"]
    assert [claim["per_seed"][str(s)]["speed_up"] for s in seeds] == [pytest.approx(2.0)] * 3
    assert claim["verdict"] == "reproduces"


def test_the_power_rule_adds_seeds_5_to_7_once_when_the_claim_is_inconclusive(tmp_path, monkeypatch):
    """§2: after the registered seeds 0–4 the claim's speed-ups are 2, 2, 1, 0.44, 0.44 (median 1, intervals from
    below 1 to 2: inconclusive, wider than 1.0), so the same run goes on with seeds 5–7, every arm, once; run again,
    or summarised again, it stays at eight seeds and trains nothing. A claim that reproduces adds no seed."""
    # vanilla first reaches its value at S_v = 2000 (1.0) at 500 · 2^0.8 steps; "ahead" a doubling earlier (2×),
    # "twin" with it (1×), "slow" never (≈ 870 / 2000 ≈ 0.44×)
    vanilla = {250: 2.0, 500: 1.4, 1000: 0.9, 2000: 1.0}
    shapes = {"ahead": {250: 1.4, 500: 0.9, 1000: 0.9, 2000: 1.0}, "twin": vanilla,
              "slow": {250: 3.0, 500: 2.0, 1000: 1.5, 2000: 1.2}}
    claim_shape = {0: "ahead", 1: "ahead", 2: "twin", 3: "slow", 4: "slow", 5: "ahead", 6: "ahead", 7: "twin"}
    trained = []

    def fake_checkpoint(out, checkpoint, base, arm, seed, step, results, **kw):
        for w in SC.GUIDANCE[arm]:
            if not SC.score_path(results, arm, seed, step, w).exists():
                trained.append((arm, seed, step, w))
                shape = vanilla if arm == "vanilla" else shapes[claim_shape[seed] if arm == "ig" else "twin"]
                _write(results, arm, seed, step, w, shape[step])
        return []

    for name in ("check_ledger", "init_study", "collect_flow_loss"):
        monkeypatch.setattr(SC, name, lambda *a, **k: None)
    monkeypatch.setattr(SC, "run_checkpoint", fake_checkpoint)
    results, lines = tmp_path / "results", []
    kw = dict(checkpoints=(250, 500, 1000, 2000), resamples=200, log=lines.append)

    def seeds_written(folder):
        return json.loads((folder / "convergence_study.json").read_text())["registered_seeds"]

    summary = SC.run_study(tmp_path / "out", tmp_path, tmp_path / "c.yaml", [0, 1, 2, 3, 4], results, **kw)
    assert summary["final_step"] == 2000 and seeds_written(results) == list(range(8))
    five = SC.summarize(results, [0, 1, 2, 3, 4], (250, 500, 1000, 2000), 200)["speed_ups"]["ig w=1.4"]
    ups = [five["per_seed"][str(s)]["speed_up"] for s in range(5)]
    assert ups[:3] == pytest.approx([2, 2, 1]) and all(0.4 < u < 0.5 for u in ups[3:])
    assert five["verdict"] == "inconclusive" and five["power_rule"]
    claim = summary["speed_ups"]["ig w=1.4"]
    assert claim["seeds"] == list(range(8)) and not claim["power_rule"]  # added once: never asks again
    assert {(a, s) for a, s, _, _ in trained if s >= 5} == {(a, s) for a in SC.ARMS for s in (5, 6, 7)}
    assert sum("power rule" in line and "seeds 5 6 7 join once" in line for line in lines) == 1
    n = len(trained)
    again = SC.run_study(tmp_path / "out", tmp_path, tmp_path / "c.yaml", [0, 1, 2, 3, 4], results, **kw)
    assert len(trained) == n and again["speed_ups"]["ig w=1.4"]["seeds"] == list(range(8))
    only = SC.run_study(tmp_path / "out", tmp_path, tmp_path / "c.yaml", [0, 1, 2, 3, 4], results,
                        summary_only=True, **kw)
    assert only["speed_ups"]["ig w=1.4"]["seeds"] == seeds_written(results) == list(range(8))
    # a claim that reproduces on the five: no seed joins
    claim_shape.update({s: "ahead" for s in range(8)})
    trained.clear()
    out = SC.run_study(tmp_path / "out2", tmp_path, tmp_path / "c.yaml", [0, 1, 2, 3, 4], tmp_path / "r2", **kw)
    assert seeds_written(tmp_path / "r2") == [0, 1, 2, 3, 4] and {s for _, s, _, _ in trained} == set(range(5))
    assert out["speed_ups"]["ig w=1.4"]["verdict"] == "reproduces"


def test_convergence_study_end_to_end(tiny_run, tiny_config_path, tiny_judge, tmp_path, monkeypatch):
    """One seed on the tiny world, checkpoints 2 and 4: vanilla first (S_v from its curve), then every arm trained
    from scratch in segments to S_v (λ_ig and ω from the arm, a constant rate) and judged at each checkpoint and w; a
    second call runs nothing again, and another machine with the ledger alone reads the same summary."""
    src, _ = tiny_run
    monkeypatch.setattr("analysis.study_planner.IN_PROCESS", True)  # the commands without interpreter start-up
    out, results = tmp_path / "c2", tmp_path / "results"
    kw = dict(samples=1, sample_steps=2, checkpoints=(2, 4), resamples=20, judge=str(tiny_judge), log=lambda m: None)
    summary = SC.run_study(out, src, tiny_config_path, [0], results, **kw)
    final = summary["final_step"]
    assert final in (2, 4)
    ledger = results / "convergence_study" / "scores"
    expected = {f"{a}-s0-k{k}-w{w:g}.npz" for a, ws in SC.GUIDANCE.items() for w in ws for k in (2, 4) if k <= final}
    assert {p.name for p in ledger.glob("*.npz")} >= expected
    cfg = json.loads((out / "ig-sg-s0" / "config.json").read_text())
    assert cfg["loss"]["lambda_ig"] == 0.5 and cfg["loss"]["ig_target_shift"] == pytest.approx(1 - 1 / 1.4)
    assert cfg["train"]["lr_schedule"] == "constant_with_warmup" and not cfg["video"].get("init_from")
    assert json.loads((out / "vanilla-s0" / "config.json").read_text())["loss"]["lambda_ig"] == 0.0
    assert SC.trained_step(out / "ig-s0") == final
    s = SF.read_npz(ledger / f"ig-s0-k{final}-w1.4.npz")
    assert len(s["embedding"]) == len(s["real_embedding"])
    assert set(summary["speed_ups"]) == {"ig w=1", "ig w=1.4", "ig-sg w=1"}
    c = summary["speed_ups"]["ig w=1.4"]
    assert c["seeds"] == [0] and math.isfinite(c["median"]) and c["median"] > 0
    stamp = (ledger / "vanilla-s0-k2-w1.npz").stat().st_mtime_ns
    SC.run_study(out, src, tiny_config_path, [0], results, **kw)
    assert (ledger / "vanilla-s0-k2-w1.npz").stat().st_mtime_ns == stamp
    assert (results / "convergence_study.csv").is_file() and (results / "convergence_study.json").is_file()
    again = SC.run_study(tmp_path / "elsewhere", src, tiny_config_path, [0], results, **kw)
    assert not (tmp_path / "elsewhere" / "vanilla-s0").exists()
    assert again["speed_ups"] == summary["speed_ups"]
    # a seed made under another base config would not be the same study: refused before anything is trained
    other = yaml.safe_load(Path(tiny_config_path).read_text())
    other["video"]["num_attention_heads"] = 3  # a wider Video DiT, as R2's
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(ValueError, match=r"video\.num_attention_heads: 2 in the ledger, 3 given"):
        SC.run_study(tmp_path / "third", src, tmp_path / "other.yaml", [1], results, **kw)
    assert not (tmp_path / "third").exists()


def test_the_committed_ledger_takes_c2s_frozen_config_and_refuses_the_shipped_one():
    """C2's seeds 1–4 join seed 0's ledger only under the width-128 config seed 0 ran under (amendment 19), which is
    the command's default; the shipped world4s config (width 192 since R2) is refused with the key that differs."""
    root = Path(__file__).resolve().parent.parent
    results, vae_of = root / "assets" / "ablation", root / "assets" / "checkpoints" / "vanilla"
    held = (results / "convergence_study" / IDENTITY).read_bytes()
    SC.check_ledger(results, root / SC.BASE_CONFIG, vae_of)
    with pytest.raises(ValueError, match="video.num_attention_heads"):
        SC.check_ledger(results, root / "configs" / "world4s-vanilla.yaml", vae_of)
    assert (results / "convergence_study" / IDENTITY).read_bytes() == held  # compared, never rewritten
    from analysis.cli import build_parser

    args = build_parser().parse_args(["study-convergence", "--out", "x"])
    assert args.config == SC.BASE_CONFIG


def test_the_flow_loss_sanity_curve_is_collected_from_the_training_logs(tmp_path):
    """Amendment 13: each run's logged validation flow loss at its checkpoints lands in a ledger CSV (a segment run
    again keeps its last value; rows of run folders that are gone stay; `ig` does not swallow `ig-sg`'s or a
    snapshot's folder) and in the curves file under the arm's first w."""
    out, results = tmp_path / "c2", tmp_path / "results"

    def log(run, rows):
        (out / run / "logs").mkdir(parents=True, exist_ok=True)
        text = "step,kind,time,name,value\n" + "".join(f"{k},{kind},1.0,{name},{v}\n" for k, kind, name, v in rows)
        (out / run / "logs" / "video.csv").write_text(text)

    log("vanilla-s0", [(10, "train", "gen", 9.0), (250, "val", "flow_loss", 1.03), (250, "val", "psnr_sampled", 15.0),
                       (500, "val", "flow_loss", 0.86), (500, "val", "flow_loss", 0.85)])
    log("ig-s0", [(250, "val", "flow_loss", 1.04)])
    log("ig-sg-s0", [(250, "val", "flow_loss", 1.20)])
    log("ig-s0-k250", [(250, "val", "flow_loss", 7.0)])
    path = SC.collect_flow_loss(out, results)
    assert path.read_text().splitlines() == ["arm,seed,step,flow_loss", "vanilla,0,250,1.03", "vanilla,0,500,0.85",
                                             "ig,0,250,1.04", "ig-sg,0,250,1.2"]
    import shutil

    shutil.rmtree(out / "vanilla-s0")
    log("ig-s0", [(250, "val", "flow_loss", 1.04), (500, "val", "flow_loss", 0.88)])
    SC.collect_flow_loss(out, results)
    curves = SC.flow_loss_curves(results, [0])
    assert curves == {"vanilla": {"0": {"250": 1.03, "500": 0.85}}, "ig": {"0": {"250": 1.04, "500": 0.88}},
                      "ig-sg": {"0": {"250": 1.2}}}
    assert SC.flow_loss_curves(results, [1]) == {}
    import pandas as pd

    df = pd.read_csv(SC.write_curves_csv(results, [0]))
    got = df[df.metric == "flow_loss_val"].sort_values(["run", "step"])
    assert list(got.run) == ["ig w=1", "ig w=1", "ig-sg w=1", "vanilla w=1", "vanilla w=1"]
    assert list(got.value) == [1.04, 0.88, 1.2, 1.03, 0.85]


def test_the_parallel_runner_writes_the_studys_own_ledger(tiny_run, tiny_config_path, tiny_judge, tmp_path,
                                                           monkeypatch):
    """scripts/study_c2_parallel.py (amendment 12: the same commands as many processes, each checkpoint scored from a
    copy of its exported pipeline while the chain trains on) gives the ledger the study's own runner gives for the
    same seed: the same score files, the same futures read by the judge, the same sanity curve; a second call runs
    nothing again."""
    import subprocess
    import sys
    from pathlib import Path

    src, _ = tiny_run
    monkeypatch.setattr("analysis.study_planner.IN_PROCESS", True)
    kw = dict(samples=1, sample_steps=2, checkpoints=(2, 4), resamples=20, judge=str(tiny_judge), log=lambda m: None)
    final = SC.run_study(tmp_path / "serial", src, tiny_config_path, [1], tmp_path / "r-serial", **kw)["final_step"]
    script = Path(__file__).resolve().parent.parent / "scripts" / "study_c2_parallel.py"
    cmd = [sys.executable, str(script), "--out", str(tmp_path / "par"), "--results", str(tmp_path / "r-par"),
           "--seeds", "1", "--checkpoint", str(src), "--config", str(tiny_config_path), "--final", str(final),
           "--checkpoints", "2", "4", "--samples", "1", "--sample-steps", "2", "--workers", "2", "--judge",
           str(tiny_judge), "--bundle", str(tmp_path / "back" / "c2_scores.tar")]
    subprocess.run(cmd, check=True, capture_output=True)
    serial, par = (tmp_path / r / "convergence_study" for r in ("r-serial", "r-par"))
    names = sorted(p.name for p in (serial / "scores").glob("*.npz"))
    assert names and names == sorted(p.name for p in (par / "scores").glob("*.npz"))
    for name in names:
        a, b = SF.read_npz(serial / "scores" / name), SF.read_npz(par / "scores" / name)
        np.testing.assert_allclose(b["embedding"], a["embedding"], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(b["position_m"], a["position_m"], rtol=1e-3, atol=1e-4)
    assert SC.flow_loss_curves(tmp_path / "r-par", [1]).keys() == {"vanilla", "ig", "ig-sg"}
    for arm, by_seed in SC.flow_loss_curves(tmp_path / "r-serial", [1]).items():
        got = SC.flow_loss_curves(tmp_path / "r-par", [1])[arm]["1"]
        assert got == pytest.approx(by_seed["1"], rel=1e-4)
    status = json.loads((tmp_path / "back" / "c2_scores.json").read_text())
    assert status["final"] and all(status["complete"].values())
    import tarfile

    with tarfile.open(tmp_path / "back" / "c2_scores.tar") as tar:
        assert {f"scores/{n}" for n in names} | {"flow_loss.csv"} <= set(tar.getnames())
    stamp = (par / "scores" / names[0]).stat().st_mtime_ns
    subprocess.run(cmd, check=True, capture_output=True)
    assert (par / "scores" / names[0]).stat().st_mtime_ns == stamp


def test_seed_0s_first_vanilla_run_fixes_s_v_and_stands_beside(tmp_path):
    """Amendment 14: seed 0's first vanilla run (kept as 'vanilla-unpaired') decides S_v, here 1000, though the paired
    rerun's curve would decide 2000; seed 0's speed-ups use the rerun, which is pending until it lands; the first run's
    curve is in the summary and the CSV beside the others."""
    first = {250: 2.0, 500: 1.4, 1000: 1.4, 2000: 1.4}  # flat at 1000
    rerun = {250: 2.0, 500: 1.4, 1000: 1.0, 2000: 0.98}  # would be flat only after 2000
    for k, v in first.items():
        _write(tmp_path, SC.UNPAIRED, 0, k, 1.0, v)
        _write(tmp_path, "ig", 0, k, 1.4, v)
    out = SC.summarize(tmp_path, [0], resamples=20)
    assert out["final_step"] == 1000 and "amendment 14" in out["decided_on"]
    assert out["speed_ups"]["ig w=1.4"]["seeds"] == []  # no paired vanilla for seed 0 yet
    assert set(out["unpaired"]["curve"]) == {"250", "500", "1000", "2000"}
    for k, v in rerun.items():
        _write(tmp_path, "vanilla", 0, k, 1.0, v)
    out = SC.summarize(tmp_path, [0], resamples=20)
    assert out["final_step"] == 1000
    claim = out["speed_ups"]["ig w=1.4"]["per_seed"]["0"]
    assert claim["target_fd"] == pytest.approx(out["curves"]["vanilla w=1"]["0"]["1000"])  # the rerun's value at S_v
    import pandas as pd

    df = pd.read_csv(SC.write_curves_csv(tmp_path, [0]))
    assert len(df[(df.run == "vanilla-unpaired w=1") & (df.metric == "fd_judge")]) == 4


def test_clip_noise_pairs_every_difference_by_clip(tmp_path, capsys):
    """The diagnostic beside C2: a halving of the futures' distance is a change whose interval excludes 0; a
    checkpoint identical to the previous one, and an arm identical to vanilla, are 0 with the interval [0, 0] (the
    same resampled clips on both sides); the command writes the JSON and prints every point; an empty ledger is a
    short error."""
    from analysis.cli import main

    for k, level in ((250, 2.0), (500, 1.0), (1000, 1.0)):
        _write(tmp_path, "vanilla", 0, k, 1.0, level)
        _write(tmp_path, "ig", 0, k, 1.4, level)
    res = SC.clip_noise(tmp_path, [0, 1], resamples=200)
    assert list(res["seeds"]) == ["0"] and res["seeds"]["0"]["clips"] == 30
    van, ig = res["seeds"]["0"]["curves"]["vanilla w=1"], res["seeds"]["0"]["curves"]["ig w=1.4"]
    assert set(van) == {"250", "500", "1000"} and "change_from_previous" not in van["250"]
    drop = van["500"]["change_from_previous"]
    assert drop["from"] == 250 and drop["value"] < 0 and drop["interval"][1] < 0
    same = van["1000"]["change_from_previous"]
    assert same["value"] == 0 and same["interval"] == [0, 0]
    for k in ("250", "500", "1000"):
        assert ig[k]["minus_vanilla"] == {"value": 0.0, "interval": [0.0, 0.0]}
        assert ig[k]["position_minus_vanilla"] == {"value": 0.0, "interval": [0.0, 0.0]}
        assert ig[k]["position_m"] == van[k]["position_m"]
        assert ig[k]["fd_judge"] == van[k]["fd_judge"]
        lo, hi = van[k]["interval"]
        assert 0 < lo < hi
    assert van["250"]["position_m"] == {"value": 2.0, "interval": [2.0, 2.0]}  # every future 2 m off: no spread
    assert van["500"]["position_m"]["value"] == 1.0

    assert main(["study-convergence-noise", "--results", str(tmp_path), "--seeds", "0", "--resamples", "100",
                 "--judge", "none"]) == 0
    printed = capsys.readouterr().out
    assert "ig w=1.4 @  500" in printed and "− vanilla +0.00 [+0.00, +0.00]" in printed
    assert "| position 1.00 m [1.00, 1.00]" in printed
    assert json.loads((tmp_path / "convergence_noise.json").read_text())["resamples"] == 100
    assert main(["study-convergence-noise", "--results", str(tmp_path / "empty"), "--seeds", "0", "--judge",
                 "none"]) != 0
    assert "no score files of the convergence study" in capsys.readouterr().err


def test_summary_only_rewrites_the_committed_ledgers_summary_without_training(tmp_path, capsys):
    """`--summary-only` on a copy of the committed C2 ledger trains and judges nothing (no study folder is made) and
    writes the summary from the score files: seed 0's vanilla reaches its own value at S_v before 1000 steps and
    none of its IG arms reaches it by 2000, so each reads at most that step ÷ 2000 (amendment 20), and 1 in the
    registered form kept beside it."""
    import shutil

    from analysis.cli import main

    results = tmp_path / "ablation"
    shutil.copytree(Path(SC.__file__).resolve().parents[1] / "assets" / "ablation" / "convergence_study",
                    results / "convergence_study")
    out = tmp_path / "study"
    assert main(["study-convergence", "--summary-only", "--out", str(out), "--seeds", "0", "--results", str(results),
                 "--resamples", "100"]) == 0
    assert not out.exists()
    s = json.loads((results / "convergence_study.json").read_text())
    van = {int(k): v for k, v in s["curves"]["vanilla w=1"]["0"].items()}
    assert s["final_step"] == 2000 and min(van, key=van.get) == 1000 and van[2000] > van[1000]
    v_step, bound = SC.log_steps_to_reach(van, van[2000], 2000)
    assert 500 < v_step < 1000 and bound == "reached"
    for name in ("ig w=1", "ig w=1.4", "ig-sg w=1"):
        row = s["speed_ups"][name]["per_seed"]["0"]
        assert row["bound"] == "not reached" and row["vanilla_steps"] == pytest.approx(v_step)
        assert row["speed_up"] == pytest.approx(v_step / 2000) and row["speed_up_registered"] == 1.0
    assert "speed-up median 0.4" in capsys.readouterr().out


def _tiny_judge(path):
    """A small real WorldJudge (feature_dim 6: clip embeddings 12 wide), saved at `path`."""
    import torch

    from reworld.evaluation.judge import WorldJudge

    torch.manual_seed(0)
    judge = WorldJudge(context_frames=5, future_frames=16, frame_rate=4.0, frame_size=(32, 64), widths=(8, 16),
                       frame_stages=1, feature_dim=6, token_dim=16, num_heads=2, num_layers=1).eval()
    judge.save_pretrained(path, safe_serialization=True)
    return judge


def test_what_moves_fd_judge_known_answers(tmp_path, capsys):
    """Amendment 21's reading of a curve, on answers known exactly: futures that are their clips' real embeddings
    shifted by one vector s put all of the change into fd_judge's means' term (‖s‖²), leave the covariances' term at
    what duplicating each clip does to the covariance, and sit ‖s‖ from their own clips; the judge's speed reading of
    an embedding is exactly the mean of its per-step speed readings over the future (a tiny real judge, read both
    ways), so the futures read s's share of the speed head faster than their clips; a judge of another width is a
    short error."""
    import torch

    from analysis.cli import main

    judge = _tiny_judge(tmp_path / "judge")
    read = SC.speed_reader(tmp_path / "judge")
    videos = torch.rand(2, 21, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        out = judge(videos, output_embedding=True)
    np.testing.assert_allclose(read(out.embedding.numpy()), out.speed.mean(1).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2 × 6 wide; the score files' are 5"):
        read(np.zeros((3, 5)))

    rng = np.random.default_rng(0)
    n, d = 40, 12
    real = rng.normal(size=(n, d))
    clip_of = np.repeat(np.arange(n), 2)
    shift = rng.normal(size=d)
    for k, scale in ((500, 0.0), (1000, 1.0)):
        SF.write_npz({"embedding": real[clip_of] + scale * shift, "clip_of": clip_of,
                      "position_m": np.ones((2 * n, 16)), "real_embedding": real, "frame_rate": np.array(4.0)},
                     SC.score_path(tmp_path, "vanilla", 0, k, 1.0))
    res = SC.clip_noise(tmp_path, [0], checkpoints=(500, 1000), resamples=100, judge=tmp_path / "judge")
    van = res["seeds"]["0"]["curves"]["vanilla w=1"]
    c = (2 * n - 2) / (2 * n - 1)  # each clip twice: the generated covariance is c × the real one
    dup = float(np.trace(np.cov(real, rowvar=False))) * (1 - np.sqrt(c)) ** 2
    for k, scale in (("500", 0.0), ("1000", 1.0)):
        t = van[k]["terms"]
        assert t["mean"]["value"] == pytest.approx(scale ** 2 * float(shift @ shift), abs=1e-9)
        assert t["covariance"]["value"] == pytest.approx(dup, rel=1e-4, abs=1e-6)
        assert t["paired_distance"]["value"] == pytest.approx(scale * float(np.linalg.norm(shift)))
        assert t["spread"]["generated"] == pytest.approx(c * t["spread"]["real"])
        assert van[k]["fd_judge"] == pytest.approx(t["mean"]["value"] + t["covariance"]["value"])
    w, scale_v = judge.speed_head.weight.detach().double().numpy()[0], judge.config.speed_scale
    assert van["500"]["speed_bias_mps"] == {"value": 0.0, "interval": [0.0, 0.0]}
    assert van["1000"]["speed_bias_mps"]["value"] == pytest.approx(float(shift[6:] @ w) * scale_v)
    change = van["1000"]["change_from_previous"]
    assert change["terms"]["mean"]["value"] == pytest.approx(float(shift @ shift))
    assert change["terms"]["covariance"]["value"] == pytest.approx(0.0, abs=1e-6)
    lo, hi = change["terms"]["mean"]["interval"]
    assert lo == pytest.approx(hi) == pytest.approx(float(shift @ shift))  # every resample shifts alike
    assert main(["study-convergence-noise", "--results", str(tmp_path), "--seeds", "0", "--resamples", "100",
                 "--judge", str(tmp_path / "judge")]) == 0
    printed = capsys.readouterr().out
    assert f"means' term {shift @ shift:.2f}" in printed and "speed − real" in printed


def test_score_speed_script_reads_a_known_shift(tmp_path, capsys):
    """scripts/score_speed.py: futures whose embeddings are their clips' real ones shifted by s read s's share of the
    speed head faster than their clips, in every resample; against an unshifted partner, paired by clip, the same per
    pair and over pairs (t interval of equal pairs: a point); a partner missing or of other clips is a short error."""
    mod = _script("score_speed")
    judge = _tiny_judge(tmp_path / "judge")
    rng = np.random.default_rng(1)
    n = 25
    real = rng.normal(size=(n, 12))
    clip_of = np.repeat(np.arange(n), 3)
    shift = rng.normal(size=12)
    files = []
    for name, scale in (("a", 1.0), ("b", 1.0), ("ref", 0.0), ("ref2", 0.0)):
        files.append(tmp_path / f"{name}.npz")
        SF.write_npz({"embedding": real[clip_of] + scale * shift, "clip_of": clip_of,
                      "position_m": np.ones((3 * n, 16)), "real_embedding": real, "frame_rate": np.array(4.0)},
                     files[-1])
    want = float(shift[6:] @ judge.speed_head.weight.detach().double().numpy()[0]) * judge.config.speed_scale
    assert mod.main([str(files[0]), str(files[1]), "--minus", str(files[2]), str(files[3]), "--judge",
                     str(tmp_path / "judge"), "--resamples", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    a = out["files"][str(files[0])]
    assert a["value"] == pytest.approx(want) and a["interval"] == pytest.approx([want, want]) and a["clips"] == n
    assert out["files"][str(files[2])]["value"] == pytest.approx(0.0, abs=1e-9)
    assert [p["value"] for p in out["pairs"]] == pytest.approx([want, want])
    over = out["over_pairs"]
    assert over["mean"] == pytest.approx(want) and over["t_lo"] == pytest.approx(want)
    assert over["boot"] == pytest.approx([want, want])
    assert mod.main([str(files[0]), "--minus", str(files[2]), str(files[3]), "--judge", str(tmp_path / "judge")]) == 2
    assert "2 files for 1" in capsys.readouterr().err
    other = tmp_path / "other.npz"
    SF.write_npz({"embedding": real[:10], "clip_of": np.arange(10), "position_m": np.ones((10, 16)),
                  "real_embedding": real[:10], "frame_rate": np.array(4.0)}, other)
    assert mod.main([str(files[0]), "--minus", str(other), "--judge", str(tmp_path / "judge")]) == 2
    assert "different numbers of clips" in capsys.readouterr().err


def _script(name: str):
    """scripts/<name>.py, loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts"
                                                  / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _speed_blur_probe():
    return _script("speed_blur_probe")


def test_ego_speed_shifted_changes_only_the_stated_speed():
    """D12's counterfactual: the wrapped clip's ego status speed is `shift` higher; its frames, acceleration, yaw rate
    and command are the logged ones, and the wrapped set is left unchanged."""
    import torch

    from reworld.data.types import Clip, Observation

    obs = Observation(frames=torch.zeros(2, 3, 4, 4), ego_status=torch.tensor([7.0, 0.5, 0.02]), command=1)
    clip = Clip("scene-0001", "tok", 0, obs, None)
    shifted = _speed_blur_probe().EgoSpeedShifted([clip], 2.0)
    got = shifted[0]
    assert len(shifted) == 1 and got.observation.ego_status.tolist() == pytest.approx([9.0, 0.5, 0.02])
    assert got.observation.frames is obs.frames and got.observation.command == 1 and got.scene_name == "scene-0001"
    assert clip.observation.ego_status.tolist() == pytest.approx([7.0, 0.5, 0.02])


def test_speed_blur_probe_matches_blur_by_sharpness():
    """scripts/speed_blur_probe.py (docs/world4s.md D7): the sharpness of one bright pixel is its Laplacian's energy
    (20 a² over the interior); the σ at which blurred frames keep a share of it is read back from the grid, exactly at a
    grid point and between grid points by interpolation; frames as sharp as the real ones get 0."""
    import torch

    P = _speed_blur_probe()
    v = torch.zeros(1, 1, 3, 10, 12)
    v[0, 0, :, 4, 5] = 0.5
    assert float(P.sharpness(v)[0, 0]) == pytest.approx(20 * 0.25 / (8 * 10))

    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 5, 3, 32, 48, generator=g) * 2 - 1  # 2 context + 3 future frames
    grid = np.array(P.GRID)
    sharp = P.sharpness(real[:, 2:]).numpy().mean(0)
    ratios = np.stack([P.sharpness(P.gaussian_blur(real[:, 2:], s)).numpy().mean(0) / sharp for s in grid])
    assert np.all(np.diff(ratios, axis=0) < 0)
    future = P.blur_frames(real, 2, [0.0, 1.0, 1.5])
    assert torch.equal(future[:, :3], real[:, :3])  # the context and an unblurred future frame stay as they were
    target = P.sharpness(future[:, 2:]).numpy().mean(0) / sharp
    assert P.matched_sigmas(target, grid, ratios) == pytest.approx([0.0, 1.0, 1.5], abs=1e-6)
    mid = 0.5 * (ratios[3] + ratios[4])  # halfway between σ = 1 and 1.25 in sharpness
    assert P.matched_sigmas(mid, grid, ratios)[0] == pytest.approx(1.125)
    assert P.matched_sigmas(np.full(3, 1e-9), grid, ratios) == pytest.approx([grid[-1]] * 3)
    with pytest.raises(ValueError, match="does not fall"):
        P.matched_sigmas(target, grid, ratios[::-1])
    x = np.linspace(6.0, 10.0, 9)
    fit = P.regression(0.5 * x + 1.0, x, np.random.default_rng(0).integers(0, 9, (50, 9)))
    assert fit["slope"] == pytest.approx(0.5) and fit["intercept"] == pytest.approx(1.0)
    assert fit["slope_interval"] == pytest.approx([0.5, 0.5]) and fit["intercept_interval"] == pytest.approx([1.0, 1.0])
    # --compare (D10): two readings files of the same clips, the generated arm's slope and shift in each and A − B
    real = np.linspace(6.0, 10.0, 20)[:, None] + np.zeros((1, 4))
    a = {"real_speed": real, "generated_speed": 0.6 * real + 3.0}
    b = {"real_speed": real, "generated_speed": 0.5 * real + 3.5}
    out = P.compare(a, b, resamples=100)
    assert out["a"]["slope"] == pytest.approx(0.6) and out["b"]["slope"] == pytest.approx(0.5)
    assert out["a_minus_b"]["slope"] == pytest.approx(0.1) and out["a_minus_b"]["slope_interval"] == pytest.approx([0.1, 0.1])
    assert out["a"]["shift"] == pytest.approx(-0.4 * 8.0 + 3.0) and out["a_minus_b"]["shift"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="not of the same clips"):
        P.compare(a, {"real_speed": real + 1, "generated_speed": real})


def test_score_speed_pull_reads_a_known_slope(tmp_path, capsys):
    """scripts/score_speed.py --pull (docs/world4s.md, D9): futures whose embeddings are α × their real clip's + (1 − α)
    × one fixed embedding m read α × the real clip's speed + (1 − α) × m's (the reading is affine), so the slope is α and
    the intercept (1 − α) · read(m) in every resample; against futures equal to their clips, α − 1."""
    mod = _script("score_speed")
    _tiny_judge(tmp_path / "judge")
    rng = np.random.default_rng(2)
    n, alpha = 30, 0.58
    real, m = rng.normal(size=(n, 12)), rng.normal(size=12)
    clip_of = np.repeat(np.arange(n), 2)
    files = [tmp_path / "pulled.npz", tmp_path / "same.npz"]
    for path, fut in zip(files, (alpha * real[clip_of] + (1 - alpha) * m, real[clip_of])):
        SF.write_npz({"embedding": fut, "clip_of": clip_of, "position_m": np.ones((2 * n, 16)),
                      "real_embedding": real, "frame_rate": np.array(4.0)}, path)
    read_m = float(SC.speed_reader(tmp_path / "judge")(m[None])[0])
    assert mod.main([str(files[0]), "--minus", str(files[1]), "--pull", "--judge", str(tmp_path / "judge"),
                     "--resamples", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    a = out["files"][str(files[0])]
    assert a["slope"] == pytest.approx(alpha) and a["slope_interval"] == pytest.approx([alpha, alpha])
    assert a["intercept"] == pytest.approx((1 - alpha) * read_m) and a["clips"] == n
    assert out["files"][str(files[1])]["slope"] == pytest.approx(1.0)
    assert out["pairs"][0]["slope_difference"] == pytest.approx(alpha - 1)
    assert out["pairs"][0]["interval"] == pytest.approx([alpha - 1, alpha - 1])


def _speed_information():
    return _script("speed_information")


def _speed_tables(n: int, seed: int, context: int = 5, future: int = 16) -> dict:
    """Clips whose future speed is exactly 2 + 0.8·v0 + 1.5·a0: what the ego status says, foretold without error."""
    rng = np.random.default_rng(seed)
    ego = np.stack([rng.uniform(3, 12, n), rng.normal(0, 0.5, n), rng.normal(0, 0.05, n)], axis=1)
    fut = 2 + 0.8 * ego[:, 0] + 1.5 * ego[:, 1]
    speed = np.concatenate([np.repeat(ego[:, :1], context, 1), fut[:, None] + np.linspace(-0.3, 0.3, future)], 1)
    return {"ego_status": ego, "command": rng.integers(0, 3, n), "speed": speed,
            "lead0": np.stack([np.ones(n), rng.uniform(5, 40, n), rng.normal(0, 1, n)], axis=1), "context": context}


def test_speed_information_known_answers():
    """D11's reading: a future speed the ego status foretells exactly gives the linear predictors slope 1, R² 1 and
    offset 0; futures that keep half of each clip's real reading give a generated/real slope ratio of exactly 0.5 on
    every resample; readings of other clips are refused."""
    script = _speed_information()
    train, val = _speed_tables(200, 0), _speed_tables(60, 1)
    truth = val["speed"][:, 5:]
    generated = 0.5 * truth + 0.5 * 7.0
    out = script.report(train, val, {"truth_speed": truth, "real_speed": truth, "generated_speed": generated},
                        resamples=200)
    for name in ("b_linear", "e_linear_given"):
        p = out["predictors"][name]
        assert p["slope_on_truth"] == pytest.approx(1.0) and p["r2"] == pytest.approx(1.0)
        assert p["offset"] == pytest.approx(0.0, abs=1e-9) and p["slope_interval"] == pytest.approx([1.0, 1.0])
    assert out["predictors"]["a_persistence"]["r2"] < 0.9  # the speed at t = 0 alone does not foretell it
    coef = out["coefficients"]["e_linear_given"]
    assert coef["speed"] == pytest.approx(0.8) and coef["acceleration"] == pytest.approx(1.5)
    assert coef["yaw_rate"] == pytest.approx(0.0, abs=1e-8)
    assert out["generated_over_real_slope"]["value"] == pytest.approx(0.5)
    assert out["generated_over_real_slope"]["interval"] == pytest.approx([0.5, 0.5])
    assert out["real_reading_on_ego_speed"]["slope"] == pytest.approx(out["truth_on_ego_speed"]["slope"])
    assert out["val_mean_future_speed"] == pytest.approx(truth.mean(1).mean())
    with pytest.raises(ValueError, match="not this val set"):
        script.report(train, val, {"truth_speed": truth + 1, "real_speed": truth, "generated_speed": truth})


def test_speed_information_reads_the_tables(tiny_config_path, capsys):
    """The script end to end on the tiny world: every clip of both splits read from the tables, the JSON printed."""
    script = _speed_information()
    assert script.main(["--config", str(tiny_config_path), "--resamples", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_clips"] > 0 and out["val_clips"] > 0 and set(out["predictors"]) == {
        "a_persistence", "b_linear", "c_boosted", "d_boosted_lead", "e_linear_given"}
    assert set(out["coefficients"]["e_linear_given"]) == {"speed", "acceleration", "yaw_rate", "left", "straight",
                                                          "right"}
    assert 0 < out["val_mean_future_speed"] < 30
    assert script.main(["--config", "/nonexistent.yaml"]) == 2
    assert "speed_information" in capsys.readouterr().err


def test_e18_config_is_c2s_vanilla_with_a_held_context(tmp_path, capsys):
    """E18's run config differs from C2's vanilla arm of the same seed only in loss.context_hold (and its name), and
    the script refuses a folder that is not C2's study folder."""
    script = _script("e18_context_hold")
    base = Path(__file__).resolve().parent.parent / "configs" / "study-c2.yaml"
    got, ref = script.e18_config(base, 2, 0.25), SC.arm_config(base, "vanilla", 2)
    assert got["loss"].pop("context_hold") == 0.25 and got.pop("name") != ref.pop("name")
    assert got == ref and got["train"]["seed"] == 2
    from reworld.config import load_config

    cfg = tmp_path / "e18.yaml"
    cfg.write_text(yaml.safe_dump(script.e18_config(base, 2, 0.25)))
    assert load_config(cfg).loss.context_hold == 0.25
    assert script.main(["--seed", "2", "--study", str(tmp_path / "none")]) == 2
    assert "not C2's study folder" in capsys.readouterr().err


def test_speed_blur_probe_response_known_answers():
    """D12/E18's response: futures whose speed moves 0.3 (first model) and 0.05 (second) per m/s of stated speed read
    exactly those, and 0.25 apart on every resample; files of another shift or other clips are refused."""
    script = _speed_blur_probe()
    rng = np.random.default_rng(0)
    real = rng.uniform(4, 12, (40, 16))
    base = 0.6 * real + 3 + rng.normal(0, 0.2, real.shape)

    def readings(k, shift, stamp=True):
        return {"real_speed": real, "generated_speed": base + k * shift,
                **({"ego_speed_shift": np.array(shift)} if stamp else {})}

    out = script.response([(readings(0.3, 2), readings(0.3, -2)), (readings(0.05, 2, False), readings(0.05, -2))], 2)
    assert [r["value"] for r in out["responses"]] == pytest.approx([0.3, 0.05])
    assert out["responses"][0]["interval"] == pytest.approx([0.3, 0.3])
    assert out["first_minus_second"]["value"] == pytest.approx(0.25)
    assert out["first_minus_second"]["interval"] == pytest.approx([0.25, 0.25])
    with pytest.raises(ValueError, match="not 2"):
        script.response([(readings(0.3, 1), readings(0.3, -2))], 2)
    other = {**readings(0.3, -2), "real_speed": real + 1}
    with pytest.raises(ValueError, match="same clips"):
        script.response([(readings(0.3, 2), other)], 2)


def test_pair_scores_known_answers(tmp_path, capsys):
    """scripts/pair_scores.py (E18): a file against itself differs by exactly 0; position errors of 1 m and 1.5 m at
    every frame read 1 and 1.5, 0.5 apart on every resample; fd_judge is `fd_of_clips` of all clips; files of other
    clips are refused with a short error."""
    script = _script("pair_scores")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(30, 8)).astype(np.float32)
    clip_of = np.repeat(np.arange(30), 2)

    def scores(pos: float, shift: float) -> dict:
        return {"embedding": real[clip_of] + shift + rng.normal(0, 0.3, (60, 8)).astype(np.float32),
                "clip_of": clip_of, "position_m": np.full((60, 16), pos), "real_embedding": real,
                "frame_rate": np.array(4.0)}

    a, b = scores(1.5, 0.5), scores(1.0, 0.0)
    out = script.pair(a, b, resamples=200)
    assert out["a"]["position_m"] == pytest.approx(1.5) and out["b"]["position_m"] == pytest.approx(1.0)
    assert out["a_minus_b"]["position_m"] == pytest.approx(0.5)
    assert out["a_minus_b"]["position_interval"] == pytest.approx([0.5, 0.5])
    assert out["a"]["fd_judge"] == pytest.approx(SF.fd_of_clips(a, np.arange(30)))
    assert out["a"]["fd_judge"] > out["b"]["fd_judge"] and out["a_minus_b"]["fd_interval"][0] > 0
    same = script.pair(a, a, resamples=200)["a_minus_b"]
    assert same["fd_judge"] == 0 and same["fd_interval"] == [0, 0] and same["position_m"] == 0
    SF.write_npz(a, tmp_path / "a.npz")
    SF.write_npz({**b, "real_embedding": real + 1}, tmp_path / "b.npz")
    assert script.main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 2
    assert "not of the same clips" in capsys.readouterr().err


def test_r3_gate_known_answers(tmp_path, capsys):
    """R3's gate (docs/world4s.md) through `clip_noise`'s document: score files whose position errors are constant
    per arm give d_g and d_s exactly; the mean of d_g − d_s over the five seeds and its t interval have known
    answers; a mean of exactly 0 does not train; a document without seed 4 is refused with a short error; a reading
    on fewer seeds says it is not the gate."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(12, 8)).astype(np.float32)
    clip_of = np.repeat(np.arange(12), 2)

    def scores(pos: float) -> dict:
        return {"embedding": real[clip_of] + rng.normal(0, 0.3, (24, 8)).astype(np.float32), "clip_of": clip_of,
                "position_m": np.full((24, 16), pos), "real_embedding": real, "frame_rate": np.array(4.0)}

    diffs = [0.1, 0.2, 0.3, 0.4, 0.5]
    for seed, dd in zip(SC.SEEDS, diffs):
        d_s = 0.05 * seed - 0.1
        for arm, w, pos in (("vanilla", 1.0, 1.0), ("ig", 1.4, 1.0 + d_s + dd), ("ig-sg", 1.0, 1.0 + d_s)):
            path = SC.score_path(tmp_path, arm, seed, SC.R3_GATE_STEP, w)
            path.parent.mkdir(parents=True, exist_ok=True)
            SF.write_npz(scores(pos), path)
    noise = json.loads(json.dumps(SC.clip_noise(tmp_path, SC.SEEDS, checkpoints=(SC.R3_GATE_STEP,), resamples=100)))
    gate = SC.r3_gate(noise)
    assert [gate["seeds"][str(s)]["d_g_minus_d_s"] for s in SC.SEEDS] == pytest.approx(diffs)
    assert gate["seeds"]["4"]["d_s"] == pytest.approx(0.1)
    half = 2.7764451 * np.std(diffs, ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert gate["mean"] == pytest.approx(0.3) and gate["t_interval"] == pytest.approx([0.3 - half, 0.3 + half])
    assert gate["trains"] and gate["registered"]
    for s in noise["seeds"].values():  # every seed's IG arm as far off as its stop-gradient arm: a mean of 0
        s["curves"]["ig w=1.4"] = s["curves"]["ig-sg w=1"]
    assert SC.r3_gate(noise)["mean"] == 0 and not SC.r3_gate(noise)["trains"]
    del noise["seeds"]["4"]
    with pytest.raises(ValueError, match="seed 4: no ig w=1.4"):
        SC.r3_gate(noise)
    path = tmp_path / "noise.json"
    path.write_text(json.dumps(noise))
    script = _script("r3_gate")
    assert script.main([str(path), "--seeds", "0", "1", "2", "3"]) == 0
    assert "not above 0: a preview, not the gate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main([str(path)])
    assert "seed 4: no ig w=1.4" in capsys.readouterr().err
