"""The synthetic world: loads in the nuScenes devkit, agrees with its map, renders a road, is deterministic."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.ops import unary_union

from reworld.data.synth import generate_world, plan_scenes
from reworld.data.synth.geometry import box_corners, boxes_overlap

nuscenes = pytest.importorskip("nuscenes")
from nuscenes.map_expansion.map_api import NuScenesMap  # noqa: E402
from nuscenes.nuscenes import NuScenes  # noqa: E402

VERSION = "v1.0-synth"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    calls = []
    summary = generate_world(root, num_scenes=2, seed=3, version=VERSION, scene_seconds=6.0,
                             progress=lambda done, total: calls.append((done, total)))
    nusc = NuScenes(VERSION, str(root), verbose=False)
    nmap = NuScenesMap(str(root), "boston-seaport")
    return root, summary, calls, nusc, nmap


def _ego_poses(nusc, scene):
    """All ego poses of a scene, in camera-frame order: (N, 3) [x, y, yaw]."""
    sample = nusc.get("sample", scene["first_sample_token"])
    sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    out = []
    while True:
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        w, _, _, z = pose["rotation"]
        out.append([pose["translation"][0], pose["translation"][1], 2 * np.arctan2(z, w)])
        if not sd["next"]:
            return np.array(out)
        sd = nusc.get("sample_data", sd["next"])


def test_summary_and_meta(world):
    root, summary, calls, _, _ = world
    assert summary["scenes"] == 2 and summary["samples"] == 2 * 13 and summary["sweeps"] == 2 * 12 * 5
    assert calls == [(1, 2), (2, 2)]
    meta = json.loads((root / "synth_meta.json").read_text())
    assert meta["seed"] == 3 and [s["command"] for s in meta["scenes"]] == ["left", "right"]


def test_all_commands_in_a_default_world():
    assert {c for _, c in plan_scenes(24)} == {"left", "straight", "right"}
    assert {k for k, _ in plan_scenes(24)} == {"junction4", "junction3", "straight", "curve"}


def test_tables_load_and_chains_are_consistent(world):
    _, _, _, nusc, _ = world
    assert len(nusc.scene) == 2 and len(nusc.sample) == 26
    for scene in nusc.scene:
        sample = nusc.get("sample", scene["first_sample_token"])
        sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        n_key, n_sweep = 1, 0
        while sd["next"]:
            nxt = nusc.get("sample_data", sd["next"])
            assert nxt["prev"] == sd["token"] and nxt["timestamp"] > sd["timestamp"]
            assert nusc.get("ego_pose", nxt["ego_pose_token"])["timestamp"] == nxt["timestamp"]
            owner = nusc.get("sample", nxt["sample_token"])
            if nxt["is_key_frame"]:
                n_key += 1
                assert owner["data"]["CAM_FRONT"] == nxt["token"] and nxt["filename"].startswith("samples/")
            else:
                n_sweep += 1  # a sweep belongs to the next key frame
                assert owner["timestamp"] > nxt["timestamp"] and nxt["filename"].startswith("sweeps/")
                assert owner["timestamp"] - nxt["timestamp"] < 500_000
            sd = nxt
        assert n_key == scene["nbr_samples"] == 13 and n_sweep == 60
        assert sd["sample_token"] == scene["last_sample_token"]


def test_instances_are_tracked(world):
    _, _, _, nusc, _ = world
    assert len(nusc.instance) > 5
    names = {nusc.get("category", i["category_token"])["name"] for i in nusc.instance}
    assert "vehicle.car" in names
    for inst in nusc.instance:
        ann = nusc.get("sample_annotation", inst["first_annotation_token"])
        count = 1
        while ann["next"]:
            nxt = nusc.get("sample_annotation", ann["next"])
            assert nxt["prev"] == ann["token"] and nxt["instance_token"] == inst["token"]
            assert nusc.get("sample", ann["sample_token"])["next"] == nxt["sample_token"]
            ann, count = nxt, count + 1
        assert ann["token"] == inst["last_annotation_token"] and count == inst["nbr_annotations"]
        assert ann["num_lidar_pts"] > 0 and len(ann["attribute_tokens"]) == 1


def test_ego_stays_on_drivable_area_and_clear_of_agents(world):
    _, _, _, nusc, nmap = world
    for scene in nusc.scene:
        poses = _ego_poses(nusc, scene)
        lo, hi = poses[:, :2].min(0) - 20, poses[:, :2].max(0) + 20
        recs = nmap.get_records_in_patch((*lo, *hi), layer_names=["drivable_area"])["drivable_area"]
        area = unary_union([nmap.extract_polygon(t) for r in recs
                            for t in nmap.get("drivable_area", r)["polygon_tokens"]])
        corners = box_corners(poses[:, 0], poses[:, 1], poses[:, 2], 4.5, 1.9).reshape(-1, 2)
        assert shapely.contains_xy(area, corners[:, 0], corners[:, 1]).all()
        speeds = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1) * 12.0
        assert speeds.max() < 14.0 and np.abs(np.diff(speeds)).max() * 12.0 < 4.0  # [m/s], [m/s²]
    for sample in nusc.sample:
        pose = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["CAM_FRONT"])["ego_pose_token"])
        w, _, _, z = pose["rotation"]
        ego = box_corners(pose["translation"][0], pose["translation"][1], 2 * np.arctan2(z, w), 4.5, 1.9)
        for tok in sample["anns"]:
            a = nusc.get("sample_annotation", tok)
            yaw = 2 * np.arctan2(a["rotation"][3], a["rotation"][0])
            other = box_corners(a["translation"][0], a["translation"][1], yaw, a["size"][1], a["size"][0])
            assert not boxes_overlap(ego, other)


def test_map_lanes_follow_the_ego(world):
    _, _, _, nusc, nmap = world
    for scene in nusc.scene:
        poses = _ego_poses(nusc, scene)[::6]  # key frames
        lanes = []
        for x, y, _ in poses:
            lane = nmap.get_closest_lane(x, y, radius=5)
            assert lane, "no lane under the ego"
            lanes.append(lane)
        centre = np.concatenate([np.array(v)[:, :2] for v in nmap.discretize_lanes(sorted(set(lanes)), 0.5).values()])
        gaps = np.linalg.norm(poses[:, None, :2] - centre[None], axis=-1).min(axis=1)
        assert gaps.max() < 0.3
        for lane in lanes:  # connectivity links the route
            assert lane in nmap.connectivity


def test_frames_show_sky_and_road(world):
    root, _, _, nusc, _ = world
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    img = np.asarray(Image.open(root / nusc.get("sample_data", sample["data"]["CAM_FRONT"])["filename"]), float)
    assert img.shape == (128, 256, 3) and img.std() > 25
    sky = img[:8].reshape(-1, 3).mean(0)
    road = img[110:126, 112:144].reshape(-1, 3).mean(0)
    assert sky[2] > sky[0] and sky.mean() > 120  # bluish, bright
    assert np.ptp(road) < 25 and 50 < road.mean() < 160  # grey asphalt below the camera
    assert abs(sky.mean() - road.mean()) > 30


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_per_seed(tmp_path):
    kwargs = dict(num_scenes=1, version=VERSION, scene_seconds=1.0, image_size=(64, 128))
    generate_world(tmp_path / "a", seed=5, **kwargs)
    generate_world(tmp_path / "b", seed=5, **kwargs)
    generate_world(tmp_path / "c", seed=6, **kwargs)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a[f"{VERSION}/ego_pose.json"] != c[f"{VERSION}/ego_pose.json"]


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_world(tmp_path, num_scenes=0)
    with pytest.raises(ValueError):
        generate_world(tmp_path, num_scenes=1, image_size=(8, 8))


def test_junctions_are_marked_as_intersections(tiny_world):
    """The synthetic map marks each junction square as nuScenes does (a road segment flagged is_intersection),
    inside the drivable area, so NAVSIM's intersection clause sees our junctions."""
    import shapely

    from reworld.config import DataConfig
    from reworld.data.loader import NuScenesClips

    ds = NuScenesClips(DataConfig(dataroot=str(tiny_world), version="v1.0-synth", image_height=32, image_width=64,
                                  map_lanes=True), split="all", frames=False)
    found = 0
    for i in range(len(ds)):
        clip = ds[i]
        for ring in clip.target.intersections:
            found += 1
            drivable = shapely.union_all([shapely.Polygon(p) for p in clip.target.drivable_area])
            assert shapely.Polygon(ring).difference(drivable).area < 1e-6
        assert clip.target.lanes
    assert found > 0
