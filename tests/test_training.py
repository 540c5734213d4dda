"""Two-step runs of every stage on the tiny world; checkpoints, resume and faults."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from reworld.models.layers import CheckpointError
from reworld.training import run_stage
from reworld.training.checkpoint import complete_checkpoints, latest_checkpoint, save_checkpoint
from reworld.training.loop import StageSpec, TrainingError, global_batch, run


class SafetensorsModule(torch.nn.Module):
    """A plain module with the `save_pretrained` that checkpoints call (safetensors into a folder)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def save_pretrained(self, path, safe_serialization=True):
        import os

        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        save_file(self.state_dict(), os.path.join(path, "w.safetensors"))


PSNR_BF16_MIN_DB = 30.0  # bf16 vs fp32 frames of the same sample (bf16 keeps ~3 significant digits)
TRAJ_BF16_MAX_M = 0.5  # [m] largest difference of a planned waypoint


def test_every_stage_writes_a_loadable_checkpoint(tiny_run):
    from reworld import WorldActionPipeline

    out, results = tiny_run
    for stage in ("vae", "video", "action", "joint"):
        assert results[stage]["finite"], stage
        ckpt = latest_checkpoint(out, stage)
        assert ckpt is not None and (ckpt / "meta.json").is_file() and (ckpt / "optimizer.safetensors").is_file()
        assert not list(ckpt.rglob("*.bin")) and not list(ckpt.rglob("*.pt"))  # safetensors only
    pipe = WorldActionPipeline.from_pretrained(out, require_planner=True)
    assert pipe.action_dit is not None
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "WorldActionPipeline" and index["action_dit"] == ["reworld.models.action_dit",
                                                                                       "ActionDiT"]
    assert index["vae"] == ["diffusers", "AutoencoderKLLTXVideo"] and "_vae_folder" not in index
    rows = list(csv.DictReader(open(out / "logs" / "video.csv")))
    assert {"gen", "ig", "total", "flow_loss", "psnr_sampled", "psnr_repeat_last"} <= {r["name"] for r in rows}
    assert {"fm", "align", "hn", "pdms"} <= {r["name"] for r in csv.DictReader(open(out / "logs" / "action.csv"))}
    assert {"psnr", "psnr_frame0", "psnr_later", "psnr_bicubic"} <= {r["name"] for r in
                                                                    csv.DictReader(open(out / "logs" / "vae.csv"))}


def test_bicubic_reference_codec():
    """The VAE validation's reference: a flat video survives exactly; fine detail (a checkerboard of 1-pixel cells)
    does not survive a 4× downsample at all (it averages to grey)."""
    from reworld.training.stages.vae import bicubic_reconstruction

    flat = torch.full((1, 3, 3, 16, 32), 0.3)
    torch.testing.assert_close(bicubic_reconstruction(flat, 4), flat)
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(32), indexing="ij")
    board = (((yy + xx) % 2) * 2 - 1).float().expand(1, 2, 3, 16, 32)
    assert bicubic_reconstruction(board, 4).abs().max() < 1e-5


def test_pipeline_generate_and_plan(tiny_run, tiny_config):
    from reworld import WorldActionPipeline
    from reworld.data.loader import NuScenesClips

    out, _ = tiny_run
    pipe = WorldActionPipeline.from_pretrained(out)
    clip = NuScenesClips(tiny_config.data, split="val")[0]
    gen = pipe.generate(clip, steps=2, guidance=1.4, seed=3)
    assert gen.frames.shape == clip.target.frames.shape
    assert torch.isfinite(gen.frames).all()
    a = pipe.plan(clip, steps=3, num_samples=4, seed=7)
    b = pipe.plan(clip, steps=3, num_samples=4, seed=7)
    assert a.trajectories.shape == (4, 8, 3) and np.isfinite(a.trajectories).all()
    np.testing.assert_array_equal(a.trajectories, b.trajectories)
    assert len(a.scores) == 4 and all(0.0 <= s.pdms <= 1.0 for s in a.scores)
    f = pipe.planner_features(clip, np.stack([clip.target.trajectory.numpy()] * 3))
    assert f.shape == (3, pipe.action_dit.config.width)
    # the sampler spaces its steps with the model's training shift (`loss.shift`), as diffusers' scheduler does
    from reworld.config import replace
    from reworld.schedulers import flow_sigmas

    assert [r.sigma for r in pipe.generate(clip, steps=4, seed=3, record=True).record] == flow_sigmas(4)[:-1]
    pipe.config = replace(pipe.config, loss={"shift": 3.0})
    assert [r.sigma for r in pipe.generate(clip, steps=4, seed=3, record=True).record] == flow_sigmas(4, 3.0)[:-1]
    # … and so does the planner's, trained on σ drawn with the same shift (its steps used to walk the unshifted grid)
    seen, forward = [], pipe.action_dit.forward

    def spy(noisy_poses, sigma, *args, **kwargs):
        seen.append(float(sigma[0]))
        return forward(noisy_poses, sigma, *args, **kwargs)

    pipe.action_dit.forward = spy
    pipe.plan(clip, steps=4, seed=3)
    pipe.plan_seeds([clip], [3], steps=4)
    assert seen == pytest.approx(flow_sigmas(4, 3.0)[:-1] * 2)


def test_pipeline_says_what_callers_need(tiny_run, tiny_config):
    """Callers (eval, analysis, the app) read the run through these, never through the models' configs."""
    import dataclasses

    from reworld import WorldActionPipeline
    from reworld.config import replace

    out, _ = tiny_run
    pipe = WorldActionPipeline.from_pretrained(out)
    assert pipe.heads == (1,) and pipe.has_planner
    assert pipe.default_guidance == tiny_config.train.guidance  # a trained head (λ_ig > 0)
    assert (pipe.plan_steps, pipe.default_steps) == (tiny_config.action.plan_steps, tiny_config.train.sample_steps)
    assert dataclasses.asdict(pipe.clip_spec) == {**dataclasses.asdict(tiny_config.data),
                                                  "dataroot": pipe.clip_spec.dataroot}
    pipe.config = replace(pipe.config, loss={"lambda_ig": 0.0})  # vanilla: its head was never trained
    assert pipe.heads == (1,) and pipe.default_guidance == 1.0


def test_bf16_pipeline_generates_and_plans_like_fp32(tiny_run, tiny_config):
    """VAE and Video DiT in bfloat16 (on the CPU here), the planner in float32: no dtype errors at any module
    boundary, and the results stay close to the float32 pipeline's."""
    from reworld import WorldActionPipeline
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.video import psnr

    out, _ = tiny_run
    p32 = WorldActionPipeline.from_pretrained(out, device="cpu")
    p16 = WorldActionPipeline.from_pretrained(out, device="cpu", torch_dtype=torch.bfloat16)
    assert p16.vae.dtype == p16.video_dit.dtype == torch.bfloat16
    assert next(p16.action_dit.parameters()).dtype == torch.float32
    clip = NuScenesClips(tiny_config.data, split="val")[0]
    g32, g16 = (p.generate(clip, steps=3, guidance=1.4, seed=1, record=True) for p in (p32, p16))
    assert g16.frames.dtype == torch.float32 and torch.isfinite(g16.frames).all()
    assert float(psnr(g16.frames[None], g32.frames[None])) > PSNR_BF16_MIN_DB
    a, b = (p.plan(clip, steps=3, num_samples=4, seed=2) for p in (p32, p16))
    assert np.isfinite(b.trajectories).all() and len(b.scores) == 4
    assert np.abs(a.trajectories - b.trajectories)[..., :2].max() < TRAJ_BF16_MAX_M
    assert p16.planner_features(clip, a.trajectories).shape == (4, p16.action_dit.config.width)


def test_resume_reproduces_uninterrupted_losses(tiny_config_path, tiny_run, tmp_path):
    src, _ = tiny_run
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        shutil.copytree(src / "vae", d / "vae")
        shutil.copy(src / "config.json", d / "config.json")
    run_stage("video", str(tiny_config_path), str(a), max_steps=4)
    run_stage("video", str(tiny_config_path), str(b), max_steps=2)
    run_stage("video", str(tiny_config_path), str(b), max_steps=4, resume=True)

    def losses(d):
        return {(r["step"], r["name"]): float(r["value"]) for r in csv.DictReader(open(d / "logs" / "video.csv"))
                if r["kind"] == "train"}

    la, lb = losses(a), losses(b)
    assert la.keys() == lb.keys() and ("4", "total") in la
    for key in la:
        assert la[key] == pytest.approx(lb[key], rel=1e-4, abs=1e-6), key


def test_partial_checkpoint_is_never_picked(tmp_path):
    save_checkpoint(tmp_path, "video", 2, {"m": SafetensorsModule(torch.nn.Linear(2, 2))}, None, {})
    partial = tmp_path / "checkpoints" / "video" / "step-0000004"
    (partial / "m").mkdir(parents=True)  # a kill before meta.json was written
    (tmp_path / "checkpoints" / "video" / ".tmp-step-0000006-x").mkdir()
    assert latest_checkpoint(tmp_path, "video").name == "step-0000002"
    assert [p.name for p in complete_checkpoints(tmp_path, "video")] == ["step-0000002"]


def test_nonfinite_loss_stops_naming_step_and_term(tmp_path, tiny_config, cpu_accelerator):
    """The check is deferred (no host sync per step) yet names the first bad step and its terms, and no
    checkpoint is written from weights a non-finite step touched."""
    from reworld.config import replace

    lin = torch.nn.Linear(3, 1)

    def step_fn(idx, generator):
        step_fn.calls += 1
        x = lin(torch.ones(1, 3)).sum()
        bad = x * float("nan") if step_fn.calls == 3 else x * 0
        return {"gen": x ** 2, "ig": bad, "total": x ** 2 + bad}

    step_fn.calls = 0
    spec = StageSpec("video", {"m": SafetensorsModule(lin)}, [{"params": list(lin.parameters())}], 10, step_fn)
    config = replace(tiny_config, train={"log_every": 10, "val_every": 10, "ckpt_every": 2})
    with pytest.raises(TrainingError, match=r"step 3: term\(s\) ig, total"):
        run(spec, config, tmp_path, max_steps=6, resume=False, accelerator=cpu_accelerator())
    assert latest_checkpoint(tmp_path, "video").name == "step-0000002"  # the last good one, untouched
    assert step_fn.calls == 4  # caught at step 4's checkpoint, before it is written, not at the next log


def test_global_batch_is_a_function_of_step():
    a = global_batch(10, 4, seed=0, step=3)
    assert np.array_equal(a, global_batch(10, 4, seed=0, step=3))
    seen = np.concatenate([global_batch(10, 5, seed=0, step=s) for s in range(2)])
    assert sorted(seen.tolist()) == list(range(10))  # one epoch covers every clip once


def test_feature_files_move_when_checkpoint_changes(tiny_run, tiny_config):
    """The prepared hidden states are keyed by the Video DiT's weights: a changed checkpoint never reads them."""
    from reworld.training.prepare import hidden_states_folder

    out, _ = tiny_run

    def folder():
        return hidden_states_folder(out, tiny_config, out / "video_dit", out / "vae", [0, 1], "train")

    key = folder()
    assert key == folder() and key != hidden_states_folder(out, tiny_config, out / "video_dit", out / "vae", [0],
                                                           "train")
    weights = out / "video_dit" / "diffusion_pytorch_model.safetensors"
    backup = weights.read_bytes()
    try:
        from safetensors.torch import load_file, save_file

        state = load_file(str(weights))
        name = next(iter(state))
        state[name] = state[name] + 1.0
        save_file(state, str(weights))
        assert folder() != key
    finally:
        weights.write_bytes(backup)


def test_missing_or_pickle_checkpoint_is_an_error(tmp_path):
    from reworld import WorldActionPipeline

    with pytest.raises(CheckpointError, match="not found"):
        WorldActionPipeline.from_pretrained(tmp_path / "nope")
    (tmp_path / "ck").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        WorldActionPipeline.from_pretrained(tmp_path / "ck")


def test_stage_without_earlier_stage_is_an_error(tiny_config_path, tmp_path):
    with pytest.raises(CheckpointError, match="stage video needs a trained VAE"):
        run_stage("video", str(tiny_config_path), str(tmp_path / "empty"), max_steps=1)


def test_bf16_autocast_and_gradient_checkpointing_train_the_video_stage(tiny_config_path, tiny_run, tmp_path):
    """`train.mixed_precision: bf16` runs a stage on the CPU without dtype errors and keeps fp32 weights;
    `train.gradient_checkpointing` recomputes the blocks and gives the same losses as without."""
    import yaml

    from reworld.models.video_dit import VideoDiT

    src, _ = tiny_run
    losses = {}
    for name, train in (("plain", {}), ("ckpt", {"gradient_checkpointing": True}),
                        ("bf16", {"mixed_precision": "bf16"})):
        doc = yaml.safe_load(tiny_config_path.read_text())
        doc["train"].update(train)
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        out = tmp_path / name
        shutil.copytree(src / "vae", out / "vae")
        if name == "bf16":  # accelerate fixes the precision once per process: a fresh one, as a user runs it
            import subprocess
            import sys

            done = subprocess.run([sys.executable, "-m", "reworld", "train", "--stage", "video", "--config", str(cfg),
                                   "--out", str(out), "--max-steps", "2"], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]
        else:
            assert run_stage("video", str(cfg), str(out), max_steps=2)["finite"], name
        losses[name] = [float(r["value"]) for r in csv.DictReader(open(out / "logs" / "video.csv"))
                        if r["kind"] == "train" and r["name"] == "total"]
        weights = VideoDiT.from_pretrained(out / "video_dit")
        assert all(p.dtype == torch.float32 for p in weights.parameters())  # master weights stay fp32
    assert losses["ckpt"] == losses["plain"]
    assert losses["bf16"] != losses["plain"]  # autocast really ran in bf16 …
    assert np.allclose(losses["bf16"], losses["plain"], rtol=0.05)  # … and computes the same loss to bf16 precision


def test_train_compile_compiles_every_block_and_keeps_the_output(tiny_config):
    """`train.compile` compiles each repeated LTX block (regional compilation) and the compiled Video DiT gives
    the uncompiled one's velocity; blocks stay the same modules, so checkpoints keep their keys."""
    from reworld.config import replace
    from reworld.models.video_dit import VideoCond, video_dit_from_config
    from reworld.training.stages.common import speed_up

    torch.manual_seed(0)
    model = video_dit_from_config(tiny_config.video, in_channels=8).eval()
    keys = list(model.state_dict())
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 8, 3, 4, 8, generator=g), VideoCond(torch.tensor([0, 2]), torch.randn(2, 3, generator=g))
    with torch.no_grad():
        plain = model(x, torch.tensor([0.3, 0.7]), cond, 1).sample
        speed_up(model, replace(tiny_config, train={"compile": True}).train)
        assert all(b._compiled_call_impl is not None for b in model.transformer.transformer_blocks)
        compiled = model(x, torch.tensor([0.3, 0.7]), cond, 1).sample
    assert torch.allclose(compiled, plain, atol=1e-5)
    assert list(model.state_dict()) == keys



def _from_the_shared_run(src: Path, out: Path) -> Path:
    """A run folder with the shared run's VAE, Video DiT and hard negatives (keyed by the data, K, the seed and the
    scorer, none of which the tests below change: the stage finds them made)."""
    for part in ("vae", "video_dit"):
        shutil.copytree(src / part, out / part)
    for folder in (src / "prepared").glob("negatives-*"):
        shutil.copytree(folder, out / "prepared" / folder.name)
    return out


def test_action_stage_without_feature_files_recomputes_them(tiny_config_path, tiny_run, tmp_path):
    """`action.feature_cache: false` trains stage action on hidden states recomputed every step (fresh noise): no
    feature files are written; with the cache the files exist, one per clip and split."""
    import yaml

    src, _ = tiny_run
    features = sorted((src / "prepared").glob("features-*/train/*.safetensors"))
    assert len(features) == len(load_clip_tensors_tokens(tiny_config_path))  # the shared run used the cache
    doc = yaml.safe_load(tiny_config_path.read_text())
    doc.setdefault("action", {})["feature_cache"] = False
    cfg = tmp_path / "nocache.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = _from_the_shared_run(src, tmp_path / "run")
    assert run_stage("action", str(cfg), str(out), max_steps=2)["finite"]
    assert not list((out / "prepared").glob("features-*"))
    assert (out / "action_dit" / "config.json").is_file()


def test_action_stage_with_several_feature_draws_and_clipped_negatives(tiny_config_path, tiny_run, tmp_path):
    """The claims study's planner switches (docs/study.md §4) train: `action.feature_draws: 2` prepares two noise
    draws per clip in a folder of its own, `loss.hn_clip_z: 3` clips the negatives, `action.align_target: frames`
    aligns each waypoint with its future frame, `action.align_sigma: 0` takes the target from the clean future; the
    losses of stages action and joint stay finite."""
    import yaml
    from safetensors import safe_open

    src, _ = tiny_run
    doc = yaml.safe_load(tiny_config_path.read_text())
    doc.setdefault("action", {}).update(feature_draws=2, align_target="frames", align_sigma=0.0)
    doc.setdefault("loss", {}).update(hn_clip_z=3.0, lambda_hn=0.2, lambda_align=0.5)
    cfg = tmp_path / "draws.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = _from_the_shared_run(src, tmp_path / "run")
    assert run_stage("action", str(cfg), str(out), max_steps=3)["finite"]
    made = {p.name for p in (out / "prepared").glob("negatives-*")}
    assert made == {p.name for p in (src / "prepared").glob("negatives-*")}  # the shared run's, none made here
    files = sorted((out / "prepared").glob("features-*/train/*.safetensors"))
    assert len(files) == len(load_clip_tensors_tokens(tiny_config_path))
    with safe_open(str(files[0]), "pt") as f:
        keys = set(f.keys())
    assert any(k.endswith("@1") for k in keys) and any("@" not in k for k in keys)
    assert json.loads((out / "config.json").read_text())["loss"]["hn_clip_z"] == 3.0
    with safe_open(str(files[0]), "pt") as f:
        assert {"target", "target@1"} <= set(f.keys())  # the clean pass of the alignment target, per draw
    assert run_stage("joint", str(cfg), str(out), max_steps=1)["finite"]  # stage 3 makes the target's pass itself


def test_video_stage_fine_tunes_from_a_saved_video_dit(tiny_config_path, tiny_run, tmp_path):
    """`video.init_from` (the claims study's C1): stage video starts from a saved Video DiT's weights, all of them
    (at lr 0 the exported model is the one it started from); a folder of another architecture is a short error."""
    import yaml

    from reworld.models.video_dit import VideoDiT

    src, _ = tiny_run
    doc = yaml.safe_load(tiny_config_path.read_text())
    doc["video"]["init_from"] = str(src / "video_dit")
    doc["train"].update(lr=0.0, ema_decay=0.0, lr_schedule="constant", lr_warmup_steps=0)
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = tmp_path / "ft"
    shutil.copytree(src / "vae", out / "vae")
    assert run_stage("video", str(cfg), str(out), max_steps=1)["finite"]
    start, tuned = VideoDiT.from_pretrained(src / "video_dit"), VideoDiT.from_pretrained(out / "video_dit")
    for (k, a), b in zip(start.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(a, b), k
    doc["video"]["num_layers"] = doc["video"].get("num_layers", 8) + 1
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(CheckpointError, match="init_from .*do not fit"):
        run_stage("video", str(cfg), str(tmp_path / "ft2"), max_steps=1, vae_path=str(src / "vae"))


def test_video_stage_trains_on_the_clips_of_extra_worlds(tiny_config_path, tiny_run, tmp_path):
    """`video.train_worlds`: every clip of a training-only world joins the train split's clips in stage video, each
    world encoded into its own latent folder; the joined store gives each clip the latents its own frames encode to;
    naming a world twice (or the config's own) is a short error."""
    import dataclasses

    import yaml

    from reworld.config import ConfigError, load_config
    from reworld.data.clips import load_clip_tensors
    from reworld.data.synth import generate_world
    from reworld.models.vae import encode_frames
    from reworld.training.prepare import LatentStore
    from reworld.training.stages.common import load_run_vae
    from reworld.training.stages.video import train_clips_and_latents

    src, _ = tiny_run
    extra = tmp_path / "extra-world"
    generate_world(extra, num_scenes=2, seed=5, version="v1.0-synth", image_size=(64, 128), scene_seconds=10.0)
    doc = yaml.safe_load(tiny_config_path.read_text())
    doc["video"]["train_worlds"] = [str(extra)]
    cfg_path = tmp_path / "worlds.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    config = load_config(cfg_path)
    out = tmp_path / "run"
    shutil.copytree(src / "vae", out / "vae")
    vae = load_run_vae(out, config, "video")
    with torch.no_grad():
        clips, parts = train_clips_and_latents(config, out, vae, "cpu")
    own = load_clip_tensors(config.data, "train", frames=False)
    theirs = load_clip_tensors(dataclasses.replace(config.data, dataroot=str(extra)), "all")
    assert clips.tokens == own.tokens + theirs.tokens and len(clips.command) == len(clips.tokens)
    assert [len(tokens) for _, tokens in parts] == [len(own), len(theirs)]
    assert parts[0][0].name == "train" and parts[1][0].name == "all" and parts[0][0].parent != parts[1][0].parent
    store = LatentStore.joined(parts, "cpu")
    i = len(own) + 1  # the second clip of the extra world
    with torch.no_grad():
        expect = encode_frames(vae, theirs.video(slice(1, 2)))[0]
    assert torch.allclose(store[[i]][0], expect, atol=1e-5)
    assert run_stage("video", str(cfg_path), str(out), max_steps=1)["finite"]

    doc["video"]["train_worlds"] = [str(extra), str(extra) + "/"]
    cfg_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="named twice"):
        train_clips_and_latents(load_config(cfg_path), out, vae, "cpu")


def load_clip_tensors_tokens(config_path) -> list[str]:
    from reworld.config import load_config
    from reworld.data.clips import load_clip_tensors

    return load_clip_tensors(load_config(config_path).data, "train", frames=False).tokens


def test_plan_batch_gives_each_clip_its_own_plan(tiny_run, tiny_config):
    """`plan_batch` (what `eval` uses) plans many clips at once, and each clip gets the trajectory `plan` gives it
    alone with the same seed: batching changes the speed, not the figures."""
    from reworld import WorldActionPipeline
    from reworld.data.loader import NuScenesClips

    out, _ = tiny_run
    pipe = WorldActionPipeline.from_pretrained(out)
    ds = NuScenesClips(tiny_config.data, split="val", geometry=False)
    clips = [ds[i] for i in range(min(4, len(ds)))]
    batch = pipe.plan_batch(clips, steps=4, seed=3)
    alone = np.stack([pipe.plan(c, steps=4, num_samples=1, seed=3, score=False).trajectories[0] for c in clips])
    assert batch.shape == (len(clips), 8, 3)
    np.testing.assert_allclose(batch, alone, atol=1e-4)
    assert not np.allclose(batch, pipe.plan_batch(clips, steps=4, seed=4), atol=1e-3)  # the seed matters
    several = pipe.plan_seeds(clips, [4, 3], steps=4)  # the claims study's plans: sample j is seed j's plan
    assert several.shape == (len(clips), 2, 8, 3)
    np.testing.assert_allclose(several[:, 1], batch, atol=1e-4)
    np.testing.assert_allclose(several[:, 0], pipe.plan_batch(clips, steps=4, seed=4), atol=1e-4)


def test_attention_backend_switch(tiny_config):
    """`train.attention_backend` picks diffusers' attention kernel for the Video DiT: another local kernel gives
    the same velocity; a hub backend (it would download kernels) or an unknown name is a short error."""
    from reworld.config import replace
    from reworld.models.video_dit import VideoCond, video_dit_from_config
    from reworld.training.stages.common import speed_up

    torch.manual_seed(0)
    model = video_dit_from_config(tiny_config.video, in_channels=8).eval()
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 8, 3, 4, 8, generator=g), VideoCond(torch.tensor([0, 2]), torch.randn(2, 3, generator=g))
    with torch.no_grad():
        native = model(x, torch.tensor([0.3, 0.7]), cond, 1).sample
        speed_up(model, replace(tiny_config, train={"attention_backend": "_native_math"}).train)
        math = model(x, torch.tensor([0.3, 0.7]), cond, 1).sample
    torch.testing.assert_close(math, native, atol=1e-5, rtol=1e-4)
    for bad in ("flash_hub", "fastest"):
        with pytest.raises(TrainingError, match="not a local diffusers attention backend"):
            speed_up(model, replace(tiny_config, train={"attention_backend": bad}).train)


def test_vae_trains_on_short_windows_and_validates_whole_clips(tiny_config_path, tmp_path):
    """`vae.train_window`: the VAE stage cuts windows of 1 + k·r frames from each clip (cheaper steps); a window
    that does not fall on latent frames, or is longer than the clip, is refused before training."""
    import yaml

    for window, ok in ((5, True), (6, False), (13, False)):
        doc = yaml.safe_load(tiny_config_path.read_text())
        doc["vae"]["train_window"] = window
        cfg = tmp_path / f"w{window}.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        if ok:
            assert run_stage("vae", str(cfg), str(tmp_path / f"w{window}"), max_steps=2)["finite"]
        else:
            with pytest.raises(ValueError, match="train_window"):
                run_stage("vae", str(cfg), str(tmp_path / f"w{window}"), max_steps=1)


def _ema_stage(exported: dict, seen: list):
    """A one-layer stage whose step records the raw weights it starts from and whose export keeps the weights."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    target = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])

    def step_fn(idx, generator):
        seen.append(lin.weight.detach().clone())
        x = torch.randn(8, 3, generator=generator)
        loss = ((lin(x) - x @ target.T) ** 2).mean()
        return {"total": loss}

    def load_fn(ckpt):
        from safetensors.torch import load_file

        state = load_file(str(ckpt / "m" / "w.safetensors"))
        lin.load_state_dict({k.removeprefix("inner."): v for k, v in state.items()})

    def export_fn(models):
        exported.update({k: v.detach().clone() for k, v in models["m"].inner.state_dict().items()})

    return StageSpec("video", {"m": SafetensorsModule(lin)}, [{"params": list(lin.parameters())}], 10, step_fn,
                     export_fn=export_fn, load_fn=load_fn), lin


@pytest.fixture
def cpu_accelerator():
    """`Accelerator(cpu=True)` for stages built of CPU modules. accelerate keeps one AcceleratorState per process,
    and on a CUDA machine an earlier test in the same process has set it up on the GPU, after which
    `Accelerator(cpu=True)` refuses (seen on an H200); the state is reset before each one and after the test."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    def make():
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=True)

    yield make
    AcceleratorState._reset_state(reset_partial_state=True)


def test_ema_and_lr_schedule_are_exported_and_resume_exactly(tmp_path, tiny_config, cpu_accelerator):
    """With `train.ema_decay` the exported weights are diffusers' warm-up EMA of the raw weights (known answer,
    recomputed here from the weights each step saw), checkpoints carry the averages, and a run stopped and
    resumed exports what an uninterrupted one does, schedule and average included."""
    from reworld.config import replace

    config = replace(tiny_config, train={"log_every": 1, "val_every": 100, "ckpt_every": 3, "lr": 0.05,
                                         "lr_schedule": "cosine", "lr_warmup_steps": 2, "ema_decay": 0.9,
                                         "ema_power": 0.75})
    whole, seen = {}, []
    spec, lin = _ema_stage(whole, seen)
    run(spec, config, tmp_path / "a", max_steps=6, resume=False, accelerator=cpu_accelerator())
    raw = seen[1:] + [lin.weight.detach().clone()]  # the raw weights after steps 1…6
    ema = seen[0].clone()
    for n, w in enumerate(raw, start=1):  # decay 1 − (1 + s)^−power with s = n − 1, capped; 0 at the first step
        s = n - 1
        decay = 0.0 if s <= 0 else min(1 - (1 + s) ** -0.75, 0.9)
        ema = decay * ema + (1 - decay) * w
    torch.testing.assert_close(whole["weight"], ema, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(whole["weight"], raw[-1], atol=1e-3)  # the average, not the last weights
    assert (latest_checkpoint(tmp_path / "a", "video") / "ema.safetensors").is_file()

    parts, _ = {}, None
    spec_b, _ = _ema_stage(parts, [])
    run(spec_b, config, tmp_path / "b", max_steps=6, resume=False, accelerator=cpu_accelerator())
    spec_c, _ = _ema_stage(parts, [])  # a fresh process: new models, restored from step 3
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "video" / "step-0000006")
    run(spec_c, config, tmp_path / "b", max_steps=6, resume=True, accelerator=cpu_accelerator())
    for k in whole:
        torch.testing.assert_close(parts[k], whole[k], rtol=1e-6, atol=1e-7)


def test_lr_schedule_resumes_at_its_step():
    from reworld.config import TrainConfig
    from reworld.training.ema import make_schedule

    tcfg = TrainConfig(lr=1.0, lr_schedule="cosine", lr_warmup_steps=10)

    def lr_at(step):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tcfg.lr)
        make_schedule(opt, tcfg, max_steps=110, start=step)
        return opt.param_groups[0]["lr"]

    assert lr_at(0) == 0.0 and lr_at(5) == pytest.approx(0.5)  # linear warm-up
    assert lr_at(60) == pytest.approx(0.5) and lr_at(10) == pytest.approx(1.0)  # half-way down the cosine
    assert lr_at(110) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        make_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                      TrainConfig(lr_schedule="cosin"), 10, 0)


def test_a_world4s_shaped_run_trains_generates_and_plans(tiny_config_path, tiny_config, tmp_path):
    """The seconds-of-future layout end to end at test size: 4 Hz clips of 5 + 8 frames (several future latent
    frames), configs/world4s.yaml's VAE layout (patch 2 and one spatio-temporal stage: 4× spatial, 2× temporal) seen by
    a Video DiT that packs 2×2 latent pixels a token and models the future as a residual on the last context frame,
    EMA and a cosine schedule, through every stage, then generate, plan and the planner's features."""
    import yaml

    from reworld import WorldActionPipeline
    from reworld.data.loader import NuScenesClips

    doc = yaml.safe_load(tiny_config_path.read_text())
    doc["data"].update(future_frames=8, frame_rate=4.0)
    doc["vae"].update(patch_size=2, spatio_temporal_scaling=[True, False, False])
    doc["video"].update(patch_size=2, future_residual=True)
    doc["train"].update(lr_schedule="cosine", lr_warmup_steps=1, ema_decay=0.99)
    path = tmp_path / "w4s.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    for stage in ("vae", "video", "action", "joint"):
        assert run_stage(stage, str(path), str(out), max_steps=2)["finite"], stage
    pipe = WorldActionPipeline.from_pretrained(out, require_planner=True)
    assert pipe.video_dit.patch_size == 2 and pipe.vae.spatial_compression_ratio == 4
    assert pipe.video_dit.future_residual
    assert pipe.vae.temporal_compression_ratio == 2
    clip = NuScenesClips(pipe.clip_spec, split="val")[0]
    gen = pipe.generate(clip, steps=2, seed=0)
    assert gen.frames.shape == clip.target.frames.shape and gen.frames.shape[0] == 8
    assert gen.latents.shape[1] == 1 + (5 + 8 - 1) // 2  # 7 latent frames: 3 of context, 4 of future
    plan = pipe.plan(clip, steps=2, num_samples=2, seed=0)
    assert np.isfinite(plan.trajectories).all()
    assert pipe.planner_features(clip, plan.trajectories).shape == (2, pipe.action_dit.config.width)


def test_a_run_starts_from_the_same_init_whether_it_encodes_its_latents_or_finds_them(tiny_run, tiny_config_path,
                                                                                       tmp_path):
    """The stage initialises its model after the latents are prepared; encoding them (a DataLoader draws its base seed
    from the global RNG) must not move that init: a video run that encodes the clips itself and one that finds them
    already encoded end with the same weights (seen in the claims study: a first run of a seed, which prepared the
    shared latents, started from another init than its paired arms)."""
    from safetensors.torch import load_file

    src, _ = tiny_run
    vae = str(src / "vae")
    run_stage("video", str(tiny_config_path), str(tmp_path / "encodes"), max_steps=1, vae_path=vae)
    finds = tmp_path / "finds"
    finds.mkdir()
    shutil.copytree(tmp_path / "encodes" / "prepared", finds / "prepared")
    run_stage("video", str(tiny_config_path), str(finds), max_steps=1, vae_path=vae)
    a, b = (load_file(next((tmp_path / r / "video_dit").glob("*.safetensors"))) for r in ("encodes", "finds"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_motion_head_trains_in_the_video_and_joint_stages(tiny_config_path, tiny_run, tmp_path):
    """`video.motion_block` + `loss.lambda_motion` (docs/world4s.md, E15): the video stage logs the motion term, exports
    a Video DiT that keeps the training clips' per-frame pose statistics and reads poses in metres; the joint stage
    keeps the term; a motion loss without a motion head is a short error."""
    import yaml

    from reworld.config import ConfigError, load_config
    from reworld.data.clips import load_clip_tensors
    from reworld.models.video_dit import VideoDiT
    from reworld.training.stages.video import motion_targets

    src, _ = tiny_run
    doc = yaml.safe_load(tiny_config_path.read_text())
    doc.setdefault("loss", {})["lambda_motion"] = 0.5
    doc["train"]["ema_decay"] = 0.9  # exported with EMA weights swapped in: the statistics (buffers) stay the stage's
    cfg = tmp_path / "motion.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="motion_block"):
        run_stage("video", str(cfg), str(tmp_path / "nohead"), max_steps=1, vae_path=str(src / "vae"))
    doc["video"]["motion_block"] = 0
    cfg.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    assert run_stage("video", str(cfg), str(out), max_steps=2, vae_path=str(src / "vae"))["finite"]
    rows = list(csv.reader(open(out / "logs" / "video.csv")))
    assert {r[3] for r in rows[1:] if r[1] == "train"} >= {"gen", "ig", "motion", "total"}
    assert "motion_loss" in {r[3] for r in rows[1:] if r[1] == "val"}

    model = VideoDiT.from_pretrained(out / "video_dit")
    config = load_config(cfg)
    train = load_clip_tensors(config.data, "train", frames=False)
    n_fut = model.motion_mean.shape[0]
    poses = motion_targets(config, train, n_fut)  # the logged poses at the future latent frames' times
    torch.testing.assert_close(model.motion_mean, poses.mean(0))
    torch.testing.assert_close(model.motion_std, poses.std(0).clamp_min(1e-3))
    torch.testing.assert_close(model.motion_poses(model.motion_normalise(poses)), poses, rtol=1e-5, atol=1e-5)

    shutil.copytree(src / "action_dit", out / "action_dit")
    assert run_stage("joint", str(cfg), str(out), max_steps=1)["finite"]
    rows = list(csv.reader(open(out / "logs" / "joint.csv")))
    assert "video" in {r[3] for r in rows[1:] if r[1] == "train"}


def test_motion_feedback_trains_and_the_pipeline_samples_with_its_motion_guidance(tiny_config_path, tiny_run, tiny_judge,
                                                                                  tmp_path):
    """docs/world4s.md, E17: `video.motion_feedback` with teacher forcing and null draws trains in the video stage,
    exports a Video DiT with the feedback, and the pipeline samples with the run's `train.motion_guidance` unless told
    otherwise and can imagine given poses; keys that need the feedback (or a trained head) are short errors."""
    import yaml

    from reworld import WorldActionPipeline
    from reworld.config import ConfigError, load_config
    from reworld.data.loader import NuScenesClips

    src, _ = tiny_run
    doc = yaml.safe_load(tiny_config_path.read_text())
    cfg = tmp_path / "feedback.yaml"
    for bad, match in (({"train": {"motion_guidance": 1.0}}, "train.motion_guidance need video.motion_feedback"),
                       ({"video": {"motion_block": 0, "motion_feedback": True}}, "needs loss.lambda_motion > 0")):
        wrong = yaml.safe_load(tiny_config_path.read_text())
        for section, values in bad.items():
            wrong.setdefault(section, {}).update(values)
        cfg.write_text(yaml.safe_dump(wrong))
        with pytest.raises(ConfigError, match=match):
            run_stage("video", str(cfg), str(tmp_path / "bad"), max_steps=1, vae_path=str(src / "vae"))
    doc["video"].update(motion_block=0, motion_feedback=True)
    doc.setdefault("loss", {}).update(lambda_motion=0.5, motion_teacher=0.5, motion_null=0.25)
    doc["train"]["motion_guidance"] = 1.0
    cfg.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    assert run_stage("video", str(cfg), str(out), max_steps=3, vae_path=str(src / "vae"))["finite"]
    shutil.copytree(src / "action_dit", out / "action_dit")
    pipe = WorldActionPipeline.from_pretrained(out)
    assert pipe.video_dit.motion_embed is not None
    assert pipe.video_dit.motion_embed.fc2.weight.abs().sum() > 0  # trained away from its zero start
    clip = NuScenesClips(load_config(cfg).data, split="val")[0]
    default = pipe.generate(clip, steps=2, seed=3).latents
    torch.testing.assert_close(default, pipe.generate(clip, steps=2, seed=3, motion_guidance=1.0).latents,
                               rtol=0, atol=0)
    assert not torch.equal(default, pipe.generate(clip, steps=2, seed=3, motion_guidance=0.0).latents)
    n_fut = pipe.video_dit.motion_mean.shape[0]
    imagined = pipe.generate(clip, steps=2, seed=3, motion_poses=torch.tensor([[8.0, 3.0, 0.5]] * n_fut)).latents
    assert torch.isfinite(imagined).all() and not torch.equal(imagined, default)
    with pytest.raises(ValueError, match="motion_poses must be"):
        pipe.generate(clip, steps=2, motion_poses=torch.zeros(n_fut + 1, 3))
    from reworld.evaluation.evaluate import evaluate

    report = evaluate(str(out), limit=2, video_clips=1, steps=2, motion_guidance=0.0)
    assert report.settings["motion_guidance"] == 0.0 and evaluate(str(out), limit=1, video_clips=0).settings[
        "motion_guidance"] == 1.0
    with pytest.raises(ValueError, match="motion_feedback"):
        evaluate(str(src), limit=1, video_clips=0, motion_guidance=1.0)
    # scripts/motion_oracle.py (E17's diagnostic): the model's own poses, the logged ones and their mirror image
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("motion_oracle", Path(__file__).parent.parent / "scripts"
                                                  / "motion_oracle.py")
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    assert oracle.main(["--checkpoint", str(out), "--judge", str(tiny_judge), "--every", "2", "--steps", "2",
                        "--min-lateral", "0", "--out", str(tmp_path / "oracle.json")]) == 0
    doc = json.loads((tmp_path / "oracle.json").read_text())
    assert set(doc["position_m"]) == {"own", "logged"} and doc["mirror"]["clips"] == doc["clips"]
    assert np.isfinite(doc["logged_minus_own_m"]["mean"]) and 0 <= doc["mirror"]["rate"] <= 1
    with pytest.raises(SystemExit):  # a Video DiT without the feedback has nothing to be handed
        oracle.main(["--checkpoint", str(src), "--judge", str(tiny_judge)])
    assert run_stage("joint", str(cfg), str(out), max_steps=1)["finite"]
