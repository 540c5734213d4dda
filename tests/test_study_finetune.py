"""The claims study's fine-tuning part (docs/study.md §3): the summary's known answers, and the driver end to end on
the tiny world (fine-tuning from a saved Video DiT, judge scores, summary, resume)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import study_finetune as SF


def _scores(noise: float, seed: int, n: int = 40, samples: int = 3, d: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, d))
    clip_of = np.repeat(np.arange(n), samples)
    gen = real[clip_of] + noise * rng.normal(size=(n * samples, d)) + noise
    return {"embedding": gen, "clip_of": clip_of, "position_m": np.full((n * samples, 16), noise),
            "real_embedding": real, "frame_rate": np.array(4.0)}


def test_summary_relative_fd_change_and_verdict():
    """Futures nearer the real clips in the judge's features (less noise) in every seed: the relative change of
    fd_judge is negative with both intervals below the smallest effect: 'reproduces'; the comparison of the loss alone
    is reported beside it; a missing seed leaves the claim pending."""
    scores = {}
    for s in (0, 1, 2):
        scores["lig0", s, 1.0] = _scores(1.0, 10 + s)
        scores["lig0.5", s, 1.4] = _scores(0.3, 10 + s)
        scores["lig0.5", s, 1.0] = _scores(0.9, 10 + s)
    out = SF.summarize(scores, [0, 1, 2], resamples=200)
    c = out["comparisons"]["lig0.5 w=1.4 − lig0 w=1"]
    assert c["mean"] < -0.5 and c["boot_hi"] < SF.SMALLEST_EFFECT and c["t_hi"] < SF.SMALLEST_EFFECT
    assert c["verdict"] == "reproduces" and c["role"] == "the claim (C1)"
    assert out["comparisons"]["lig0.5 w=1 − lig0 w=1"]["verdict"].startswith("the loss alone: ")
    assert out["means"]["lig0 w=1"]["0"]["position_m_4s"] == pytest.approx(1.0)
    # the per-seed effect is the ratio of the two distances on every clip
    fd = SF.fd_of_clips(scores["lig0.5", 0, 1.4], np.arange(40)) / SF.fd_of_clips(scores["lig0", 0, 1.0],
                                                                                    np.arange(40)) - 1
    assert c["per_seed"][0] == pytest.approx(fd)
    del scores["lig0.5", 2, 1.4]
    assert SF.summarize(scores, [0, 1, 2], resamples=50)["comparisons"]["lig0.5 w=1.4 − lig0 w=1"]["verdict"] == \
        "pending (2 of 3 seeds)"
    assert SF.verdict((-0.05, -0.01), (-0.08, -0.001), -0.10) == "reproduces, below the smallest effect"
    assert SF.verdict((-0.05, 0.03), (-0.09, 0.05), -0.10) == "does not"
    assert SF.verdict((-0.3, 0.03), (-0.5, 0.05), -0.10) == "inconclusive"


def test_position_change_known_answer_and_summary_rewritten_from_the_ledger(tmp_path, capsys):
    """§3's secondary metric: a guided arm whose every future is 0.25 m further off at every frame reads +0.25 m over
    the horizon and at each second, with both intervals at +0.25; a clip-dependent offset is averaged per clip first
    (its samples), so a clip with more samples does not weigh more. `--summary-only` rewrites the summary from the
    score files alone and keeps what the last summary recorded of the runs."""
    scores = {}
    for s in (0, 1, 2):
        scores["lig0", s, 1.0] = _scores(1.0, 10 + s)
        scores["lig0.5", s, 1.4] = {**_scores(1.0, 10 + s), "position_m": np.full((120, 16), 1.25)}
        scores["lig0.5", s, 1.0] = _scores(1.0, 10 + s)
    pos = SF.summarize(scores, [0, 1, 2], resamples=100)["comparisons"]["lig0.5 w=1.4 − lig0 w=1"]["position"]
    assert set(pos) == {"unit", "horizon", "1s", "2s", "3s", "4s"}
    for k in ("horizon", "1s", "4s"):
        assert pos[k]["mean"] == pytest.approx(0.25) and pos[k]["per_seed"] == pytest.approx([0.25] * 3)
        assert pos[k]["boot_lo"] == pytest.approx(0.25) and pos[k]["t_hi"] == pytest.approx(0.25)
    # an offset only at 4 s (frame 16 at 4 Hz) on clip 0: the horizon moves by 1/16 of it over 40 clips
    a = {**_scores(1.0, 10), "position_m": np.zeros((120, 16))}
    b = {**a, "position_m": np.zeros((120, 16))}
    b["position_m"][b["clip_of"] == 0, 15] = 4.0
    one = SF.position_change({("x", 0, 1.0): b, ("r", 0, 1.0): a}, "x", 1.0, "r", 1.0, [0], 50)
    assert one["4s"]["mean"] == pytest.approx(0.1) and one["horizon"]["mean"] == pytest.approx(4.0 / 16 / 40)
    assert one["1s"]["mean"] == 0 and one["1s"]["t_lo"] == float("-inf")  # one seed: no t interval
    # three futures of clip 0 at 1 m, one of clip 1 at 0 m: per clip 1 and 0 (the futures' own mean would be 0.75)
    uneven = {"real_embedding": np.zeros((2, 6)), "clip_of": np.array([0, 0, 0, 1]),
              "position_m": np.array([[1.0], [1.0], [1.0], [0.0]])}
    assert SF.clip_position(uneven).ravel().tolist() == [1.0, 0.0]

    results = tmp_path / "ablation"
    (results / "finetune_study" / "scores").mkdir(parents=True)
    for (arm, seed, w), s in scores.items():
        SF.write_npz(s, SF.score_path(results, arm, seed, w))
    (results / "finetune_study.json").write_text(json.dumps({"command": "python -m analysis study-finetune --out X",
                                                             "samples": 3}))
    from analysis.cli import main
    assert main(["study-finetune", "--summary-only", "--results", str(results), "--resamples", "50"]) == 0
    out = json.loads((results / "finetune_study.json").read_text())
    assert out["command"] == "python -m analysis study-finetune --out X" and out["samples"] == 3
    assert out["comparisons"]["lig0.5 w=1.4 − lig0 w=1"]["position"]["horizon"]["mean"] == pytest.approx(0.25)
    assert "position error, arm − reference [m]: horizon +0.25" in capsys.readouterr().out
    assert main(["study-finetune", "--summary-only", "--results", str(tmp_path / "none")]) == 2


def test_finetune_study_end_to_end(tiny_run, tiny_config_path, tiny_judge, tmp_path, monkeypatch):
    """One seed on the tiny world: both arms fine-tune the checkpoint's Video DiT (λ_ig from the arm, the registered
    schedule), every val clip × 2 futures is judged at each arm's w, the summary has both comparisons; a second call
    runs nothing again."""
    src, _ = tiny_run
    monkeypatch.setattr("analysis.study_planner.IN_PROCESS", True)  # the commands without interpreter start-up
    out, results = tmp_path / "c1", tmp_path / "results"
    summary = SF.run_study(out, src, tiny_config_path, [0], samples=2, results=results, max_steps=2, resamples=20,
                           judge=str(tiny_judge), sample_steps=2, log=lambda m: None)
    assert set(summary["comparisons"]) == {"lig0.5 w=1.4 − lig0 w=1", "lig0.5 w=1 − lig0 w=1"}
    cfg = json.loads((out / "lig0.5-s0" / "config.json").read_text())
    assert cfg["loss"]["lambda_ig"] == 0.5 and cfg["video"]["init_from"].endswith("video_dit")
    assert cfg["train"]["lr_schedule"] == "constant_with_warmup" and cfg["train"]["lr"] == 1e-4
    assert json.loads((out / "lig0-s0" / "config.json").read_text())["loss"]["lambda_ig"] == 0.0
    ledger = results / "finetune_study" / "scores"  # the committed score files
    s = SF.read_npz(ledger / "lig0.5-s0-w1.4.npz")
    assert len(s["embedding"]) == 2 * len(s["real_embedding"]) and s["position_m"].shape[0] == len(s["embedding"])
    stamp = (ledger / "lig0-s0-w1.npz").stat().st_mtime_ns
    SF.run_study(out, src, tiny_config_path, [0], samples=2, results=results, max_steps=2, resamples=20,
                 judge=str(tiny_judge), sample_steps=2, log=lambda m: None)
    assert (ledger / "lig0-s0-w1.npz").stat().st_mtime_ns == stamp
    assert (results / "finetune_study.csv").is_file() and (results / "finetune_study.json").is_file()
    # another machine with only the committed results: nothing is trained or scored again, the summary is the same
    again = SF.run_study(tmp_path / "elsewhere", src, tiny_config_path, [0], samples=2, results=results, max_steps=2,
                         resamples=20, judge=str(tiny_judge), sample_steps=2, log=lambda m: None)
    assert not (tmp_path / "elsewhere" / "lig0-s0").exists()
    assert again["comparisons"] == summary["comparisons"]


def test_c1s_ledger_names_the_model_its_seeds_were_fine_tuned_from():
    """C1 fine-tuned R1's vanilla Video DiT (width 128); a seed added from today's shipped vanilla (R2, width 192)
    would be another study, so its ledger refuses it, naming what differs."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    with pytest.raises(ValueError, match="video_dit_digest"):
        SF.check_ledger(root / "assets" / "ablation", root / "configs" / "study-c2.yaml",
                        root / "assets" / "checkpoints" / "vanilla")


def test_score_files_keep_the_real_embeddings_once_and_read_back_exactly(tmp_path):
    """A study's score files share their real clips' embeddings through one `real-<digest>.npy` (the ledgers fit
    `assets/`'s budget); every array reads back bit for bit, old files holding them inline still read, and a missing,
    edited or misnamed shared file is refused naming it."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(5, 4)).astype(np.float32)
    rows = {"embedding": rng.normal(size=(10, 4)).astype(np.float32), "clip_of": np.repeat(np.arange(5), 2),
            "position_m": rng.random((10, 16)), "frame_rate": np.array(4.0)}
    for name in ("a", "b"):
        SF.write_npz({**rows, "real_embedding": real}, tmp_path / f"{name}.npz")
    shared = sorted(tmp_path.glob("real-*.npy"))
    assert len(shared) == 1
    back = SF.read_npz(tmp_path / "b.npz")
    for k, v in {**rows, "real_embedding": real}.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
    np.savez(tmp_path / "old.npz", **rows, real_embedding=real)  # the ledgers' first format
    assert np.array_equal(SF.read_npz(tmp_path / "old.npz")["real_embedding"], real)
    np.save(shared[0], real + 1)
    with pytest.raises(ValueError, match=r"real-[0-9a-f]{16}\.npy.*digest"):
        SF.read_npz(tmp_path / "a.npz")
    shared[0].unlink()
    with pytest.raises(ValueError, match=r"real-[0-9a-f]{16}\.npy.*missing"):
        SF.read_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "bad.npz", **rows, real_embedding_file=np.array("../../etc/x.npy"))
    with pytest.raises(ValueError, match="not a real-<digest>.npy name"):
        SF.read_npz(tmp_path / "bad.npz")
    SF.write_npz({**rows, "real_embedding": real}, tmp_path / "a.npz")  # writing again restores it
    assert np.array_equal(SF.read_npz(tmp_path / "a.npz")["real_embedding"], real)
