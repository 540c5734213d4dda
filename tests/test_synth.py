"""The synthetic world: loads in the nuScenes devkit, agrees with its map, renders a road, is deterministic."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from PIL import Image
from shapely.ops import unary_union

from reworld.data.synth import generate_world, plan_scenes
from reworld.data.synth.geometry import box_corners, boxes_overlap

nuscenes = pytest.importorskip("nuscenes")
from nuscenes.map_expansion.map_api import NuScenesMap  # noqa: E402
from nuscenes.eval.common.utils import quaternion_yaw  # noqa: E402
from nuscenes.nuscenes import NuScenes  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

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


def _ego_poses(nusc, scene, channel="CAM_FRONT", keys_only=False):
    """The ego poses of one sensor's chain in a scene: (N, 4) [t (s), x, y, yaw (the devkit's quaternion_yaw)]."""
    sample = nusc.get("sample", scene["first_sample_token"])
    sd = nusc.get("sample_data", sample["data"][channel])
    out = []
    while True:
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        if sd["is_key_frame"] or not keys_only:
            out.append([pose["timestamp"] * 1e-6, *pose["translation"][:2], quaternion_yaw(Quaternion(pose["rotation"]))])
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
        t, poses = _ego_poses(nusc, scene)[:, 0], _ego_poses(nusc, scene)[:, 1:]
        lo, hi = poses[:, :2].min(0) - 20, poses[:, :2].max(0) + 20
        recs = nmap.get_records_in_patch((*lo, *hi), layer_names=["drivable_area"])["drivable_area"]
        area = unary_union([nmap.extract_polygon(t) for r in recs
                            for t in nmap.get("drivable_area", r)["polygon_tokens"]])
        corners = box_corners(poses[:, 0], poses[:, 1], poses[:, 2], 4.5, 1.9).reshape(-1, 2)
        assert shapely.contains_xy(area, corners[:, 0], corners[:, 1]).all()
        speeds = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1) / np.diff(t)
        mid = (t[1:] + t[:-1]) / 2
        assert speeds.max() < 14.0 and np.abs(np.diff(speeds) / np.diff(mid)).max() < 4.0  # [m/s], [m/s²]
    for sample in nusc.sample:
        key = sample["data"].get("LIDAR_TOP", sample["data"]["CAM_FRONT"])  # the annotations' time
        pose = nusc.get("ego_pose", nusc.get("sample_data", key)["ego_pose_token"])
        assert pose["timestamp"] == sample["timestamp"]
        ego = box_corners(pose["translation"][0], pose["translation"][1], quaternion_yaw(Quaternion(pose["rotation"])),
                          4.5, 1.9)
        for tok in sample["anns"]:
            a = nusc.get("sample_annotation", tok)
            yaw = 2 * np.arctan2(a["rotation"][3], a["rotation"][0])
            other = box_corners(a["translation"][0], a["translation"][1], yaw, a["size"][1], a["size"][0])
            assert not boxes_overlap(ego, other)


def test_map_lanes_follow_the_ego(world):
    _, _, _, nusc, nmap = world
    for scene in nusc.scene:
        poses = _ego_poses(nusc, scene, keys_only=True)[:, 1:]
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


def test_deterministic_per_seed_with_any_number_of_workers(tmp_path):
    kwargs = dict(version=VERSION, scene_seconds=1.0, image_size=(64, 128))
    generate_world(tmp_path / "a", num_scenes=3, seed=5, workers=1, **kwargs)
    seen = []
    generate_world(tmp_path / "b", num_scenes=3, seed=5, workers=2, progress=lambda d, t: seen.append((d, t)), **kwargs)
    generate_world(tmp_path / "c", num_scenes=1, seed=6, **kwargs)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b  # scenes rendered in two worker processes: the same bytes as in one
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert a[f"{VERSION}/ego_pose.json"] != c[f"{VERSION}/ego_pose.json"]


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_world(tmp_path, num_scenes=0)
    with pytest.raises(ValueError):
        generate_world(tmp_path, num_scenes=1, image_size=(8, 8))
    with pytest.raises(ValueError, match="workers"):
        generate_world(tmp_path, num_scenes=1, workers=0)


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


def test_the_world_has_nuscenes_timing(world):
    """synth-1.1 writes real nuScenes' timing: LIDAR_TOP sweeps 50 ms apart time the samples, which are 450–550 ms
    apart; each CAM_FRONT key frame is 35 ms before its sample, with camera steps of 50 and 100 ms between; each
    record has its own ego pose (the two chains' poses interleave); the body pitches and rolls; two scenes share a
    log. The loader reads it: every clip's t = 0 frame is its sample's camera key frame and its poses the LIDAR's."""
    root, _, _, nusc, _ = world
    assert len(nusc.log) == 1 and len({s["log_token"] for s in nusc.scene}) == 1
    for scene in nusc.scene:
        lidar, cam = _ego_poses(nusc, scene, "LIDAR_TOP"), _ego_poses(nusc, scene)
        assert np.allclose(np.diff(lidar[:, 0]), 0.05)
        assert set(np.round(np.diff(cam[:, 0]) * 1000).astype(int)) == {50, 100}
        samples = [nusc.get("sample", s["token"]) for s in nusc.sample if s["scene_token"] == scene["token"]]
        stamps = np.sort([s["timestamp"] for s in samples])
        assert set(np.diff(stamps) // 1000) <= {450, 500, 550} and len(set(np.diff(stamps) // 1000)) > 1
        for s in samples:
            lid, cf = (nusc.get("sample_data", s["data"][c]) for c in ("LIDAR_TOP", "CAM_FRONT"))
            assert lid["timestamp"] == s["timestamp"] and s["timestamp"] - cf["timestamp"] == 35_000
        assert not np.isin(np.round(cam[:, 0], 6), np.round(lidar[:, 0], 6)).any()  # interleaved, never equal
    tilts = [Quaternion(p["rotation"]).rotate([1.0, 0.0, 0.0])[2] for p in nusc.ego_pose]
    assert 0.001 < np.max(np.abs(tilts)) < 0.02  # the body x axis leaves the ground plane: pitch
    from reworld.config import DataConfig
    from reworld.data.loader import NuScenesClips, load_image

    ds = NuScenesClips(DataConfig(dataroot=str(root), version=VERSION, image_height=32, image_width=64), split="all")
    clip = ds[2]
    sample = nusc.get("sample", clip.sample_token)
    key = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    assert clip.timestamp == sample["timestamp"]
    assert torch.equal(clip.observation.frames[-1], load_image(root / key["filename"], 32, 64))


def test_synth_1_0_is_the_uniform_world(tmp_path):
    """`generator="synth-1.0"` (the shipped checkpoints' world): the camera alone, every 1/12 s, no LIDAR, no pitch
    or roll, no islands."""
    generate_world(tmp_path, num_scenes=1, seed=5, version=VERSION, scene_seconds=2.0, image_size=(32, 64),
                   generator="synth-1.0")
    tables = {n: json.loads((tmp_path / VERSION / f"{n}.json").read_text()) for n in ("sample_data", "ego_pose",
                                                                                         "sensor")}
    assert [s["channel"] for s in tables["sensor"]] == ["CAM_FRONT"]
    stamps = sorted(r["timestamp"] for r in tables["sample_data"])
    assert np.allclose(np.diff(stamps), 1e6 / 12, atol=1)
    assert all(r["rotation"][1] == r["rotation"][2] == 0.0 for r in tables["ego_pose"])
    from reworld.data.synth import world_generator

    assert world_generator(tmp_path) == "synth-1.0" and world_generator(tmp_path / VERSION) is None
    with pytest.raises(ValueError, match="generator"):
        generate_world(tmp_path, num_scenes=1, generator="synth-2")


def test_straight_roads_have_a_median_island(tmp_path):
    """A straight road's drivable area has a hole (a kerbed island on the centre line) in the map, which the loader
    keeps and the ego passes by."""
    import shapely

    from reworld.config import DataConfig
    from reworld.data.loader import NuScenesClips

    generate_world(tmp_path, num_scenes=3, seed=5, version=VERSION, scene_seconds=10.0, image_size=(32, 64))
    meta = json.loads((tmp_path / "synth_meta.json").read_text())
    assert meta["scenes"][2]["layout"] == "straight" and meta["generator"] == "synth-1.1"
    ds = NuScenesClips(DataConfig(dataroot=str(tmp_path), version=VERSION, image_height=32, image_width=64),
                       split="all", frames=False)
    holes = [ring for i in range(len(ds)) if ds.samples[i].scene_name == "scene-0002"
             for rings in ds[i].target.drivable_holes for ring in rings]
    assert holes
    island = shapely.Polygon(holes[-1])
    assert 0.6 * 14 * 0.9 < island.area < 0.6 * 14 * 1.1
