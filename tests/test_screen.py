"""`python -m analysis screen-video`: world-model screens with several training seeds per arm (analysis/screen.py)."""
from __future__ import annotations

import json

import pytest
import yaml

from analysis import screen as SV


def test_a_screen_trains_and_judges_every_arm_at_every_seed_and_pairs_them(tiny_run, tiny_config_path, tiny_judge,
                                                                          tmp_path, monkeypatch):
    """Two arms (the tiny config and the same at another learning rate) × seeds 0 and 1 on the tiny world: every run
    trained from scratch to its config's budget with its seed, judged on the same clips; the comparison pairs B's
    seed i with A's and pools over both seeds; a second call runs nothing again; bad arms are short errors."""
    src, _ = tiny_run
    monkeypatch.setattr("analysis.study_planner.IN_PROCESS", True)  # the commands without interpreter start-up
    doc = yaml.safe_load(tiny_config_path.read_text())
    doc["train"]["max_steps"]["video"] = 2
    a_cfg, b_cfg = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a_cfg.write_text(yaml.safe_dump(doc))
    doc["train"]["lr"] = 3e-3
    b_cfg.write_text(yaml.safe_dump(doc))
    arms = SV.parse_arms([f"A={a_cfg}", f"B={b_cfg}"])
    out = tmp_path / "screen"
    res = SV.run_screen(out, arms, [0, 1], src, judge=str(tiny_judge), every=1, samples=1, log=lambda m: None)

    for arm in ("A", "B"):
        for seed in (0, 1):
            cfg = json.loads((out / f"{arm}-s{seed}" / "config.json").read_text())
            assert cfg["train"]["seed"] == seed and (cfg["train"]["lr"] == 3e-3) == (arm == "B")
            assert SV.eval_path(out / "evals", arm, seed).is_file()
    c = res["compared"]["B"]
    assert res["control"] == "A" and c["seeds"] == [0, 1]
    d = c["b_minus_a_position_mean_m"]
    assert d["seeds"] == 2 and d["per_seed"] == pytest.approx([r["b_minus_a_position_mean_m"]["mean"]
                                                               for r in c["per_seed"]])
    lo, hi = d["t_over_seeds"]
    assert lo <= d["mean"] <= hi
    # the same clips and samples judged in every run, and the comparison is what compare_evals reads from the evals
    again = SV.compare_evals([str(SV.eval_path(out / "evals", "B", s)) for s in (0, 1)],
                             [str(SV.eval_path(out / "evals", "A", s)) for s in (0, 1)])
    assert again["b_minus_a_position_mean_m"] == d
    assert json.loads((out / "screen.json").read_text())["compared"]["B"]["b_minus_a_position_mean_m"] == d

    stamps = {p: p.stat().st_mtime_ns for p in (out / "evals").glob("*.json")}
    SV.run_screen(out, arms, [0, 1], src, judge=str(tiny_judge), every=1, samples=1, log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in (out / "evals").glob("*.json")} == stamps

    # another machine with the ledger alone (the eval reports) runs nothing and reads the same comparison
    elsewhere = SV.run_screen(tmp_path / "elsewhere", arms, [0, 1], src, judge=str(tiny_judge), every=1, samples=1,
                              log=lambda m: None, evals=out / "evals")
    assert not (tmp_path / "elsewhere" / "A-s0").exists()
    assert elsewhere["compared"]["B"]["b_minus_a_position_mean_m"] == d

    with pytest.raises(ValueError, match="named twice"):
        SV.parse_arms([f"A={a_cfg}", f"A={b_cfg}"])
    with pytest.raises(ValueError, match="at least two arms"):
        SV.parse_arms([f"A={a_cfg}"])
    with pytest.raises(FileNotFoundError, match="no config file"):
        SV.parse_arms([f"A={a_cfg}", f"B={tmp_path / 'missing.yaml'}"])
    with pytest.raises(ValueError, match="NAME=CONFIG"):
        SV.parse_arms([f"A={a_cfg}", str(b_cfg)])



def test_the_screen_takes_a_vae_folder_or_a_run_with_one(tiny_run, tmp_path):
    """`--vae` as the README's screens give it (a VAE's own folder, e.g. assets/checkpoints/world4s_vae) or a run with
    a trained VAE: either is copied once into the screen; anything else is a short error naming the path."""
    src, _ = tiny_run
    weights = "diffusion_pytorch_model.safetensors"
    SV.init_vae(tmp_path / "a", src / "vae")
    SV.init_vae(tmp_path / "b", src)
    for out in ("a", "b"):
        assert (tmp_path / out / "vae" / weights).read_bytes() == (src / "vae" / weights).read_bytes()
    with pytest.raises(FileNotFoundError, match="neither a VAE folder nor a run"):
        SV.init_vae(tmp_path / "c", tmp_path / "a" / "missing")
    with pytest.raises(FileNotFoundError, match="neither a VAE folder nor a run"):
        SV.init_vae(tmp_path / "e", src / "video_dit")
