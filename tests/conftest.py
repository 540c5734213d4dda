"""Shared fixtures: a tiny synthetic world (made once per test session) and the tiny config."""
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))  # nuscenes_fixture

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """4 short synthetic scenes in nuScenes format (a few seconds to make)."""
    from reworld.data.synth import generate_world

    root = tmp_path_factory.mktemp("synth-tiny")
    generate_world(root, num_scenes=4, seed=0, version="v1.0-synth", image_size=(64, 128), scene_seconds=10.0)
    return root


@pytest.fixture(scope="session")
def tiny_config(tiny_world):
    from reworld.config import load_config, replace

    return replace(load_config(TINY_CONFIG), data={"dataroot": str(tiny_world), "version": "v1.0-synth"})


@pytest.fixture(scope="session")
def tiny_config_path(tiny_world, tmp_path_factory):
    """configs/tiny.yaml with the data pointed at the session's tiny world."""
    import yaml

    doc = yaml.safe_load(TINY_CONFIG.read_text())
    doc["data"]["dataroot"] = str(tiny_world)
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_config_path, tmp_path_factory):
    """A run folder after 2-step runs of every stage (vae, video, action, joint)."""
    from reworld.training import run_stage

    out = tmp_path_factory.mktemp("run")
    results = {}
    for stage in ("vae", "video", "action", "joint"):
        results[stage] = run_stage(stage, str(tiny_config_path), str(out), max_steps=2)
    return out, results


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory):
    """The default world (24 scenes, seed 0, this generator), from data/synth when present, else made here (~1 min)."""
    return _world(tmp_path_factory, "synth", num_scenes=24, seed=0)


@pytest.fixture(scope="session")
def judge_val_world(tmp_path_factory):
    """The video judge's validation world: 12 held-out scenes (seed 2), from data/synth-judgeval when present, else
    made here (~30 s): `reworld synth --out data/synth-judgeval --scenes 12 --seed 2`."""
    return _world(tmp_path_factory, "synth-judgeval", num_scenes=12, seed=2)


def _world(tmp_path_factory, name: str, num_scenes: int, seed: int) -> Path:
    from reworld.data.synth import GENERATOR_VERSION, generate_world

    local = REPO / "data" / name
    meta = local / "synth_meta.json"
    if meta.is_file():
        doc = json.loads(meta.read_text())
        if doc.get("num_scenes") == num_scenes and doc.get("seed") == seed \
                and list(doc.get("image_size", [])) == [128, 256] and doc.get("generator") == GENERATOR_VERSION:
            return local
    root = tmp_path_factory.mktemp(name)
    generate_world(root, num_scenes=num_scenes, seed=seed)
    return root


@pytest.fixture(scope="session")
def tiny_judge(tiny_config, tmp_path_factory):
    """A video judge folder that reads the tiny world's clips (3 training steps: real classes, not a good judge)."""
    from reworld.evaluation.judge import load_judge_set
    from reworld.training.judge import JudgeTrainConfig, train_judge

    data = load_judge_set(tiny_config.data, "all", limit=8)
    tiny = JudgeTrainConfig(batch_size=4, widths=(8, 16), frame_stages=1, correlation_radius=1,
                            correlation_channels=8, token_dim=32, num_layers=1, feature_dim=16)
    judge, _ = train_judge(data, 3, train=tiny, frame_rate=tiny_config.data.frame_rate)
    path = tmp_path_factory.mktemp("judge") / "judge"
    judge.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_sweep(tiny_run, tiny_config, tiny_judge, tmp_path_factory):
    """`python -m analysis guidance-sweep` of the tiny run (w = 0, 1, 2; 6 clips × 2 samples, 2 steps): the folder
    with guidance_sweep_tiny.json and .png."""
    from analysis.cli import main

    out = tmp_path_factory.mktemp("sweep")
    argv = ["guidance-sweep", "--checkpoint", str(tiny_run[0]), "--judge", str(tiny_judge), "--w", "2", "0", "1",
            "--split", "all", "--every", "2", "--limit", "6", "--samples", "2", "--steps", "2", "--name", "tiny",
            "--dataroot", str(tiny_config.data.dataroot), "--out", str(out)]
    assert main(argv) == 0
    return out
