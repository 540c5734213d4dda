"""`reworld eval` on the tiny run: every key, honest baselines, and the Markdown table."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_eval_every_kth_clip(tiny_run, tiny_config):
    """`--every K`: every K-th clip of the split (spread over its scenes), then the first `limit` of those."""
    from reworld.data.loader import NuScenesClips

    out, _ = tiny_run
    report = evaluate(str(out), dataroot=tiny_config.data.dataroot, split="val", limit=2, video_clips=0,
                      device="cpu", every=2, scorer="spline")
    assert report.num_clips == 2 and report.settings["every"] == 2
    ds = NuScenesClips(tiny_config.data, split="val")
    clips = [ds[0], ds[2]]  # the clips it read
    l2 = [np.linalg.norm(constant_velocity(c.observation.ego_status.numpy())[5, :2]
                         - c.target.trajectory.numpy()[5, :2]) for c in clips]
    assert report.planners["constant velocity"]["l2_3s"] == pytest.approx(np.mean(l2))
    with pytest.raises(ValueError, match="every must be an integer"):
        evaluate(str(out), split="val", limit=1, video_clips=0, every=0)


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


def test_ship_points_a_run_that_read_a_shared_vae_at_its_sibling(tiny_run, tiny_config_path, tmp_path):
    """A run trained on a pretrained VAE folder (`train --vae assets/checkpoints/world4s_vae`) ships pointing at that
    folder as its sibling (components.json), not at the absolute path it was trained under: the checkpoints load
    after their folder moves; a shared VAE that is not a sibling of the checkpoint is refused."""
    import json
    import shutil

    from reworld.pipelines import WorldActionPipeline
    from reworld.ship import ship

    out, _ = tiny_run
    ckpts, run = tmp_path / "checkpoints", tmp_path / "run"
    shutil.copytree(out / "vae", ckpts / "shared_vae")
    shutil.copytree(out, run, ignore=shutil.ignore_patterns("vae", "prepared", "cache", "checkpoints"))
    config = json.loads((run / "config.json").read_text())
    config["vae"]["pretrained"] = str((ckpts / "shared_vae").resolve())
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="must be a sibling"):
        ship(str(run), str(tmp_path / "elsewhere" / "model"), str(ckpts / "shared_vae"), str(tiny_config_path),
             None, [])
    ship(str(run), str(ckpts / "model"), str(ckpts / "shared_vae"), str(tiny_config_path), None, [])
    assert json.loads((ckpts / "model" / "config.json").read_text())["vae"]["pretrained"] is None
    assert json.loads((ckpts / "model" / "components.json").read_text()) == {"vae": "../shared_vae"}
    moved = shutil.move(str(ckpts), str(tmp_path / "moved"))
    pipe = WorldActionPipeline.from_pretrained(Path(moved) / "model", device="cpu")
    assert pipe.has_planner


def test_eval_with_a_video_judge(tiny_run, tiny_config, tiny_judge, tmp_path):
    """A judge that reads the run's clips adds its figures: per future frame, for the generated futures, the real
    ones and the baselines; and controllability on the turning clips."""
    out, _ = tiny_run
    shutil.copytree(tiny_judge, tmp_path / "judge")
    report = evaluate(str(out), dataroot=tiny_config.data.dataroot, split="all", limit=12, video_clips=0, steps=2,
                      judge=str(tmp_path / "judge"), judge_samples=2)
    j = report.judge
    future = tiny_config.data.future_frames
    assert j["video_horizon_s"] == pytest.approx(future / tiny_config.data.frame_rate)
    assert (j["clips"], j["samples_per_clip"], j["num_videos"]) == (12, 2, 24)
    assert set(j["baselines"]) == {"real", "repeat_last", "copy_context", "vae_reconstruction"}
    for r in [j, *j["baselines"].values()]:
        assert len(r["errors"]["position_m"]) == future and np.isfinite(r["fd_judge"])
    floor = j["baselines"]["real"]  # two halves of the real clips, not the real set against itself (FD 0)
    assert floor["fd_judge"] > 0 and floor["num_videos"] + floor["num_real"] == 12
    # generated minus each baseline, paired by clip: the mean of the per-clip differences at each whole second
    per_video = np.asarray(j["position_m_per_video"])  # (24, F): clip k's two samples are videos 2k and 2k + 1
    for kind in ("repeat_last", "copy_context"):
        p = j["paired_position_m"][kind]
        assert p["seconds"] == [pytest.approx(future / tiny_config.data.frame_rate)]  # under 1 s: the last frame
        base = np.asarray(j["baselines"][kind]["position_m_per_video"])[:, -1]
        assert p["mean"][0] == pytest.approx(np.mean((per_video[0::2, -1] + per_video[1::2, -1]) / 2 - base))
        assert p["boot"][0][0] <= p["mean"][0] <= p["boot"][0][1] and p["t"][0][0] <= p["mean"][0] <= p["t"][0][1]
    assert "generated − repeat_last, position [m] at 0.667 s" in report.markdown()
    assert "| VAE reconstruction (ceiling) |" in report.markdown()
    c = j["controllability"]
    assert c["clips"] >= 1 and 0.0 <= c["rate"] <= 1.0  # the tiny world turns somewhere in its first 12 clips
    assert len(c["gaps_m"]) == c["clips"] and c["rate"] == pytest.approx(np.mean(np.asarray(c["gaps_m"]) > 0))
    # the same measurement on its own hands back the videos it read (left, then right, per turning clip)
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.evaluate import controllability
    from reworld.evaluation.judge import judge_set_of, load_judge
    from reworld.pipelines import WorldActionPipeline

    pipe = WorldActionPipeline.from_pretrained(out)
    ds = NuScenesClips(pipe.clip_spec, "all", geometry=False, dataroot=tiny_config.data.dataroot)
    pairs = []
    # the ceiling: the true context, then the future decoded from the latents of the whole true clip
    import torch

    from reworld.evaluation.evaluate import vae_reconstructions
    from reworld.models.vae import encode_frames

    data = judge_set_of(ds, range(12))
    recon = vae_reconstructions(pipe, data, seed=0, batch_size=5)
    n = data.n_context
    assert recon.shape == data.video(slice(None)).shape
    assert torch.equal(recon[:, :n], data.video(slice(None))[:, :n])
    direct = pipe.decode(encode_frames(pipe.vae, data.video(slice(5, 10))), 5)[:, n:]
    assert torch.allclose(recon[5:10, n:], direct, atol=1e-5)
    assert not torch.allclose(recon[:, n:], data.video(slice(None))[:, n:], atol=1e-2)  # the VAE's loss is in it
    alone = controllability(pipe, ds, range(12), load_judge(tiny_judge), judge_set_of(ds, range(12)), 2,
                            pipe.default_guidance, 0, videos=pairs)
    # the tiny judge's gaps are ~1e-7 m, a difference of two near-equal readings: on a GPU (an H200) the batched and
    # the one-clip passes round differently, so the gaps agree within 10 µm (seen: 0.5 µm), not to a relative 1e-5
    assert alone["gaps_m"] == pytest.approx(c["gaps_m"], rel=1e-5, abs=1e-5) and len(pairs) == c["clips"]
    assert pairs[0][1].shape[:2] == (2, tiny_config.data.context_frames + future)
    assert "fd_judge" in report.markdown() and "controllability" in report.markdown()
    # the judge on every 4th of the 12 clips (planning still on all 12), and the model card's section of it
    from reworld.ship import evaluation_section
    strided = evaluate(str(out), dataroot=tiny_config.data.dataroot, split="all", limit=12, video_clips=0, steps=2,
                       judge=str(tmp_path / "judge"), judge_samples=1, judge_every=4)
    assert strided.num_clips == 12 and (strided.judge["clips"], strided.judge["num_videos"]) == (3, 3)
    card = "\n".join(evaluation_section(strided.to_json()))
    assert "on 3 held-out clips (one in 4, in scene order), 1 sampled futures each" in card and "| generated |" in card
    with pytest.raises(ValueError, match="judge_every must be an integer"):
        evaluate(str(out), split="val", limit=1, video_clips=0, judge_every=0)


def test_eval_refuses_a_judge_of_other_clips(tiny_run, tiny_config, tmp_path):
    from reworld.evaluation.judge import WorldJudge

    WorldJudge(context_frames=5, future_frames=16, frame_rate=4.0, frame_size=(32, 64), widths=(8, 16),
               frame_stages=1).save_pretrained(tmp_path / "judge", safe_serialization=True)
    out, _ = tiny_run
    with pytest.raises(ValueError, match="the judge reads 5 \\+ 16 frames at 4 Hz"):
        evaluate(str(out), dataroot=tiny_config.data.dataroot, split="all", limit=2, video_clips=0, steps=2,
                 judge=str(tmp_path / "judge"))


def test_default_metric_networks_only_read_the_clips_they_were_trained_on(tmp_path, monkeypatch):
    """`eval`, `ship` and `reeval` take the shipped ReWorldVideoNet and video judge only for a checkpoint whose clips
    they read (ReWorldVideoNet: the last context frame and 4 future frames at 64×128; the judge: 5 + 16 at 4 Hz)."""
    import reworld.paths as paths
    from reworld.config import load_config
    from reworld.paths import REPO_ROOT, default_clip_net, default_judge

    net_folder = tmp_path / "video_net"  # where scripts/train_embedded.sh writes it (runs/v1/video_net)
    net_folder.mkdir()
    (net_folder / "config.json").write_text(json.dumps({"num_frames": 5, "frame_size": [64, 128]}))
    monkeypatch.setattr(paths, "CLIP_NET_CHECKPOINT", net_folder)

    for name, net, judge in (("default", True, False), ("world4s", False, True)):
        data = load_config(REPO_ROOT / "configs" / f"{name}.yaml").data
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"data": {
            k: getattr(data, k) for k in ("context_frames", "future_frames", "frame_rate", "image_height",
                                          "image_width")}}))
        assert (default_clip_net(folder) is not None) == net and (default_judge(folder) is not None) == judge
    assert default_clip_net(tmp_path / "missing") is None and default_clip_net() == str(net_folder)
    monkeypatch.setattr(paths, "CLIP_NET_CHECKPOINT", tmp_path / "not-trained")
    assert default_clip_net() is None and default_clip_net(tmp_path / "default") is None
