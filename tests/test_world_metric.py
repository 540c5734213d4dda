"""World and metric agree: the synthetic ego drives safely and our scorer sees it; hard negatives exist."""
import numpy as np
import pytest

from reworld.config import DataConfig
from reworld.data.loader import NuScenesClips
from reworld.planning.hard_negatives import generate_hard_negatives
from reworld.planning.pdm import score_trajectories, score_trajectory
from reworld.planning.scene import PlanningScene


@pytest.fixture(scope="module")
def world20(tmp_path_factory):
    from reworld.data.synth import generate_world

    root = tmp_path_factory.mktemp("synth20")
    generate_world(root, num_scenes=20, seed=3, image_size=(32, 64), scene_seconds=9.0)
    return root


@pytest.fixture(scope="module")
def clips(world20):
    ds = NuScenesClips(DataConfig(dataroot=str(world20), version="v1.0-synth", image_height=32, image_width=64))
    assert len({ds.samples[i].scene_name for i in range(len(ds))}) == 20
    return [ds[i] for i in range(0, len(ds), 3)]  # every third key frame: all 20 scenes, a third of the scoring


def test_logged_future_scores_high(clips):
    scores = [score_trajectory(PlanningScene.from_clip(c), c.target.trajectory.numpy()) for c in clips]
    assert np.mean([s.pdms for s in scores]) >= 0.95
    assert all(s.nc == 1.0 and s.dac == 1.0 for s in scores)  # never a collision, never off the road


def test_hard_negatives_on_synthetic_scenes(clips):
    found = []
    for i, clip in enumerate(clips):
        scene = PlanningScene.from_clip(clip)
        expert = clip.target.trajectory.numpy()
        hn = generate_hard_negatives(scene, expert, k=8, seed=i)
        found.append(len(hn.trajectories))
        # the labels read NC, DAC and TTC only: one batch, no EP reference (PDM-Closed) to recompute per trajectory
        scored = score_trajectories(scene, hn.trajectories, reference=1.0) if len(hn.trajectories) else []
        for r, label in zip(scored, hn.labels):
            assert {"collision": r.nc == 0.0, "off_road": r.dac == 0.0, "ttc": r.ttc == 0.0}[label]
        if len(hn.trajectories):
            assert np.mean(np.linalg.norm(hn.trajectories[..., :2] - expert[None, :, :2], axis=-1)) < 5.0
    assert np.mean(np.array(found) >= 4) >= 0.9
