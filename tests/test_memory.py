"""Host memory of training does not grow with the number of clips: frames, latents, features and negatives live
in per-clip files, read a batch at a time."""
import json
import subprocess
import sys

import pytest
import yaml

from reworld.data.clips import load_clip_tensors
from reworld.data.synth import generate_world

pytestmark = pytest.mark.slow

# runs one stage in this process and prints its peak resident set size (ru_maxrss, KiB on Linux) last
CHILD = """
import json, resource, sys
from reworld.training import run_stage
run_stage(sys.argv[1], sys.argv[2], sys.argv[3], max_steps=3)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _peak_mb(stage: str, config, out) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, stage, str(config), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _prepare_latents(config_path, out):
    """The train split's latent files, as stage video's first run writes them."""
    import torch

    from reworld.pipelines.run_folder import vae_folder
    from reworld.training.prepare import prepare_latents
    from reworld.training.stages import run_config
    from reworld.training.stages.common import load_run_vae

    config = run_config(str(config_path), out, "video")
    vae = load_run_vae(out, config, "video").requires_grad_(False)
    tokens = load_clip_tensors(config.data, "train", frames=False).tokens
    return prepare_latents(config, out, vae, vae_folder(out, config), "train", tokens, torch.device("cpu"))


def test_peak_host_memory_is_the_same_on_a_3_and_a_12_scene_world(tiny_run, tiny_config_path, tmp_path):
    import shutil

    from reworld.config import load_config

    src, _ = tiny_run
    peaks, clips, frame_bytes = {}, {}, {}
    for n in (3, 12):
        world = tmp_path / f"world{n}"
        generate_world(world, num_scenes=n, seed=1, image_size=(64, 128), scene_seconds=20.0)
        doc = yaml.safe_load(tiny_config_path.read_text())
        doc["data"].update(dataroot=str(world), image_height=64, image_width=128)  # the world's own frames
        doc["train"].update(val_clips=2, val_every=1000, ckpt_every=1000, log_every=1000)
        cfg = tmp_path / f"w{n}.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        out = tmp_path / f"run{n}"
        shutil.copytree(src / "vae", out / "vae")
        d = load_config(cfg).data
        clips[n] = len(load_clip_tensors(d, "train", frames=False).tokens)
        frame_bytes[n] = clips[n] * (d.context_frames + d.future_frames) * 3 * d.image_height * d.image_width * 4
        folder = _prepare_latents(cfg, out)  # here, as the stage's first run would (streamed, a batch at a time)
        written = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
        peaks[n] = _peak_mb("video", cfg, out)  # a run as it trains from the prepared files …
        assert written and {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == written  # … and only reads
    grown = peaks[12] - peaks[3]  # what grows: the devkit's tables (~75 KB a clip here) and per-clip metadata
    would_grow = (frame_bytes[12] - frame_bytes[3]) / 2**20  # what holding the train split's frames would add
    print(f"clips {clips}, peak RSS {peaks} MB, the frames in RAM would add {would_grow:.0f} MB")
    assert clips[12] >= 3 * clips[3]
    assert would_grow > 150  # the test can see the difference it guards against …
    assert grown < 0.25 * would_grow and grown < 0.1 * peaks[3]  # … and it is not there (within 10 %)


def test_vae_stage_frames_are_decoded_per_batch_and_equal_the_in_memory_ones(tiny_config):
    """`ClipFrames` (the VAE stage's source) gives bit for bit what the in-memory uint8 frames give."""
    import torch

    from reworld.data.clips import ClipFrames

    frames = ClipFrames(tiny_config.data, "train")
    held = load_clip_tensors(tiny_config.data, "train", limit=5)
    assert len(frames) >= 5
    assert torch.equal(frames.video([3, 0, 4]), held.video([3, 0, 4]))
    assert torch.equal(frames.video(slice(1, 3)), held.video(slice(1, 3)))
