"""The analysis toolkit: separation metrics, UMAP (seeded, cached, clear errors), velocity discrepancy on a
tiny untrained pipeline, ablation curves, and the CLI's error path."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import ablation as A
from analysis import representations as R
from analysis import velocity as V

STEPS = 3


# --------------------------------------------------------------------------- separation metrics


def _blobs(n=200, d=16, gap=0.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.array(["expert"] * (n // 4) + ["collision"] * (n - n // 4))
    x = rng.normal(size=(n, d))
    x[y == "expert", 0] += gap
    return x, list(y)


def test_probe_auc_is_chance_for_shuffled_labels_and_one_when_separable():
    x, y = _blobs(n=400, gap=0.0)
    chance = R.separation_metrics(x, list(np.random.default_rng(1).permutation(y)))
    assert abs(chance.probe_auc - 0.5) < 0.1, chance
    assert abs(chance.knn_balanced_accuracy - 0.5) < 0.1
    x, y = _blobs(n=400, gap=12.0)
    sep = R.separation_metrics(x, y)
    assert sep.probe_auc > 0.99 and sep.knn_balanced_accuracy > 0.95 and sep.silhouette > 0.2, sep
    assert (sep.n_expert, sep.n_negative, sep.folds) == (100, 300, 5)
    assert sep.per_kind_auc["collision"] > 0.99


def test_separation_errors_are_clear():
    x, y = _blobs(n=40)
    with pytest.raises(ValueError, match="needs both classes"):
        R.separation_metrics(x, ["expert"] * 40)
    with pytest.raises(ValueError, match="at least 2 points per class"):
        R.separation_metrics(x, ["expert"] + ["ttc"] * 39)
    with pytest.raises(ValueError, match="40 feature vectors but 39 labels"):
        R.separation_metrics(x, y[:39])
    # few experts: the folds shrink to fit instead of failing
    assert R.separation_metrics(x, ["expert"] * 3 + ["ttc"] * 37).folds == 3


# --------------------------------------------------------------------------- UMAP


@pytest.fixture(scope="module")
def small_feats():
    x, y = _blobs(n=60, d=8, gap=6.0, seed=3)
    return x.astype(np.float32), y


def test_umap_is_reproducible_with_a_seed(small_feats):
    x, _ = small_feats
    a = R.umap_embedding(x, random_state=0, n_neighbors=10)  # first call pays numba's JIT
    b = R.umap_embedding(x, random_state=0, n_neighbors=10)
    assert a.shape == (60, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert R.umap_embedding(x, n_components=3, random_state=0, n_neighbors=10).shape == (60, 3)


def test_umap_errors_are_clear(small_feats):
    x, _ = small_feats
    with pytest.raises(ValueError, match=r"10 points are too few for n_neighbors=15.*n_neighbors ≤ 9"):
        R.umap_embedding(x[:10], n_neighbors=15)
    with pytest.raises(ValueError, match="identical \\(constant features\\)"):
        R.umap_embedding(np.ones((40, 8)), n_neighbors=5)
    with pytest.raises(ValueError, match="NaN or inf"):
        R.umap_embedding(np.where(np.eye(60, 8) > 0, np.nan, x), n_neighbors=5)
    with pytest.raises(ValueError, match="n_components must be 2 or 3"):
        R.umap_embedding(x, n_components=4)
    with pytest.raises(ValueError, match="2-D array"):
        R.umap_embedding(x[0])


def test_umap_cache_returns_the_same_coordinates_without_refitting(small_feats, tmp_path, monkeypatch):
    x, _ = small_feats
    first = R.umap_embedding(x, random_state=0, n_neighbors=10, cache_dir=tmp_path, cache_key="ckpt-a|block1")
    files = list(tmp_path.glob("umap-*.npy"))
    assert len(files) == 1

    calls = []

    def fake_fit(feats, **params):
        calls.append(params)
        return np.zeros((len(feats), params["n_components"]), dtype=np.float32)

    monkeypatch.setattr(R, "_fit_umap", fake_fit)
    t0 = time.perf_counter()
    again = R.umap_embedding(x, random_state=0, n_neighbors=10, cache_dir=tmp_path, cache_key="ckpt-a|block1")
    assert time.perf_counter() - t0 < 1.0 and not calls
    np.testing.assert_array_equal(first, again)
    # another checkpoint/layer key, another seed or other features are other entries, fitted anew
    R.umap_embedding(x, random_state=0, n_neighbors=10, cache_dir=tmp_path, cache_key="ckpt-b|block1")
    R.umap_embedding(x, random_state=1, n_neighbors=10, cache_dir=tmp_path, cache_key="ckpt-a|block1")
    R.umap_embedding(x + 1, random_state=0, n_neighbors=10, cache_dir=tmp_path, cache_key="ckpt-a|block1")
    assert len(calls) == 3 and len(list(tmp_path.glob("umap-*.npy"))) == 4


def test_embedding_figures(small_feats):
    x, y = small_feats
    meta = [{"scene": f"scene-{i}", "sample_token": "abcdef0123", "summary": "end (20.0, 0.0) m",
             "pdm": {"nc": 1.0, "dac": 0.0, "ttc": 1.0, "ep": 0.5, "c": 1.0, "pdms": 0.0}, "mean_l2_m": 1.5}
            for i in range(len(y))]
    fig = R.embedding_figure(x[:, :2], y, meta)
    assert [t.name.split(" ")[0] for t in fig.data] == ["expert", "collision"]
    assert "scene-0" in fig.data[0].text[0] and "DAC 0" in fig.data[0].text[0]
    assert R.embedding_figure(x[:, :3], y).data[0].type == "scatter3d"
    reps = {"vanilla": R.separation_metrics(*_blobs(gap=0.0)), "ReWorld": R.separation_metrics(*_blobs(gap=8.0))}
    bars = R.separation_figure(reps)
    assert [t.name.split(" ")[0] for t in bars.data] == ["vanilla", "ReWorld"]
    assert bars.data[1].y[2] > bars.data[0].y[2]  # probe AUC bar


# --------------------------------------------------------------------------- velocity (tiny pipeline)


def test_cosine_similarity_known_answers():
    v = torch.randn(3, 8, 1, 4, 8)
    np.testing.assert_allclose(V.cosine_similarity(v, v), 1.0, atol=1e-12)
    np.testing.assert_allclose(V.cosine_similarity(v, -2 * v), -1.0, atol=1e-12)
    a, b = torch.zeros(1, 4), torch.zeros(1, 4)
    a[0, 0], b[0, 1] = 1.0, 3.0
    assert V.cosine_similarity(a, b)[0] == 0.0
    assert np.isnan(V.cosine_similarity(torch.zeros(1, 4), b)[0])  # undefined for a zero velocity


@pytest.fixture(scope="module")
def tiny_pipe():
    from reworld.config import load_config
    from reworld.models.action_dit import build_action_dit
    from reworld.models.vae import build_vae
    from reworld.models.video_dit import video_dit_from_config
    from reworld.pipelines import WorldActionPipeline

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml")
    torch.manual_seed(0)
    vae = build_vae(cfg.vae)
    video = video_dit_from_config(cfg.video, cfg.vae.latent_channels)
    with torch.no_grad():  # heads are zero-initialised; perturb them so that cosines mean something
        for p in video.heads.parameters():
            p.normal_(std=0.1)
    tr = video.transformer.config
    action = build_action_dit(cfg.action, tr.num_attention_heads * tr.attention_head_dim,
                              len(video.transformer.transformer_blocks))
    return WorldActionPipeline(cfg, vae, video, action, device="cpu")


def _fake_clip(cfg, seed=0, name="scene-fake"):
    """Random frames of the config's sizes; a straight two-lane road with a lead car (hard negatives exist)."""
    from reworld.data.types import AgentTrack, Clip, Observation, Target

    g = torch.Generator().manual_seed(seed)
    d = cfg.data
    t = np.arange(1, 9) * 0.5
    expert = np.stack([8.0 * t - 0.125 * t**2, 0 * t, 0 * t], -1).astype(np.float32)
    obs = Observation(frames=torch.rand(d.context_frames, 3, d.image_height, d.image_width, generator=g) * 2 - 1,
                      ego_status=torch.tensor([8.0, -0.25, 0.0]), command=1)
    lead = AgentTrack("lead", "vehicle", 4.5, 1.9, np.array([[0.0, 15.0, 0.0, 0.0], [5.0, 50.0, 0.0, 0.0]]))
    target = Target(frames=torch.rand(d.future_frames, 3, d.image_height, d.image_width, generator=g) * 2 - 1,
                    trajectory=torch.from_numpy(expert), agents=[lead],
                    drivable_area=[np.array([[-30.0, -1.75], [200.0, -1.75], [200.0, 5.25], [-30.0, 5.25]])],
                    centerline=np.stack([np.linspace(-30, 200, 24), np.zeros(24)], -1))
    return Clip(name, f"token{seed:04d}", 0, obs, target)


def test_velocity_report_shapes_and_values(tiny_pipe):
    cfg = tiny_pipe.config
    clip = _fake_clip(cfg)
    rep = V.velocity_discrepancy(tiny_pipe, clip, steps=STEPS, guidance=1.4, seed=0)
    assert rep.blocks == (1,) and rep.steps == STEPS
    assert rep.cosine.shape == rep.diff_rms.shape == rep.head_rms.shape == (STEPS, 1)
    assert rep.final_rms.shape == rep.sigmas.shape == rep.guided.shape == (STEPS,)
    np.testing.assert_allclose(rep.sigmas, [1.0, 2 / 3, 1 / 3])
    assert rep.guided.all()
    assert np.isfinite(rep.cosine).all() and (np.abs(rep.cosine) <= 1).all()
    assert (rep.diff_rms > 0).all() and (rep.final_rms > 0).all()
    for key in ("final", "head_1"):
        assert rep.previews[key].shape == (STEPS, cfg.data.future_frames, cfg.data.image_height,
                                           cfg.data.image_width, 3)
        assert rep.previews[key].dtype == np.uint8
    # independent recomputation from the sampler's own records
    res = tiny_pipe.generate(clip, steps=STEPS, guidance=1.4, seed=0, record=True)
    for s, r in enumerate(res.record):
        a, b = r.v_heads[1].flatten().double(), r.v_final.flatten().double()
        assert rep.cosine[s, 0] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-9)
        assert rep.diff_rms[s, 0] == pytest.approx(float((b - a).pow(2).mean().sqrt()), rel=1e-9)
    # the latent path starts at the seed's noise and ends at the sample
    c = cfg.vae.latent_channels
    noise = torch.randn(rep.latent_path.shape[1], generator=torch.Generator().manual_seed(0))
    assert rep.latent_path.shape[0] == STEPS + 1
    np.testing.assert_allclose(rep.latent_path[0], noise.numpy(), atol=1e-5)
    np.testing.assert_array_equal(rep.latent_path[-1], res.latents[:, -res.record[0].v_final.shape[2]:].reshape(-1))
    assert res.latents.shape[0] == c
    json.dumps(rep.to_dict(), default=lambda o: o.tolist())  # numbers only

    strip = V.preview_strip(rep, max_columns=2)
    h, w = cfg.data.image_height, cfg.data.image_width
    assert strip.shape == (2 * h + 2, 2 * w + 2, 3)
    np.testing.assert_array_equal(strip[h + 2:, :w], rep.previews["final"][0, -1])
    assert len(V.preview_strip_figure(rep).data) == 1
    heat = V.cosine_heatmap(rep).data[0]  # the lens of both blocks, the trained head after its block
    assert heat.z.shape == (3, STEPS)
    assert list(heat.y) == ["block 0 (lens)", "block 1 (= output)", "★ head on block 1 (trained)"]
    np.testing.assert_allclose(np.asarray(heat.z)[1], 1.0)
    # the lens rows, recomputed from the sampler's records made with the lens
    lens = tiny_pipe.generate(clip, steps=STEPS, guidance=1.4, seed=0, lens=True)
    for s, r in enumerate(lens.record):
        a, b = r.v_lens[0].flatten().double(), r.v_final.flatten().double()
        assert rep.lens_cosine[s, 0] == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-9)
        np.testing.assert_allclose(rep.x0_latents["block_0"][s], (r.x_t - r.sigma * r.v_lens[0])[0].numpy(),
                                   atol=1e-6)
    assert rep.layers() == ["block_0", "block_1", "head_1", "final"]
    # 3 head curves + final + cosine and RMS of block 0's lens (block 1's is the output), no bands for one clip
    assert len(V.discrepancy_curves(rep).data) == 6
    # a layer's x0 decoded on demand beside the final one, with their amplified difference
    p = V.layer_preview(rep, lambda c, f: tiny_pipe.decode_future(c, f, seed=0), 1, "block_0")
    np.testing.assert_array_equal(p.final, rep.previews["final"][1])  # the same decode as the sampler's preview
    d = np.abs(p.layer.astype(float) - p.final.astype(float)).mean(-1)
    assert p.max_levels == pytest.approx(d.max()) and p.difference.shape == p.layer.shape
    np.testing.assert_array_equal(p.difference[..., 0], np.clip(d * p.gain, 0, 255).astype(np.uint8))


def test_mean_curves_and_guidance_comparison(tiny_pipe):
    cfg = tiny_pipe.config
    clips = [_fake_clip(cfg, 0), _fake_clip(cfg, 1)]
    both = V.mean_curves(tiny_pipe, clips, steps=STEPS, guidance=1.0, seed=0)
    assert both.n_clips == 2 and both.cosine_mean.shape == (STEPS, 1) and np.all(both.cosine_std > 0)
    assert both.lens_blocks == (0, 1) and both.lens_cosine_mean.shape == (STEPS, 2)
    np.testing.assert_allclose(both.lens_cosine_mean[:, 1], 1.0)
    assert any(t.fill == "toself" for t in V.discrepancy_curves(both).data)  # spread bands
    plain = V.velocity_discrepancy(tiny_pipe, clips[0], STEPS, 1.0, 0, decode_previews=False)
    assert not plain.guided.any() and not plain.previews
    assert np.all(V.summarize([plain, plain]).cosine_std == 0)  # the same clip twice
    np.testing.assert_array_equal(V.guidance_comparison(plain, plain).distance_rms, 0.0)

    cmp = V.compare_guidance(tiny_pipe, clips[0], steps=STEPS, guidance=2.0, seed=0)
    assert cmp.distance_rms[0] == 0.0 and (cmp.distance_rms[1:] > 0).all()  # same noise, then apart
    assert cmp.guided_pca.shape == cmp.unguided_pca.shape == (STEPS + 1, 2)
    assert 0.0 < cmp.explained_variance_ratio.sum() <= 1.0 + 1e-9
    assert len(V.guidance_figure(cmp).data) == 4


def test_collect_features_on_a_tiny_pipeline(tiny_pipe):
    cfg = tiny_pipe.config
    fs = R.collect_features(tiny_pipe, [_fake_clip(cfg, 0), _fake_clip(cfg, 1)], k=6, seed=0)
    n = len(fs.labels)
    assert fs.feats.shape == (n, cfg.action.width) and n > 2
    assert fs.labels.count("expert") == 2 and set(fs.labels) <= set(R.LABELS)
    assert sum(fs.counts.values()) == n
    first = fs.meta[0]
    assert first["scene"] == "scene-fake" and first["sample_token"] == "token0000"
    assert np.array(first["trajectory"]).shape == (8, 3) and first["mean_l2_m"] == 0.0
    assert set(first["pdm"]) == {"nc", "dac", "ttc", "ep", "c", "pdms"}
    assert all(m["failure"] == lab for m, lab in zip(fs.meta, fs.labels) if lab != "expert")
    # the expert and its perturbations get different features
    assert not np.allclose(fs.feats[0], fs.feats[1])


def test_alignment_of_a_clip_agrees_with_the_pooled_features(tiny_pipe):
    """`pipe.alignment` through one path (every block's tokens projected) gives, for the pooled cosine, what the
    public pieces give through another: `planner_features` (pooled alignment-block features), the projector, and
    the video target from `video_hidden_states`; the HN softmax share has its known answer."""
    import torch.nn.functional as F

    from reworld.models.vae import latent_split
    from reworld.pipelines.hidden_states import alignment_position, future_token_mean, hidden_state_blocks
    from reworld.pipelines.world_action import Alignment

    cfg = tiny_pipe.config
    clip = _fake_clip(cfg, 3)
    al, labels = R.alignment_of_clip(tiny_pipe, clip, k=5, seed=0)
    planner = tiny_pipe.action_dit
    n = len(labels)
    assert labels[0] == "expert" and n > 2
    assert al.cosine.shape == (n, planner.config.num_video_blocks, planner.config.num_waypoints)
    assert np.all(np.abs(al.cosine) <= 1 + 1e-6) and al.align_block == planner.config.align_block

    from reworld.planning.hard_negatives import generate_hard_negatives
    from reworld.planning.scene import PlanningScene

    scene = PlanningScene.from_clip(clip)
    trajectories = np.concatenate([scene.expert[None], generate_hard_negatives(scene, scene.expert, k=5,
                                                                               seed=0).trajectories])
    pooled = torch.as_tensor(tiny_pipe.planner_features(clip, trajectories, seed=0))
    hidden = tiny_pipe.video_hidden_states(clip, seed=0)
    blocks = hidden_state_blocks(cfg, tiny_pipe.video_dit)
    n_ctx, n_fut = latent_split(cfg.data, tiny_pipe.vae)
    target = future_token_mean(hidden[alignment_position(cfg, blocks)], n_ctx, n_ctx + n_fut)
    with torch.no_grad():
        expected = F.cosine_similarity(planner.project(pooled), target, dim=-1).numpy()
    np.testing.assert_allclose(al.pooled_cosine, expected, atol=1e-5)

    known = Alignment(np.zeros((3, 1, 1)), np.array([1.0, 0.0, 0.0]), 0, 0, 1.0, 0.0, 0.1)
    assert known.expert_share() == pytest.approx(np.exp(10) / (np.exp(10) + 2))
    assert known.projector_trained and not Alignment(known.cosine, known.pooled_cosine, 0, 0, 0.0, 0.0,
                                                     0.1).projector_trained
    fig = R.alignment_figure({"a": (al, labels), "b": (al, labels)})
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 and any(str(y).startswith("★") for y in heatmaps[0].y)
    assert sum(len(t.y) for t in fig.data if t.type == "scatter") == 2 * n


# --------------------------------------------------------------------------- ablation


def test_steps_to_reach_known_answers():
    steps = np.arange(0, 500, 100)
    loss = np.array([1.0, 0.6, 0.35, 0.5, 0.2])
    assert A.steps_to_reach((steps, loss), 0.4) == 200
    assert A.steps_to_reach((steps, loss), 0.4, smooth=2) == 400  # (0.35 + 0.5) / 2 > 0.4 at step 300
    assert np.isnan(A.steps_to_reach((steps, loss), 0.1))
    assert A.steps_to_reach((steps, 1 - loss), 0.6, mode="max") == 200
    assert A.steps_to_reach((steps[::-1], loss[::-1]), 0.4) == 200  # order of rows does not matter
    with pytest.raises(ValueError, match="mode must be"):
        A.steps_to_reach((steps, loss), 0.4, mode="down")
    assert A.parse_target("val/loss<=0.2") == ("val/loss", 0.2, "min")
    assert A.parse_target("pdms>=0.8") == ("pdms", 0.8, "max")


def _write_curves(path):
    rows = ["step,run,seed,metric,value"]
    for run, rate in (("vanilla", 0.6), ("reworld", 1.0)):
        for seed in (0, 1):
            for step in range(0, 1000, 100):
                rows.append(f"{step},{run},{seed},val/loss,{np.exp(-rate * step / 300) + 0.01 * seed:.5f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_ablation_curves_and_tables(tmp_path):
    df = A.read_curves(_write_curves(tmp_path / "curves.csv"))
    stats = A.curve_stats(df, {"val/loss": (0.2, "min")})
    assert stats["reworld"]["val/loss"]["steps_to_reach_mean"] < stats["vanilla"]["val/loss"]["steps_to_reach_mean"]
    assert stats["vanilla"]["val/loss"]["steps_to_reach_mean"] == 900.0
    assert stats["reworld"]["val/loss"]["seeds"] == 2 and stats["reworld"]["val/loss"]["reached"] == "2/2"
    fig = A.curves_figure(df, targets={"val/loss": (0.2, "min")})
    assert sum(t.fill == "toself" for t in fig.data) == 2 and sum(t.mode == "lines" for t in fig.data) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("step,run,metric,value\n0,a,loss,1\n")
    with pytest.raises(A.AblationFormatError, match=r"missing column\(s\) \['seed'\]"):
        A.read_curves(bad)
    bad.write_text("step,run,seed,metric,value\n0,a,0,loss,oops\n")
    with pytest.raises(A.AblationFormatError, match="row 1: expected a finite number"):
        A.read_curves(bad)
    table = tmp_path / "table.csv"
    table.write_text("run,seed,pdms,nc\nvanilla,0,0.80,0.97\nvanilla,1,0.82,0.99\nreworld,0,0.86,0.98\n")
    kind, tdf = A.read_ablation_csv(table)
    assert kind == "table"
    s = A.table_summary(tdf)
    assert s["vanilla"]["pdms"]["mean"] == pytest.approx(0.81) and s["reworld"]["nc"]["n"] == 1
    assert len(A.table_figure(tdf).data) == 2
    with pytest.raises(ValueError, match=r"metric\(s\) \['l2'\] not in the table"):
        A.table_figure(tdf, ["l2"])


def test_study_results_per_seed_with_t_intervals(tmp_path):
    """The claims study's results CSV (arm, seed, metric, value): seeds as dots, means with Student-t intervals."""
    path = tmp_path / "results.csv"
    path.write_text("arm,seed,metric,value\n" + "".join(
        f"{arm},{seed},rate,{v}\n" for arm, vals in (("vanilla", (0.10, 0.12, 0.14)), ("ig", (0.09, 0.10, 0.11)))
        for seed, v in zip((1, 2, 3), vals)) + "ig,1,mmd,0.5\nig,2,mmd,0.7\n")
    kind, df = A.read_ablation_csv(path)
    assert kind == "results" and len(df) == 8
    s = A.results_summary(df).set_index(["arm", "metric"])
    v = s.loc[("vanilla", "rate")]
    assert v["n"] == 3 and v["mean"] == pytest.approx(0.12) and v["std"] == pytest.approx(0.02)
    assert v["hi"] - v["mean"] == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-5)  # t(0.975, 2)
    fig = A.results_figure(df)
    assert [a.text for a in fig.layout.annotations] == ["rate", "mmd"]
    means = [t for t in fig.data if t.marker.symbol == "diamond"]
    assert len(means) == 3 and len(fig.data) == 6 and sum(bool(t.showlegend) for t in fig.data) == 2
    path.write_text("arm,seed,metric,value\nig,1,rate,0.1\nig,1,rate,0.2\n")
    with pytest.raises(A.AblationFormatError, match="duplicate rows for arm 'ig', seed 1"):
        A.read_ablation_csv(path)


def test_curves_from_run_logs(tmp_path):
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "action.csv").write_text("step,kind,time,name,value\n1,train,0,loss_fm,0.9\n2,train,0,loss_fm,0.7\n"
                                     "2,val,0,loss_fm,0.8\n2,train,0,loss_fm,0.6\n")  # step 2 logged again on resume
    df = A.curves_from_run_logs(tmp_path / "run", run="full", seed=3)
    assert list(df.columns) == list(A.CURVE_COLUMNS)
    train = df[df["metric"] == "action/train/loss_fm"]
    assert train["step"].tolist() == [1, 2] and train["value"].tolist() == [0.9, 0.6]
    assert set(df["run"]) == {"full"} and set(df["seed"]) == {3}
    with pytest.raises(FileNotFoundError, match="no training logs"):
        A.curves_from_run_logs(tmp_path / "elsewhere", run="x")


# --------------------------------------------------------------------------- CLI


def test_cli_ablation_writes_offline_html_and_json(tmp_path, capsys):
    from analysis.cli import main

    csv = _write_curves(tmp_path / "curves.csv")
    out = tmp_path / "out"
    assert main(["ablation", "--csv", str(csv), "--target", "val/loss<=0.2", "--out", str(out)]) == 0
    html = (out / "curves_curves.html").read_text()
    assert "cdn.plot.ly" not in html and "plotly.min.js" in html and (out / "plotly.min.js").is_file()
    numbers = json.loads((out / "ablation.json").read_text())
    stats = numbers["files"]["curves"]["stats"]
    assert stats["reworld"]["val/loss"]["steps_to_reach"]["0"] == 500.0


def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys):
    from analysis.cli import main

    out, nope = str(tmp_path / "o"), str(tmp_path / "nope")
    cases = [
        (["velocity", "--checkpoint", nope, "--out", out], "checkpoint folder not found"),
        (["embedding", "--checkpoint", nope, "--out", out], "checkpoint folder not found"),
        (["ablation", "--csv", str(tmp_path / "none.csv"), "--out", out], "CSV not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


@pytest.mark.slow
def test_cli_velocity_and_embedding_end_to_end(tiny_config, tiny_pipe, tmp_path, capsys):
    """A saved (untrained) tiny checkpoint on the session's tiny synthetic world, through the CLI."""
    from analysis.cli import main
    from reworld.config import save_config_json

    ckpt = tmp_path / "ckpt"
    tiny_pipe.vae.save_pretrained(ckpt / "vae")
    tiny_pipe.video_dit.save_pretrained(ckpt / "video_dit")
    tiny_pipe.action_dit.save_pretrained(ckpt / "action_dit")
    save_config_json(tiny_config, ckpt / "config.json")

    out = tmp_path / "velocity"
    assert main(["velocity", "--checkpoint", str(ckpt), "--split", "all", "--clips", "1", "--steps", "2",
                 "--out", str(out)]) == 0
    numbers = json.loads((out / "velocity.json").read_text())
    assert numbers["summary"]["n_clips"] == 1 and len(numbers["summary"]["per_block"]["1"]["cosine_mean"]) == 2
    assert numbers["guidance_comparison"]["distance_rms"][0] == 0.0
    for name in ("cosine_heatmap", "diff_heatmap", "curves", "previews", "guidance"):
        assert "cdn.plot.ly" not in (out / f"velocity_{name}.html").read_text()
    assert (out / "velocity_previews.png").is_file()
    assert set(numbers["summary"]["lens"]) == {"0", "1"}  # every block through the output layer

    # a checkpoint whose head was never trained (λ_ig = 0): w ≠ 1 refused, w = 1 reports the lens alone
    from reworld.config import replace

    save_config_json(replace(tiny_config, loss={"lambda_ig": 0.0}), ckpt / "config.json")
    argv = ["velocity", "--checkpoint", str(ckpt), "--split", "all", "--clips", "1", "--steps", "2"]
    with pytest.raises(SystemExit, match="never trained.*--guidance 1"):
        main(argv + ["--guidance", "1.4", "--out", str(tmp_path / "v2")])
    assert main(argv + ["--out", str(tmp_path / "v3")]) == 0  # its own default: w = 1
    numbers = json.loads((tmp_path / "v3" / "velocity.json").read_text())
    assert numbers["summary"]["per_block"] == {} and numbers["guidance_comparison"] is None
    assert all(np.isfinite(numbers["summary"]["lens"]["0"]["cosine_mean"]))
    assert not (tmp_path / "v3" / "velocity_guidance.html").exists()
    save_config_json(tiny_config, ckpt / "config.json")

    out = tmp_path / "embedding"
    argv = ["embedding", "--checkpoint", str(ckpt), "--checkpoint", str(ckpt), "--label", "vanilla", "--label",
            "ReWorld", "--split", "all", "--clips", "2", "--k", "4", "--n-neighbors", "4", "--out", str(out)]
    assert main(argv) == 0
    numbers = json.loads((out / "embedding.json").read_text())
    a, b = numbers["checkpoints"]["vanilla"], numbers["checkpoints"]["ReWorld"]
    assert a["counts"]["expert"] == 2 and a["points"] > 5
    assert a["separation"] == {**b["separation"], "seconds": a["separation"]["seconds"]}  # same weights
    assert {p.name for p in out.glob("*.html")} == {"embedding_vanilla.html", "embedding_ReWorld.html",
                                                     "separation.html"}
    assert len(list((out / "cache").glob("umap-*.npy"))) == 1  # the second checkpoint hit the cache
    saved = R.FeatureSet.load(out / "features_vanilla")
    assert saved.counts == a["counts"] and saved.feats.shape == (a["points"], a["feature_dim"])
    # too many neighbours for the points collected: one clear line, exit 2
    assert main(argv[:-4] + ["--n-neighbors", "50", "--out", str(out)]) == 2
    assert "too few for n_neighbors=50" in capsys.readouterr().err


def test_futures_figure_from_the_cli(tiny_run, tiny_world, tmp_path):
    """Generated against true futures, one clip per scene, at the clips' own pixels: the PNG's size follows from the
    clips and horizons, both rows start from the same t = 0 frame, and a horizon beyond the clips is refused."""
    from PIL import Image

    from analysis.cli import main
    from analysis.futures import GAP, LABEL_H, future_columns

    run, _ = tiny_run
    out = tmp_path / "fut"
    assert main(["futures", "--checkpoint", str(run), "--dataroot", str(tiny_world), "--split", "all", "--scenes",
                 "2", "--horizons", "0.17", "0.67", "--steps", "2", "--out", str(out)]) == 0
    numbers = json.loads((out / "futures.json").read_text())
    assert numbers["horizons_s"] == pytest.approx([1 / 6, 4 / 6])
    assert len({c["scene"] for c in numbers["clips"]}) == 2
    image = np.asarray(Image.open(out / "futures.png"))
    h, w = 32, 64  # configs/tiny.yaml
    assert image.shape == (LABEL_H + 2 * (LABEL_H + 2 * h + GAP), 3 * w + 2 * GAP, 3)
    assert all(np.isfinite(c["psnr_db"]).all() and len(c["psnr_db"]) == 2 for c in numbers["clips"])
    top = LABEL_H + LABEL_H  # first clip: its label strip, then the true row
    np.testing.assert_array_equal(image[top:top + h, :w], image[top + h:top + 2 * h, :w])
    assert image[top:top + h, :w].std() > 5  # a frame, not the blank canvas
    assert future_columns([0.5, 4.0], 4.0, 16) == [1, 15]
    with pytest.raises(ValueError, match="outside the clips' future"):
        future_columns([1.0], 6.0, 4)


def test_denoise_profile_scores_the_models_x0_in_pixels(tiny_run, capsys):
    """scripts/denoise_profile.py --pixels: at σ = 0 the model's x0 is the truth's own latents whatever the model, so
    its latent error is 0 and its PSNR in pixels is the VAE's reconstruction's, at every horizon; the per-frame errors
    average to the whole error (frames of equal size); `--sample-steps` adds a sampled future's per-frame error;
    a horizon beyond the clips is refused."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "denoise_profile.py"
    spec = importlib.util.spec_from_file_location("denoise_profile", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run, _ = tiny_run
    argv = ["--checkpoint", str(run), "--clips", "0", "1", "--sigmas", "0", "1", "--pixels"]
    assert script.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["clip"], r["sigma"]) for r in rows] == [(0, 0.0), (0, 1.0), (1, 0.0), (1, 1.0)]
    for r in rows:
        assert r["horizons_s"] == pytest.approx([4 / 6])  # configs/tiny.yaml: 0.67 s of future, no whole second
        assert np.isfinite(r["repeat_last_psnr_db"] + r["vae_psnr_db"] + r["x0_psnr_db"]).all()
        if r["sigma"] == 0:
            assert r["model_x0_mse"] == 0 and r["noisy_input_mse"] == 0
            assert r["x0_psnr_db"] == r["vae_psnr_db"]
        else:
            assert r["noisy_input_mse"] > 0.5  # pure noise against unit-variance latents
        assert np.mean(r["model_x0_mse_per_frame"]) == pytest.approx(r["model_x0_mse"], abs=1e-3)
        assert np.mean(r["repeat_last_mse_per_frame"]) == pytest.approx(r["repeat_last_mse"], abs=1e-3)
    assert script.main(["--checkpoint", str(run), "--clips", "0", "1", "--sigmas", "1", "--split", "train",
                        "--sample-steps", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sampled = [r for r in rows if "sample_steps" in r]
    assert [r["clip"] for r in sampled] == [0, 1]
    for r in sampled:
        assert len(r["sample_mse_per_frame"]) == len(r["repeat_last_mse_per_frame"]) >= 1
        assert np.all(np.isfinite(r["sample_mse_per_frame"])) and min(r["sample_mse_per_frame"]) > 0
    with pytest.raises(SystemExit) as stop:
        script.main(argv + ["--horizons", "2"])
    assert stop.value.code == 2 and "outside the clips' future" in capsys.readouterr().err


def test_latent_noise_probe_known_answers(tiny_run, capsys, tmp_path):
    """scripts/latent_noise_probe.py: the high-frequency share is 0 for a constant and a slow cosine, 1 for a
    checkerboard; on a run, the truth's own latents have no latent error, a larger added noise is a larger latent
    error (≈ its variance) and costs PSNR, and the strip is written."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "latent_noise_probe.py"
    spec = importlib.util.spec_from_file_location("latent_noise_probe", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(32), indexing="ij")
    assert script.high_frequency_share(torch.ones(2, 16, 32)) == pytest.approx(0.0)
    assert script.high_frequency_share(torch.cos(2 * torch.pi * xx / 8.0)) == pytest.approx(0.0, abs=1e-9)
    assert script.high_frequency_share((-1.0) ** (yy + xx)) == pytest.approx(1.0)
    run, _ = tiny_run
    argv = ["--checkpoint", str(run), "--clips", "0", "--variances", "0.1", "1.0", "--sample-steps", "2",
            "--out", str(tmp_path / "strips")]
    assert script.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    arms = {r["arm"]: r for r in rows if "arm" in r}
    assert list(arms) == ["truth", "repeat_last", "noise_var_0.1", "noise_var_1", "sample"]
    assert max(arms["truth"]["latent_mse_per_frame"]) == 0
    assert np.mean(arms["noise_var_1"]["latent_mse_per_frame"]) > np.mean(arms["noise_var_0.1"]["latent_mse_per_frame"])
    assert np.mean(arms["noise_var_1"]["latent_mse_per_frame"]) == pytest.approx(1.0, rel=0.3)
    assert np.mean(arms["noise_var_1"]["psnr_db"]) < np.mean(arms["truth"]["psnr_db"])
    assert 0 <= arms["sample"]["error_high_frequency_share"] <= 1
    assert (tmp_path / "strips" / "clip-0.png").is_file()
    with pytest.raises(SystemExit):
        script.main(argv + ["--variances", "-1"])


def test_wilson_interval_and_the_judge_eval_comparison_known_answers(tmp_path):
    """`reworld.evaluation.stats.wilson` against scipy's Wilson interval; scripts/compare_judge_evals.py on two eval
    documents built to a known answer: B reads every clip 0.5 m further off than A, so B − A is 0.5 m with an interval
    of width 0; 3 of 4 gaps positive. Several seeds per arm, pooled to a known answer."""
    import importlib.util
    import io
    import json
    from contextlib import redirect_stdout

    from scipy.stats import binomtest, norm

    from reworld.evaluation.stats import wilson

    for k, n in ((17, 23), (0, 5), (12, 51)):
        ref = binomtest(k, n).proportion_ci(method="wilson")  # at the exact quantile 1.95996…
        assert wilson(k, n, z=norm.ppf(0.975)) == pytest.approx((ref.low, ref.high), abs=1e-9)
        assert wilson(k, n) == pytest.approx((ref.low, ref.high), abs=1e-4)  # the default z = 1.96
    rng = np.random.default_rng(0)
    per_video = rng.uniform(0, 5, size=(6, 16))

    def doc(pos, gaps):
        return {"judge": {"video_horizon_s": 4.0, "fd_judge": 1.0, "kid_judge": 0.0,
                          "errors": {"position_m": pos.mean(0).tolist()}, "position_m_per_video": pos.tolist(),
                          "controllability": {"clips": len(gaps), "rate": float(np.mean(np.array(gaps) > 0)),
                                              "lateral_gap_m": float(np.mean(gaps)), "gaps_m": gaps}}}

    (tmp_path / "a.json").write_text(json.dumps({"A": doc(per_video, [0.1, -0.1, 0.2, 0.3])}))
    (tmp_path / "b.json").write_text(json.dumps(doc(per_video + 0.5, [0.1, -0.1, 0.2, 0.3])))
    path = Path(__file__).resolve().parent.parent / "scripts" / "compare_judge_evals.py"
    spec = importlib.util.spec_from_file_location("compare_judge_evals", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert mod.main([str(tmp_path / "b.json"), f"{tmp_path / 'a.json'}:A"]) == 0
    out = json.loads(buf.getvalue())
    d = out["b_minus_a_position_mean_m"]
    assert d["mean"] == pytest.approx(0.5) and d["boot"] == pytest.approx([0.5, 0.5]) and d["units"] == 6
    assert out["b"]["position_m_at_s"] == pytest.approx((per_video + 0.5).mean(0)[[3, 7, 11, 15]].tolist())
    ctrl = out["a"]["controllability"]
    assert ctrl["turned"] == 3 and ctrl["rate_wilson"] == pytest.approx(list(wilson(3, 4)))

    # several seeds per arm: B's seed i reads every clip 0.2 (i + 1) m further off than A's seed i, so the pooled
    # B − A is 0.4 m, its t interval over the 3 seeds' means 0.4 ± t(0.975, 2) · 0.2 / √3, the two-level bootstrap
    # inside the seeds' range, and each arm's init spread is the spread of its seeds' means
    from scipy.stats import t as student_t

    a_specs, b_specs = [], []
    for i, shift in enumerate((0.2, 0.4, 0.6)):
        (tmp_path / f"a{i}.json").write_text(json.dumps(doc(per_video + 0.1 * i, [0.1, -0.1])))
        (tmp_path / f"b{i}.json").write_text(json.dumps(doc(per_video + 0.1 * i + shift, [0.1, -0.1])))
        a_specs.append(str(tmp_path / f"a{i}.json"))
        b_specs.append(str(tmp_path / f"b{i}.json"))
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert mod.main([",".join(b_specs), ",".join(a_specs)]) == 0
    out = json.loads(buf.getvalue())
    d = out["b_minus_a_position_mean_m"]
    half = student_t.ppf(0.975, 2) * 0.2 / np.sqrt(3)
    assert d["mean"] == pytest.approx(0.4) and d["t_over_seeds"] == pytest.approx([0.4 - half, 0.4 + half])
    assert d["per_seed"] == pytest.approx([0.2, 0.4, 0.6]) and (d["seeds"], d["clips"]) == (3, 6)
    assert 0.2 - 1e-9 <= d["boot_seeds_clips"][0] < 0.4 < d["boot_seeds_clips"][1] <= 0.6 + 1e-9
    assert out["init_spread_m"]["a"] == pytest.approx(0.1) and len(out["per_seed"]) == 3
    assert out["per_seed"][2]["b_minus_a_position_mean_m"]["mean"] == pytest.approx(0.6)
    with pytest.raises(SystemExit), redirect_stdout(io.StringIO()):
        mod.main([",".join(b_specs), ",".join(a_specs[:2])])


def test_plan_scores_comparison_known_answer(tmp_path):
    """scripts/compare_plan_scores.py on two score CSVs built to a known answer: B scores every plan 0.02 higher
    than A, so B − A is +2 points with an interval of width 0; clips or plan counts that differ are refused."""
    import importlib.util

    from analysis.study_planner import METRICS, write_scores

    rng = np.random.default_rng(0)
    rows = [{"token": f"t{c}", "sample": j, **{m: float(v) for m, v in zip(METRICS, rng.uniform(0.2, 0.8, 9))}}
            for c in range(5) for j in range(3)]
    write_scores(rows, tmp_path / "a.csv")
    write_scores([{**r, "pdms": r["pdms"] + 0.02} for r in rows], tmp_path / "b.csv")
    write_scores(rows[:-1], tmp_path / "short.csv")
    path = Path(__file__).resolve().parent.parent / "scripts" / "compare_plan_scores.py"
    spec = importlib.util.spec_from_file_location("compare_plan_scores", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.compare(tmp_path / "a.csv", tmp_path / "b.csv")
    d = out["pdms_b_minus_a_points"]
    assert out["clips"] == 5 and out["plans_per_clip"] == 3
    assert d["mean"] == pytest.approx(2.0) and d["boot"] == pytest.approx([2.0, 2.0])
    assert out["b"]["pdms"] - out["a"]["pdms"] == pytest.approx(0.02) and out["b"]["nc"] == out["a"]["nc"]
    with pytest.raises(ValueError, match="plans"):
        mod.compare(tmp_path / "a.csv", tmp_path / "short.csv")
    assert mod.main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["pdms_b_minus_a_points"]["mean"] == pytest.approx(2.0)


def test_write_json_is_whole_or_not_at_all(tmp_path):
    """A summary that cannot be written (here: a value JSON has no form for) leaves the last good file as it was and
    no temporary file behind; NaN becomes null (strict JSON)."""
    from analysis.output import write_json

    path = write_json({"a": 1.0, "b": float("nan")}, tmp_path / "s.json")
    assert json.loads(path.read_text()) == {"a": 1.0, "b": None}
    with pytest.raises(TypeError):
        write_json({"a": {1, 2}}, path)
    assert json.loads(path.read_text()) == {"a": 1.0, "b": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_p1_verdict_counts_the_comparisons_that_hold():
    """scripts/p1_verdict.py (docs/world4s.md, P1) on a report built to a known answer: an interval wholly below 0
    beats the baseline at that second, one touching 0 does not; a distance beats only when strictly below."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "p1_verdict.py"
    spec = importlib.util.spec_from_file_location("p1_verdict", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    errors = {"position_m": [0.25 * (k + 1) for k in range(16)]}  # 4 Hz: frame 4k − 1 is at k s, k m off

    def paired(his):
        return {"seconds": [1.0, 2.0, 3.0, 4.0], "mean": [h - 0.1 for h in his], "boot": [[h - 0.2, h] for h in his],
                "t": [[h - 0.2, h] for h in his]}

    report = {"judge": {
        "video_horizon_s": 4.0, "clips": 3, "samples_per_clip": 4, "fd_judge": 9.0, "kid_judge": 0.5, "errors": errors,
        "baselines": {"repeat_last": {"fd_judge": 10.0, "kid_judge": 0.5, "errors": errors},
                      "copy_context": {"fd_judge": 12.0, "kid_judge": 0.6, "errors": errors}},
        "paired_position_m": {"repeat_last": paired([-0.01, 0.0, 0.2, -0.3]),
                              "copy_context": paired([-0.1, -0.2, -0.3, -0.4])},
        "controllability": {"clips": 4, "rate": 0.75, "lateral_gap_m": 0.1}}}
    v = mod.verdict(report)
    assert v["repeat_last"] == {"1s": True, "2s": False, "3s": False, "4s": True, "fd": True, "kid": False}
    assert all(v["copy_context"].values()) and v["held"] == 9 and not v["met"]
    report["judge"]["kid_judge"] = 0.4
    report["judge"]["paired_position_m"]["repeat_last"] = paired([-0.01] * 4)
    assert mod.verdict(report)["met"] and mod.verdict(report)["held"] == 12
    assert "| generated | 1.00 / 2.00 / 3.00 / 4.00 |" in mod.table(report)
    assert "K1" not in mod.table(report)  # a report from before K1: only the all-pairs KID, as kid_judge
    # since K1 a report holds both KIDs; the verdict reads kid_judge and the table says where all pairs differ
    report["judge"]["kid_judge_all_pairs"] = 0.7
    report["judge"]["baselines"]["repeat_last"]["kid_judge_all_pairs"] = 0.5
    report["judge"]["baselines"]["copy_context"]["kid_judge_all_pairs"] = 0.8
    assert mod.verdict(report)["met"]
    assert "all pairs: 0.700 against 0.500 ✗, 0.700 against 0.800 ✓ (the all-pairs KID gives other kid verdicts)" \
        in mod.table(report)
    report["judge"]["kid_judge"] = None  # no pair of videos that share no frame
    assert not mod.verdict(report)["repeat_last"]["kid"] and "| — |" in mod.table(report)
    with pytest.raises(ValueError, match="judge"):
        mod.verdict({"judge": None})
