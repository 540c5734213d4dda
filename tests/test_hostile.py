"""Bad input and hostile files: each is refused with an error naming what is wrong; nothing runs, nothing
hangs, and no model is ever left with random weights."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from reworld.config import replace
from reworld.data.loader import DatasetError, NuScenesClips
from reworld.models.layers import WEIGHTS_INDEX_NAME, WEIGHTS_NAME, CheckpointError, load_model_strict

REPO = Path(__file__).resolve().parent.parent
VERSION = "v1.0-synth"


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reworld", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


class RunsCode:
    """Unpickling this calls open(marker, 'w'): a file appears if anyone unpickles it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture()
def checkpoint(tiny_config, tmp_path):
    """An untrained tiny ReWorld checkpoint folder (config.json, vae/, video_dit/, action_dit/)."""
    from reworld.config import save_config_json
    from reworld.models.action_dit import build_action_dit
    from reworld.models.vae import build_vae
    from reworld.models.video_dit import video_dit_from_config

    cfg = tiny_config
    folder = tmp_path / "ckpt"
    folder.mkdir()
    build_vae(cfg.vae).save_pretrained(folder / "vae")
    video_dit_from_config(cfg.video, in_channels=cfg.vae.latent_channels).save_pretrained(folder / "video_dit")
    build_action_dit(cfg.action, video_dim=cfg.video.num_attention_heads * cfg.video.attention_head_dim,
                     num_video_blocks=cfg.video.num_layers).save_pretrained(folder / "action_dit")
    save_config_json(cfg, folder / "config.json")
    return folder


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ["diffusion_pytorch_model.bin", WEIGHTS_NAME])
def test_pickle_checkpoint_is_refused_and_nothing_runs(checkpoint, tmp_path, name):
    from reworld import WorldActionPipeline
    from reworld.models.video_dit import VideoDiT

    payload = pickle.dumps({"weights": RunsCode(tmp_path / "armed")})
    pickle.loads(payload)  # the payload is live: unpickled, it writes its marker
    assert (tmp_path / "armed").exists()
    marker = tmp_path / "ran"
    weights = checkpoint / "video_dit" / WEIGHTS_NAME
    weights.unlink()
    (weights.parent / name).write_bytes(pickle.dumps({"weights": RunsCode(marker)}))
    for load in (lambda: VideoDiT.from_pretrained(checkpoint / "video_dit"),
                 lambda: WorldActionPipeline.from_pretrained(checkpoint)):
        with pytest.raises(CheckpointError, match="only safetensors" if name.endswith(".bin") else
                           f"{WEIGHTS_NAME}: not a readable safetensors file"):
            load()
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "zero-byte"])
def test_truncated_or_empty_safetensors_is_an_error(checkpoint, damage):
    from reworld.models.action_dit import ActionDiT

    weights = checkpoint / "action_dit" / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(CheckpointError, match=rf"action_dit/{WEIGHTS_NAME}: not a readable safetensors file"):
        load_model_strict(ActionDiT, checkpoint / "action_dit")


def test_hostile_shard_index_is_refused(checkpoint, tmp_path):
    from reworld.models.action_dit import ActionDiT

    folder = checkpoint / "action_dit"
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / WEIGHTS_NAME, outside)
    index = folder / WEIGHTS_INDEX_NAME
    index.write_text(json.dumps({"weight_map": {"x": "../../outside.safetensors"}}))
    with pytest.raises(CheckpointError, match="is not a file name"):
        load_model_strict(ActionDiT, folder)
    index.write_text("{ not json")
    with pytest.raises(CheckpointError, match="not a safetensors index"):
        load_model_strict(ActionDiT, folder)


def test_wrong_keys_and_shapes_are_named(checkpoint):
    from reworld.models.video_dit import VideoDiT

    weights = checkpoint / "video_dit" / WEIGHTS_NAME
    state = load_file(str(weights))
    keys = sorted(state)
    renamed, reshaped = keys[0], keys[1]
    good = dict(state)
    state[renamed + "_old"] = state.pop(renamed)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as err:
        VideoDiT.from_pretrained(checkpoint / "video_dit")
    assert f"missing 1 key(s): {renamed}" in str(err.value) and f"unexpected 1 key(s): {renamed}_old" in str(err.value)
    good[reshaped] = torch.zeros(*good[reshaped].shape[:-1], good[reshaped].shape[-1] + 1)
    save_file(good, str(weights))
    with pytest.raises(CheckpointError, match=rf"wrong shape for 1 key\(s\): {reshaped}: checkpoint"):
        VideoDiT.from_pretrained(checkpoint / "video_dit")


def test_missing_checkpoint_directory_is_an_error(checkpoint, tiny_config_path, tmp_path):
    from reworld import WorldActionPipeline
    from reworld.models.video_dit import VideoDiT

    with pytest.raises(CheckpointError, match="not found"):
        WorldActionPipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no config.json"):
        VideoDiT.from_pretrained(tmp_path / "nope")
    shutil.rmtree(checkpoint / "video_dit")
    with pytest.raises(CheckpointError, match="video_dit has no config.json"):
        WorldActionPipeline.from_pretrained(checkpoint)
    # a training run pointed at a missing VAE stops with one line and writes nothing
    out = tmp_path / "run"
    res = _cli("train", "--stage", "video", "--config", str(tiny_config_path), "--out", str(out),
               "--vae", str(tmp_path / "no-vae"), "--max-steps", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: checkpoint folder not found: {tmp_path / 'no-vae'}"]
    assert not (out / "checkpoints").exists() and not (out / "video_dit").exists()


# ---------------------------------------------------------------------------------------------- data roots
@pytest.fixture()
def world(tiny_world, tmp_path):
    """A private copy of the tiny world, nested one level down: tmp/outer/world."""
    return Path(shutil.copytree(tiny_world, tmp_path / "outer" / "world"))


def _clips(tiny_config, root: Path, **kw) -> NuScenesClips:
    return NuScenesClips(replace(tiny_config, data={"dataroot": str(root)}).data, **kw)


def test_nested_roots_are_named(tiny_config, world):
    with pytest.raises(DatasetError, match=f"one level off: found {world / VERSION}; pass --dataroot {world}"):
        _clips(tiny_config, world.parent)
    with pytest.raises(DatasetError, match=f"table folder itself; pass its parent {world}"):
        _clips(tiny_config, world / VERSION)
    assert len(_clips(tiny_config, world, split="all", geometry=False)) > 0  # the right level loads


def test_partial_root_names_the_missing_table(tiny_config, world):
    (world / VERSION / "sample_data.json").unlink()
    with pytest.raises(DatasetError, match=r"missing table\(s\) sample_data.json"):
        _clips(tiny_config, world)


def test_truncated_table_is_named(tiny_config, world):
    table = world / VERSION / "sample.json"
    table.write_text(table.read_text()[:1000])  # an interrupted download
    with pytest.raises(DatasetError, match="sample.json"):
        _clips(tiny_config, world)


def _first_frame(tiny_config, world) -> Path:
    """The t=0 camera image of the first training clip (a key frame every loader path reads)."""
    ds = _clips(tiny_config, world, split="train", geometry=False)
    sample = ds.nusc.get("sample", ds.samples[0].sample_token)
    return world / ds.nusc.get("sample_data", sample["data"][tiny_config.data.camera])["filename"]


@pytest.mark.parametrize("damage", ["truncated", "zero-byte", "not-a-jpeg"])
def test_corrupt_jpeg_is_named(tiny_config, world, damage):
    image = _first_frame(tiny_config, world)
    data = image.read_bytes()
    image.write_bytes({"truncated": data[: len(data) // 3], "zero-byte": b"",
                       "not-a-jpeg": os.urandom(len(data))}[damage])
    with pytest.raises(DatasetError, match=f"corrupt image .*{image.name}"):
        _clips(tiny_config, world, split="train", geometry=False)[0]


def test_corrupt_jpeg_stops_training_with_one_line(tiny_config, tiny_config_path, world, tmp_path):
    image = _first_frame(tiny_config, world)
    image.write_bytes(image.read_bytes()[:300])
    out = tmp_path / "run"
    res = _cli("train", "--stage", "vae", "--config", str(tiny_config_path), "--dataroot", str(world), "--out",
               str(out), "--max-steps", "1", timeout=120)  # a hang fails here
    assert res.returncode == 2 and "Traceback" not in res.stderr
    # the VAE stage decodes its frames a batch at a time, so the bad file stops the run when it is first read
    # (here: at the latest when the export fits the latent statistics); besides tqdm's progress, one line names it
    lines = [x for x in res.stderr.strip().splitlines() if x.strip() and not x.startswith("vae:")]
    assert len(lines) == 1 and lines[0].startswith("error: corrupt image") and str(image) in lines[0], lines
    assert not (out / "vae").exists()
