"""Prepared latents: each rank encodes its share of the clips, a re-run does no work, a damaged file is named."""
from pathlib import Path

import pytest
import torch

from reworld.config import replace
from reworld.data.clips import load_clip_tensors
from reworld.models.layers import CheckpointError
from reworld.models.vae import build_vae, configure_vae, encode_frames
from reworld.training import prepare as P


@pytest.fixture()
def setup(tiny_config, tmp_path):
    torch.manual_seed(0)
    vae = configure_vae(build_vae(tiny_config.vae), tiny_config.vae).eval()
    vae.save_pretrained(tmp_path / "vae")
    tokens = load_clip_tensors(tiny_config.data, "train", frames=False).tokens
    return tiny_config, tmp_path, vae, tokens


def test_ranks_split_the_clips_and_a_rerun_encodes_nothing(setup, monkeypatch):
    config, out, vae, tokens = setup
    encoded = []
    monkeypatch.setattr(P, "encode_frames", lambda v, f: encoded.append(len(f)) or encode_frames(v, f))
    for rank in (0, 1):  # two processes, one after the other: each writes only its share
        monkeypatch.setattr(P, "_rank_world", lambda r=rank: (r, 2))
        folder = P.prepare_latents(config, out, vae, out / "vae", "train", tokens, "cpu")
        assert sum(encoded) == (len(tokens[0::2]) if rank == 0 else len(tokens))
    assert sorted(p.stem for p in folder.glob("*.safetensors")) == sorted(tokens)
    encoded.clear()
    monkeypatch.setattr(P, "_rank_world", lambda: (0, 1))
    assert P.prepare_latents(config, out, vae, out / "vae", "train", tokens, "cpu") == folder and encoded == []
    # the files hold exactly what encoding the clips gives
    store = P.LatentStore(folder, tokens, "cpu")
    clips = load_clip_tensors(config.data, "train", limit=3)
    with torch.no_grad():
        torch.testing.assert_close(store[[0, 1, 2]], encode_frames(vae, clips.video(slice(0, 3))))
    assert store[slice(0, 2)].shape == (2, *store.shape[1:]) and store.shape[0] == len(tokens)


def test_a_damaged_or_missing_latent_file_is_named(setup):
    config, out, vae, tokens = setup
    folder = P.prepare_latents(config, out, vae, out / "vae", "train", tokens[:4], "cpu")
    victim = folder / f"{tokens[1]}.safetensors"
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    store = P.LatentStore(folder, tokens[:4], "cpu")
    with pytest.raises(CheckpointError, match=f"{tokens[1]}.safetensors: not a readable latent file"):
        store[[1]]
    with pytest.raises(CheckpointError, match=f"no latent file for {len(tokens) - 4} clip"):
        P.LatentStore(folder, tokens, "cpu")
    # another VAE (or clip layout) never reads these files
    other = configure_vae(build_vae(config.vae), config.vae)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    other.save_pretrained(out / "vae2")
    assert P.latents_folder(out, config, out / "vae2", "train") != folder
    # nor do clips of another camera or fitted to the frame another way (their pixels differ)
    for change in ({"camera": "CAM_BACK"}, {"image_fit": "stretch"}):
        assert P.latents_folder(out, replace(config, data=change), out / "vae", "train") != folder, change


def test_prepare_command_on_a_run_folder(tiny_run, tiny_config_path, tmp_path, capsys):
    """`python -m reworld prepare`: the run's train latents; after stage video made them it has nothing to do."""
    import json
    import shutil

    from reworld.cli import main

    src, _ = tiny_run
    out = tmp_path / "run"
    shutil.copytree(src / "vae", out / "vae")
    assert main(["prepare", "--config", str(tiny_config_path), "--out", str(out)]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    files = sorted(Path(first["folder"]).glob("*.safetensors"))
    assert len(files) == first["clips"] > 0
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(["prepare", "--config", str(tiny_config_path), "--out", str(out)]) == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing written again


def test_negatives_are_split_across_ranks_and_match_the_generator(setup, monkeypatch):
    """Each rank makes its share of the hard-negative files; a re-run makes none; a file holds what the
    generator gives for its clip, whatever the batch or rank; a damaged file is named."""
    import json

    import numpy as np

    from reworld.data.loader import NuScenesClips
    from reworld.planning.hard_negatives import generate_hard_negatives
    from reworld.planning.scene import PlanningScene

    config, out, _, tokens = setup
    tokens = tokens[:6]
    made = []
    for rank in (0, 1):
        monkeypatch.setattr(P, "_rank_world", lambda r=rank: (r, 2))
        folder = P.prepare_negatives(config, out, "train", tokens)
        made.append(sorted(p.stem for p in folder.glob("*.safetensors")))
    assert made[0] == sorted(tokens[0::2]) and made[1] == sorted(tokens)
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*.safetensors")}
    monkeypatch.setattr(P, "_rank_world", lambda: (0, 1))
    P.prepare_negatives(config, out, "train", tokens)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.safetensors")} == stamps  # nothing made again
    store = P.NegativeStore(folder, tokens, "cpu")
    trajs, mask = store[[2, 0]]
    k = config.loss.hn_num_negatives
    assert trajs.shape == (2, k, 8, 3) and mask.shape == (2, k) and mask.dtype == torch.bool
    ds = NuScenesClips(config.data, split="train", geometry=True, frames=False)
    clip = ds[[r.sample_token for r in ds.samples].index(tokens[2])]
    hn = generate_hard_negatives(PlanningScene.from_clip(clip), clip.target.trajectory.numpy(), k=k,
                                 seed=P.token_seed(config.train.seed, tokens[2]) % (2**31))
    m = len(hn.trajectories)
    assert int(mask[0].sum()) == m > 0
    np.testing.assert_allclose(trajs[0, :m].numpy(), np.asarray(hn.trajectories, dtype=np.float32))
    assert sum(store.counts().values()) > 0 and json.dumps(store.counts())
    victim = folder / f"{tokens[3]}.safetensors"
    victim.write_bytes(victim.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=f"{tokens[3]}.safetensors: not a readable hard-negative file"):
        store[[3]]


def test_hidden_state_files_do_not_depend_on_batching(setup, tiny_config):
    """The prepared hidden states of a clip are the same whether it was computed alone or in a batch (its noise
    comes from its own token), stored in bf16 and read back as float32 per block."""
    from reworld.models.video_dit import video_dit_from_config

    config, out, vae, tokens = setup
    tokens = tokens[:5]
    clips = load_clip_tensors(config.data, "train", limit=5)
    assert clips.tokens == tokens
    with torch.no_grad():
        latents = encode_frames(vae, clips.video(slice(None)))
    torch.manual_seed(0)
    video_dit = video_dit_from_config(config.video, in_channels=latents.shape[1]).eval()
    blocks = [0, 1]
    folders = []
    for batch in (1, 3):
        folder = out / f"features-b{batch}"
        P.prepare_hidden_states(config, folder, video_dit, latents, tokens, clips.command, clips.ego_status, 1,
                                blocks, "cpu", batch=batch)
        folders.append(folder)
    a = P.HiddenStateStore(folders[0], tokens, blocks, "cpu")[[0, 4]]
    b = P.HiddenStateStore(folders[1], tokens, blocks, "cpu")[[0, 4]]
    assert len(a) == 2 and a[0].dtype == torch.float32 and a[0].shape[0] == 2
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    from safetensors import safe_open

    with safe_open(str(folders[0] / f"{tokens[0]}.safetensors"), "pt") as f:
        assert f.get_tensor("block0").dtype == torch.bfloat16


def test_hidden_state_files_with_several_noise_draws(setup, tiny_config):
    """`action.feature_draws: 3`: each clip's file holds 3 noise draws (draw 0 equal to the one-draw file's), a new
    folder key; a batch read for a training step takes each clip's draw chosen by seed, step and clip (the same on
    every read), every draw is used over steps, and validation (no step) reads draw 0."""
    from reworld.config import replace
    from reworld.models.video_dit import video_dit_from_config

    config, out, vae, tokens = setup
    tokens = tokens[:4]
    clips = load_clip_tensors(config.data, "train", limit=4)
    with torch.no_grad():
        latents = encode_frames(vae, clips.video(slice(None)))
    torch.manual_seed(0)
    video_dit = video_dit_from_config(config.video, in_channels=latents.shape[1]).eval()
    blocks = [0, 1]
    three = replace(config, action={"feature_draws": 3})
    vdir = out / "vd"
    video_dit.save_pretrained(vdir)
    assert P.hidden_states_folder(out, config, vdir, vdir, blocks, "train") != \
        P.hidden_states_folder(out, three, vdir, vdir, blocks, "train")
    one_f, three_f = out / "draws1", out / "draws3"
    P.prepare_hidden_states(config, one_f, video_dit, latents, tokens, clips.command, clips.ego_status, 1, blocks, "cpu")
    P.prepare_hidden_states(three, three_f, video_dit, latents, tokens, clips.command, clips.ego_status, 1, blocks,
                            "cpu", batch=3)
    one = P.HiddenStateStore(one_f, tokens, blocks, "cpu")
    many = P.HiddenStateStore(three_f, tokens, blocks, "cpu", draws=3, seed=config.train.seed)
    for x, y in zip(one[[0, 1, 2, 3]], many[[0, 1, 2, 3]]):  # no step: draw 0, the one-draw cache's
        assert torch.equal(x, y)
    from safetensors import safe_open

    with safe_open(str(three_f / f"{tokens[0]}.safetensors"), "pt") as f:
        d = [f.get_tensor(P.draw_key(0, k)).float() for k in range(3)]
    assert not torch.equal(d[0], d[1]) and not torch.equal(d[1], d[2])  # the draws differ
    chosen = set()
    for step in range(12):
        read = many.read_cpu([0, 2], step=step)["block0"]
        assert torch.equal(read, many.read_cpu([0, 2], step=step)["block0"])  # the same on every read
        k = P.step_draw(config.train.seed, step, tokens[0], 3)
        assert torch.equal(read[0].float(), d[k])
        chosen.add(k)
    assert chosen == {0, 1, 2}
    with pytest.raises(ValueError, match="feature_draws"):
        P.check_feature_draws(0)
    few = P.HiddenStateStore(one_f, tokens, blocks, "cpu", draws=3)
    with pytest.raises(CheckpointError, match="fewer draws|not a readable"):
        for step in range(12):
            few.read_cpu([0, 1, 2, 3], step=step)


def test_hidden_state_files_with_the_alignment_targets_own_pass(setup, tiny_config):
    """`action.align_sigma: 0`: each draw's file also holds the frame means of the alignment block in a pass with the
    clean future (a new folder key); with no noise in that pass, every draw's target is the same."""
    from reworld.config import replace
    from reworld.models.video_dit import video_dit_from_config
    from reworld.pipelines.hidden_states import frame_means, video_hidden_states

    config, out, vae, tokens = setup
    tokens = tokens[:3]
    clips = load_clip_tensors(config.data, "train", limit=3)
    with torch.no_grad():
        latents = encode_frames(vae, clips.video(slice(None)))
    torch.manual_seed(0)
    video_dit = video_dit_from_config(config.video, in_channels=latents.shape[1]).eval()
    blocks = [0, 1]
    cfg = replace(config, action={"feature_draws": 2, "align_sigma": 0.0, "align_video_block": 1})
    vdir = out / "vd2"
    video_dit.save_pretrained(vdir)
    assert P.hidden_states_folder(out, cfg, vdir, vdir, blocks, "train") != \
        P.hidden_states_folder(out, replace(cfg, action={"align_sigma": None}), vdir, vdir, blocks, "train")
    folder = out / "with-target"
    P.prepare_hidden_states(cfg, folder, video_dit, latents, tokens, clips.command, clips.ego_status, 1, blocks, "cpu")
    store = P.HiddenStateStore(folder, tokens, blocks, "cpu", draws=2, seed=cfg.train.seed, target=True)
    t = latents.shape[2]
    a, b = store.read_cpu([0, 1, 2], step=None), {}
    for step in range(8):  # find a step that reads draw 1 of clip 0
        if P.step_draw(cfg.train.seed, step, tokens[0], 2) == 1:
            b = store.read_cpu([0, 1, 2], step=step)
            break
    assert a["target"].shape[:2] == (3, t) and a["target"].shape[2] == a["block0"].shape[2]
    assert torch.equal(a["target"][0], b["target"][0]) and not torch.equal(a["block0"][0], b["block0"][0])
    with torch.no_grad():  # the target is the clean pass of block 1, its frame means
        (hs,) = video_hidden_states(video_dit, latents[:1], clips.command[:1], clips.ego_status[:1], 1, [1], 0.0, 1,
                                    torch.Generator().manual_seed(0))
    torch.testing.assert_close(a["target"][:1].float(), frame_means(hs, t).to(torch.bfloat16).float())
    assert store.target([0, 2]).shape[0] == 2
    with pytest.raises(ValueError, match="no alignment target"):
        P.HiddenStateStore(folder, tokens, blocks, "cpu", draws=2).target([0])


def test_training_reads_its_files_ahead_through_a_dataloader(tiny_run, tiny_config_path, tmp_path, monkeypatch):
    """Stage video with `train.num_workers: 2` reads every step's latent files in DataLoader workers (the training
    process itself opens none after the store's first look) and trains exactly as reading them in the step."""
    import csv
    import shutil

    import yaml

    from reworld.training import run_stage

    src, _ = tiny_run
    losses = {}
    for workers in (0, 2):
        doc = yaml.safe_load(tiny_config_path.read_text())
        doc["train"].update(num_workers=workers, val_every=1000, ckpt_every=1000, log_every=1)
        cfg = tmp_path / f"w{workers}.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        out = tmp_path / f"run{workers}"
        shutil.copytree(src / "vae", out / "vae")
        shutil.copytree(src / "prepared", out / "prepared")  # the latents exist: nothing to encode
        reads = []
        real = P.ClipStore.read
        monkeypatch.setattr(P.ClipStore, "read", lambda self, i: reads.append(i) or real(self, i))
        assert run_stage("video", str(cfg), str(out), max_steps=3)["finite"]
        monkeypatch.setattr(P.ClipStore, "read", real)
        if workers:
            assert len(reads) == 1  # LatentStore's shape probe; the steps' files were read in the workers
        losses[workers] = [(r["step"], r["name"], r["value"]) for r in csv.DictReader(open(out / "logs" / "video.csv"))
                           if r["kind"] == "train"]
    assert losses[0] == losses[2] and len(losses[0]) >= 3


def test_a_joined_store_of_no_clips_is_empty(tmp_path):
    """`ClipStore.joined` over worlds whose split has no clip: an empty store, not a TypeError."""
    from reworld.training import prepare as P

    store = P.ClipStore.joined([(tmp_path / "a", []), (tmp_path / "b", [])], "cpu")
    assert len(store) == 0 and store.folder is None and store.rows(slice(None)) == []
