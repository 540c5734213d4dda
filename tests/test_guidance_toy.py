"""The intermediate-guidance toy (issue 17): exact metrics with known answers, and our guidance path doing what
Internal Guidance says on a 2-D density we know (trained through our own stage-1 loss and sampler)."""
import math

import numpy as np
import pytest
import torch

from analysis.guidance_toy import SMALL
from reworld.guidance_toy import (ARMS, ToyConfig, ToyFlowDiT, TreeDensity, arm_loss, mmd, sample_toy, sliced_w2,
                                  toy_metrics, train_toy)


def test_sliced_w2_of_a_shift_is_known():
    """Shifting a set by d moves every 1-D projection by d·cos θ: SW2 = |d| / √2 over uniform directions."""
    a = np.random.default_rng(0).standard_normal((3000, 2))
    d = np.array([0.3, -0.4])  # |d| = 0.5
    assert sliced_w2(a, a) == 0.0
    assert sliced_w2(a, a + d, directions=4096) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


def test_mmd_of_two_gaussians_is_known():
    """Unbiased MMD² of N(0, I) and N(μ, I) with an RBF kernel of bandwidth h in 2-D:
    2·c·(1 − exp(−|μ|² / (2(h² + 2)))) with c = h² / (h² + 2); ≈ 0 for one distribution."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2500, 2)), rng.standard_normal((2500, 2))
    mu = np.array([0.5, 0.0])
    h = 1.0
    c = h * h / (h * h + 2)
    expected = 2 * c * (1 - math.exp(-0.25 / (2 * (h * h + 2))))
    assert mmd(a, b + mu, bandwidths=(h,)) == pytest.approx(expected, rel=0.15)
    assert abs(mmd(a, b, bandwidths=(h,))) < 0.1 * expected


def test_density_is_exact_and_its_own_samples_score_as_perfect():
    d = TreeDensity()
    assert np.isclose(d.weights.sum(), 1.0)
    # log p against a brute-force sum of the Gaussians at a few points
    x = np.array([[0.0, -0.5], [0.3, 0.2], [2.0, 2.0]])
    brute = [math.log(sum(w / (2 * math.pi * s * s) * math.exp(-((p - m) ** 2).sum() / (2 * s * s))
                          for w, m, s in zip(d.weights, d.means, d.stds)) + 1e-300) for p in x]
    np.testing.assert_allclose(d.log_prob(x)[:2], brute[:2], rtol=1e-9)
    m = toy_metrics(d.sample(3000, seed=9), d)
    assert m.outlier_rate < 0.02 and m.sliced_w2 < 0.025 and abs(m.mmd) < 2e-3  # sampling noise of 3000 points


def test_arms_are_the_methods_losses():
    assert arm_loss("vanilla", 1.4).lambda_ig == 0.0
    assert arm_loss("ig", 1.4).lambda_ig == 0.5 and arm_loss("ig", 1.4).ig_target_shift == 0.0
    sg = arm_loss("ig_sg", 1.4)
    assert sg.lambda_ig == 0.5 and sg.ig_target_shift == pytest.approx(1 - 1 / 1.4)  # w = 1/(1 − ω) learned
    with pytest.raises(ValueError, match="unknown arm"):
        arm_loss("cfg", 1.4)
    assert set(ARMS) == {"vanilla", "ig", "ig_sg"}


def test_stop_gradient_loss_moves_only_the_final_target():
    """IG's training-loss variant: the final output's target is u + ω·sg(v_f − v_i); the head's stays u, and no
    gradient flows through the shift."""
    from reworld.losses.flow import video_training_losses

    torch.manual_seed(0)
    model = ToyFlowDiT(dim=16, num_blocks=3, head_blocks=(0,))
    for p in model.parameters():  # away from the zero initialisation, so that v_f ≠ v_i
        torch.nn.init.normal_(p, std=0.3)
    x0 = torch.randn(64, 2, 1, 1, 1)
    with torch.no_grad():
        plain = video_training_losses(model, x0, 0, None, arm_loss("ig", 1.4), torch.Generator().manual_seed(3))
        sg = video_training_losses(model, x0, 0, None, arm_loss("ig_sg", 1.4), torch.Generator().manual_seed(3))
    assert sg["ig"] == pytest.approx(float(plain["ig"]))  # the head's loss is unchanged
    # recompute the shifted loss by hand on the same σ and ε
    from reworld.schedulers.flow_match import sample_sigmas

    g = torch.Generator().manual_seed(3)
    cfg = arm_loss("ig_sg", 1.4)
    sigma = sample_sigmas(64, g, cfg.logit_mean, cfg.logit_std, cfg.shift)
    eps = torch.randn(x0.shape, generator=g)
    s = sigma.view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        out = model((1 - s) * x0 + s * eps, sigma, None, 0, return_heads=True)
    target = eps - x0 + cfg.ig_target_shift * (out.sample - out.head_samples[0])
    assert float(sg["gen"]) == pytest.approx(float(((out.sample - target) ** 2).mean()), rel=1e-5)
    gen = video_training_losses(model, x0, 0, None, cfg, torch.Generator().manual_seed(3))["gen"]
    gen.backward()  # the final loss reaches the head through nothing but the stopped shift: no gradient
    assert all(p.grad is None or not p.grad.any() for p in model.heads.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.out.parameters())
    with pytest.raises(ValueError, match="lambda_ig"):
        video_training_losses(model, x0, 0, None, type(cfg)(lambda_ig=0.0, ig_target_shift=0.3),
                              torch.Generator().manual_seed(3))


def test_intermediate_guidance_removes_outliers_on_the_toy():
    """What the method says (IG's 2-D toy): early in training, extrapolating from the intermediate head toward the
    final output (w > 1) pulls samples onto the density: fewer outliers and a higher mean log-density than w = 1,
    and w = 1 is better than the head alone (w = 0). Trained by our stage-1 loss, sampled by our sampler."""
    torch.manual_seed(0)
    d = TreeDensity()
    model = train_toy("ig", 1, ToyConfig(steps=600, batch=256, dim=48), d)
    scores = {w: toy_metrics(sample_toy(model, 4000, w, seed=7, steps=16), d) for w in (0.0, 1.0, 3.0)}
    rates = [scores[w].outlier_rate for w in (0.0, 1.0, 3.0)]
    logp = [scores[w].mean_log_density for w in (0.0, 1.0, 3.0)]
    assert rates[0] > rates[1] + 0.02 and rates[1] > rates[2] + 0.02, rates
    assert logp[0] < logp[1] < logp[2], logp


def test_study_cli_writes_every_arm_and_seed(tmp_path, capsys):
    """`python -m analysis guidance-toy` (docs/study.md §1) on a tiny budget: every arm and seed in the CSV, the
    pre-registered comparisons with intervals and verdicts, the figures; bad input is one error line."""
    import csv
    import json

    from PIL import Image

    from analysis.cli import main

    out = tmp_path / "toy"
    assert main(["guidance-toy", "--seeds", "1", "2", "--steps", "30", "--samples", "300", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "guidance_toy.csv")))
    arms = {r["arm"] for r in rows}
    assert arms == {"vanilla", "IG w=1", "IG w=w*", "IG-sg", "IG head only (w=0)"}
    assert {(r["arm"], r["seed"]) for r in rows} == {(a, s) for a in arms for s in ("1", "2")}
    doc = json.loads((out / "guidance_toy.json").read_text())
    assert len(doc["comparisons"]) == 4 and doc["config"]["guidance"] == 1.4
    for c in doc["comparisons"].values():
        assert c["verdict"] in ("reproduces", SMALL, "does not", "inconclusive") and len(c["per_seed"]) == 2
        assert c["boot_lo"] <= c["mean"] <= c["boot_hi"]
    assert Image.open(out / "guidance_toy.png").size[0] == 5 * 260  # the density and four arms
    assert (out / "guidance_toy.html").is_file()
    assert main(["guidance-toy", "--seeds", "1", "--out", str(out)]) == 2
    assert "at least 2 distinct seeds" in capsys.readouterr().err


def test_verdicts_follow_the_preregistered_rule():
    from analysis.guidance_toy import verdict
    from reworld.evaluation.stats import paired_interval

    assert verdict(paired_interval(np.array([-0.05, -0.06, -0.04, -0.05, -0.055])), 0.01) == "reproduces"
    # a clear effect in the claimed direction inside the smallest effect of interest (amendment 1)
    assert verdict(paired_interval(np.array([-0.005, -0.006, -0.004, -0.005, -0.0055])), 0.01) == SMALL
    assert verdict(paired_interval(np.array([0.001, -0.002, 0.0, 0.002, -0.001])), 0.01) == "does not"
    assert verdict(paired_interval(np.array([-0.03, 0.02, -0.01, 0.015, -0.02])), 0.01) == "inconclusive"


def test_toy_model_folder_round_trips_strictly(tmp_path, capsys):
    """`python -m analysis guidance-toy-model` writes a diffusers folder with toy.json; `load_toy` gives the same
    velocities back, and a folder with a foreign or missing part is one `CheckpointError` naming it."""
    import json

    from analysis.cli import main
    from reworld.guidance_toy import load_toy, toy_velocities
    from reworld.models.layers import CheckpointError

    out = tmp_path / "toy"
    assert main(["guidance-toy-model", "--steps", "20", "--seed", "3", "--out", str(out)]) == 0
    model, meta = load_toy(out)
    assert meta["arm"] == "ig" and meta["seed"] == 3 and meta["config"].steps == 20
    again = train_toy("ig", 3, ToyConfig(steps=20))
    pts = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    for a, b in zip(toy_velocities(model, pts, 0.5), toy_velocities(again, pts, 0.5)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    meta_file = out / "toy.json"
    meta_file.write_text(json.dumps({"arm": "nonsense", "seed": 1, "config": {}}))
    with pytest.raises(CheckpointError, match="unknown arm"):
        load_toy(out)
    meta_file.unlink()
    with pytest.raises(CheckpointError, match="no toy.json"):
        load_toy(out)
    assert main(["guidance-toy-model", "--arm", "other", "--out", str(tmp_path / "x")]) == 2
    assert "--arm must be one of" in capsys.readouterr().err


def test_toy_view_moves_the_samples_the_sampler_moves():
    """The view's frames are the sampler's own states: the last frame's points are `sample_toy`'s at that w and
    seed; the guided arrows are v_i + w (v_f − v_i) (zero length where the fields agree, by construction at w = 1
    they are the final field's); the numbers are the exact metrics of those samples."""
    from analysis.guidance_toy import toy_sweep, toy_sweep_figure, toy_view
    from reworld.guidance_toy import toy_trajectories

    d = TreeDensity()
    model = train_toy("ig", 1, ToyConfig(steps=60, batch=128, dim=32), d)
    xs, sigmas = toy_trajectories(model, 200, 1.7, seed=4, steps=6)
    assert xs.shape == (7, 200, 2) and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    np.testing.assert_allclose(xs[-1], sample_toy(model, 200, 1.7, seed=4, steps=6), atol=1e-6)

    fig, numbers = toy_view(model, d, 1.7, seed=4, samples=200, steps=6, grid=5)
    assert len(fig.frames) == 7
    assert numbers["outlier_rate"] == pytest.approx(toy_metrics(xs[-1], d, seed=1).outlier_rate)
    last = fig.frames[-1].data
    shown = np.concatenate([np.asarray(last[3].x, dtype=float), np.asarray(last[4].x, dtype=float)])
    inside = xs[-1][(np.abs(xs[-1]) <= 1.15).all(1), 0]
    np.testing.assert_allclose(np.sort(shown[~np.isnan(shown)]), np.sort(inside.round(3)), atol=1e-9)
    # at w = 1 the guided arrows are the final ones
    fig1, _ = toy_view(model, d, 1.0, seed=4, samples=50, steps=6, grid=5)
    assert fig1.frames[2].data[1].x == fig1.frames[2].data[2].x and fig1.frames[2].data[1].y == fig1.frames[2].data[2].y

    sweep = toy_sweep(model, d, [0.0, 1.0, 2.0], seed=4, samples=300, steps=6)
    assert sweep["w"] == [0.0, 1.0, 2.0]
    assert sweep["outlier_rate"][1] == pytest.approx(
        toy_metrics(sample_toy(model, 300, 1.0, seed=4, steps=6), d, seed=1).outlier_rate)
    assert len(toy_sweep_figure(sweep, 1.7, {"study": 0.1}).data) == 1
