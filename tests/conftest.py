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
