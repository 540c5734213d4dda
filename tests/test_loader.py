"""The loader on a hand-made real-format nuScenes root (not built by our generator)."""
import subprocess
from pathlib import Path
import sys

import numpy as np
import torch
import pytest

import nuscenes_fixture as fx
from reworld.config import DataConfig
from reworld.data.loader import DatasetError, NuScenesClips, split_scenes
from reworld.data.types import COMMANDS


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fx.build(tmp_path_factory.mktemp("handmade"))


@pytest.fixture(scope="module")
def clips(root):
    return NuScenesClips(DataConfig(dataroot=str(root), version=fx.VERSION, image_height=32, image_width=64))


def test_clip_shapes_and_frames(clips):
    cfg = clips.cfg
    # 10 s scene, key frames at 2 Hz: key frames with 0.67 s of context and 4 s of future
    assert len(clips) == 11
    clip = clips[0]
    assert clip.observation.frames.shape == (cfg.context_frames, 3, 32, 64)
    assert clip.target.frames.shape == (cfg.future_frames, 3, 32, 64)
    assert -1.0 <= float(clip.observation.frames.min()) and float(clip.observation.frames.max()) <= 1.0
    # frames differ over time (the moving stripe), so the clip is not one frame repeated
    assert not np.allclose(clip.observation.frames[0], clip.observation.frames[-1])


def test_geometry_without_images_is_the_same_clip_minus_its_frames(root, clips, monkeypatch):
    import reworld.data.loader as L

    reads = []
    original = L.load_image
    monkeypatch.setattr(L, "load_image", lambda *a, **k: reads.append(a[0]) or original(*a, **k))
    bare = NuScenesClips(clips.cfg, frames=False)[4]
    assert reads == []  # no image is opened
    full = clips[4]
    assert bare.observation.frames.shape == (0, 3, 32, 64) and bare.target.frames.shape == (0, 3, 32, 64)
    assert torch.equal(bare.target.trajectory, full.target.trajectory)
    assert torch.equal(bare.observation.ego_status, full.observation.ego_status)
    assert [a.track.tolist() for a in bare.target.agents] == [a.track.tolist() for a in full.target.agents]


def test_expert_trajectory_matches_ego_poses(clips):
    for index in (0, 5):
        clip = clips[index]
        t0 = (clip.timestamp - fx.T0_US) / 1e6
        x0, y0, _ = fx.ego_state(t0)
        expected = np.array([[fx.ego_state(t0 + 0.5 * k)[0] - x0, 0.0, 0.0] for k in range(1, 9)])
        np.testing.assert_allclose(clip.target.trajectory.numpy(), expected, atol=1e-3)


def test_ego_status_and_command(clips):
    clip = clips[3]
    t0 = (clip.timestamp - fx.T0_US) / 1e6
    speed, acc, yaw_rate = clip.observation.ego_status.tolist()
    assert speed == pytest.approx(6.0 + 0.3 * t0, abs=0.1)  # from past poses only
    assert acc == pytest.approx(0.3, abs=0.05)
    assert yaw_rate == pytest.approx(0.0, abs=1e-6)
    assert COMMANDS[clip.observation.command] == "straight"


def test_agents_in_ego_frame(clips):
    clip = clips[0]
    t0 = (clip.timestamp - fx.T0_US) / 1e6
    ego_x = fx.ego_state(t0)[0]
    agents = {a.id: a for a in clip.target.agents}
    parked, lead = agents["inst-parked"], agents["inst-lead"]
    assert parked.track.shape == (1, 4)  # standing still: one row
    np.testing.assert_allclose(parked.track[0, 1:3], [160.0 - ego_x, 99.9 - fx.LANE_Y], atol=1e-6)
    assert abs(abs(parked.track[0, 3]) - np.pi) < 1e-6
    assert lead.track.shape == (11, 4)  # key frames over NAVSIM's 5 s observation of a 4 s plan
    np.testing.assert_allclose(lead.track[:, 0], np.arange(11) * 0.5, atol=1e-6)
    np.testing.assert_allclose(lead.track[:, 1], 120.0 + 7.0 * (t0 + lead.track[:, 0]) - ego_x, atol=1e-6)
    assert (parked.length, parked.width) == (4.6, 1.9)


def test_agents_enter_and_leave_as_navsims_observation_has_them(clips, tmp_path):
    """NAVSIM v1.1's observation of a 4 s plan: every car annotated at a key frame of [0, 5 s]; one that enters
    later is there from its first annotation, one that leaves only up to its last; where the scene ends before
    5 s, a car still annotated at its last key frame is held there to 5 s."""
    import math

    t0 = (clips[0].timestamp - fx.T0_US) / 1e6
    root = fx.build(tmp_path / "world", extra_agents={
        "inst-leaves": (lambda t: (110.0 + 8.0 * t, fx.LANE_Y - 3.5, 0.0), 0.0, t0 + 1.0),
        "inst-enters": (lambda t: (200.0 - 6.0 * t, 99.9, math.pi), t0 + 2.5, math.inf)})
    ds = NuScenesClips(DataConfig(dataroot=str(root), version=fx.VERSION, image_height=32, image_width=64))
    agents = {a.id: a for a in ds[0].target.agents}
    np.testing.assert_allclose(agents["inst-leaves"].track[:, 0], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(agents["inst-enters"].track[:, 0], np.arange(5, 11) * 0.5, atol=1e-6)
    # in the ego frame at t = 0, where it first shows
    assert agents["inst-enters"].track[0, 1] == pytest.approx(200.0 - 6.0 * (t0 + 2.5) - fx.ego_state(t0)[0])
    last = ds[len(ds) - 1]
    t_end = (last.timestamp - fx.T0_US) / 1e6
    lead = {a.id: a for a in last.target.agents}["inst-lead"]
    assert t_end + lead.track[-2, 0] == pytest.approx(10.0)  # the scene's last key frame, before this clip's 5 s
    assert lead.track[-1, 0] == pytest.approx(5.0) and lead.track[-2, 0] < 4.75
    np.testing.assert_array_equal(lead.track[-1, 1:], lead.track[-2, 1:])  # held where the data stops


def test_map_geometry(clips):
    from shapely.geometry import Point, Polygon

    clip = clips[2]
    polygons = [Polygon(p) for p in clip.target.drivable_area]
    assert any(p.contains(Point(0, 0)) for p in polygons)
    assert not any(p.contains(Point(0, 10)) for p in polygons)  # beyond the road edge
    line = clip.target.centerline
    assert len(line) > 10 and np.allclose(line[:, 1], 0.0, atol=1e-6)  # the lane the ego drives in
    assert line[0, 0] < 0 < line[-1, 0]


def test_split_by_scene_is_fixed():
    names = [f"scene-{i:04d}" for i in range(10)]
    a = split_scenes(names, 0.2, seed=0)
    assert split_scenes(list(reversed(names)), 0.2, seed=0) == a
    assert len(a["val"]) == 2 and not set(a["val"]) & set(a["train"])
    assert set(a["val"]) | set(a["train"]) == set(names)


# ------------------------------------------------------------------------------ bad input
def _cfg(root, version=fx.VERSION):
    return DataConfig(dataroot=str(root), version=version, image_height=32, image_width=64)


def test_root_one_level_off(root):
    with pytest.raises(DatasetError, match="one level off"):
        NuScenesClips(_cfg(root.parent))
    with pytest.raises(DatasetError, match="table folder itself"):
        NuScenesClips(_cfg(root / fx.VERSION))


def test_unknown_version(root):
    with pytest.raises(DatasetError, match=r"unknown version 'v1.0-trainval'.*v1.0-handmade"):
        NuScenesClips(_cfg(root, "v1.0-trainval"))


def test_missing_table_named(tmp_path):
    root = fx.build(tmp_path / "r", seconds=6)
    (root / fx.VERSION / "ego_pose.json").unlink()
    with pytest.raises(DatasetError, match="missing table.*ego_pose.json"):
        NuScenesClips(_cfg(root))


def test_missing_and_corrupt_images_named(tmp_path):
    root = fx.build(tmp_path / "r", seconds=6)
    ds = NuScenesClips(_cfg(root))
    sample = ds.nusc.get("sample", ds.samples[0].sample_token)
    first = root / ds.nusc.get("sample_data", sample["data"]["CAM_FRONT"])["filename"]  # t=0 frame of clip 0
    first.write_bytes(first.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DatasetError, match=f"corrupt image .*{first.name}"):
        ds[0]
    first.unlink()
    with pytest.raises(DatasetError, match=f"image not found: .*{first.name}"):
        ds[0]


def test_missing_map_named(tmp_path):
    root = fx.build(tmp_path / "r", seconds=6)
    (root / "maps" / "expansion" / f"{fx.LOCATION}.json").unlink()
    ds = NuScenesClips(_cfg(root))
    with pytest.raises(DatasetError, match="map expansion not found"):
        ds[0]
    assert NuScenesClips(_cfg(root), geometry=False)[0].target.trajectory.shape == (8, 3)


def test_cli_error_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "reworld", "export-scene", "--dataroot", str(tmp_path),
                          "--version", "v1.0-mini", "--sample", "x", "--out", str(tmp_path / "s.json")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: unknown version 'v1.0-mini'")
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_reduced_jpeg_decode_keeps_small_frames_and_approximates_large_ones(tmp_path, tiny_world):
    """Real-size frames (1600×900) are decoded at a reduced DCT scale: within a few grey levels of the full
    decode. Frames already near the target size (the synthetic world's) decode bit for bit as before."""
    import numpy as np
    from PIL import Image

    from reworld.data.loader import load_image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:900, 0:1600]
    img = np.stack([x / 1600 * 255, y / 900 * 255, (x + y) % 256], -1) + rng.normal(0, 20, (900, 1600, 3))
    big = tmp_path / "cam.jpg"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(big, quality=90)
    full, reduced = load_image(big, 64, 128, reduced_decode=False), load_image(big, 64, 128)
    assert reduced.shape == full.shape == (3, 64, 128)
    assert float((full - reduced).abs().max()) * 127.5 <= 6 and float((full - reduced).abs().mean()) * 127.5 < 1
    small = next(Path(tiny_world).rglob("*.jpg"))
    with Image.open(small) as im:
        h, w = im.size[1] // 2, im.size[0] // 2
    assert torch.equal(load_image(small, h, w), load_image(small, h, w, reduced_decode=False))


def test_a_wide_camera_is_cropped_not_squashed(tmp_path):
    """nuScenes' 16:9 frames read at 2:1 (configs/paper.yaml): with `image_fit: crop` (the default) a square stays
    square and a point the camera projects lands where `frame_intrinsic` says; `stretch` squashes it. A 2:1 image
    reads the same either way (the synthetic world: nothing changes there)."""
    from PIL import Image

    from reworld.data.loader import CameraView, fit_box, frame_intrinsic, load_image

    assert fit_box(1600, 900, 512, 256) == (0.0, 50.0, 1600.0, 850.0)  # 50 rows off the top and the bottom
    assert fit_box(1600, 900, 512, 256, "stretch") == (0.0, 0.0, 1600.0, 900.0)
    assert fit_box(256, 128, 128, 64) == (0.0, 0.0, 256.0, 128.0)
    assert fit_box(400, 400, 128, 64) == (0.0, 100.0, 400.0, 300.0)
    assert fit_box(900, 300, 128, 64) == (150.0, 0.0, 750.0, 300.0)  # wider than 2:1: columns go
    with pytest.raises(ValueError, match="image_fit"):
        fit_box(1600, 900, 512, 256, "pad")

    # a 320×180 camera (f = 160 px), a white 8×8 square centred where it projects the point (X, Y, Z) = (1, −1, 4) m
    k = [[160.0, 0.0, 159.5], [0.0, 160.0, 89.5], [0.0, 0.0, 1.0]]
    u0, v0 = 160 * 1 / 4 + 159.5, 160 * -1 / 4 + 89.5  # (199.5, 49.5): the square covers pixels 196–203, 46–53
    img = np.zeros((180, 320, 3), np.uint8)
    r, c = int(v0 - 0.5), int(u0 - 0.5)
    img[r - 3:r + 5, c - 3:c + 5] = 255
    path = tmp_path / "cam.png"
    Image.fromarray(img).save(path)
    camera = {"camera_intrinsic": k, "size": [320, 180]}
    for fit in ("crop", "stretch"):
        frame = (load_image(path, 64, 128, fit=fit).mean(0) + 1) / 2  # (64, 128) in [0, 1]
        box = fit_box(320, 180, 128, 64, fit)
        kf = frame_intrinsic({**camera, "box": list(box)}, (64, 128))
        ys, xs = np.mgrid[0:64, 0:128]
        w = frame.numpy()
        centre = ((w * xs).sum() / w.sum(), (w * ys).sum() / w.sum())
        expected = (kf[0, 0] * 1 / 4 + kf[0, 2], kf[1, 1] * -1 / 4 + kf[1, 2])
        assert centre == pytest.approx(expected, abs=0.1), fit
        cols, rows = (w > 0.25).any(0).sum(), (w > 0.25).any(1).sum()
        if fit == "crop":
            assert box == (0.0, 10.0, 320.0, 170.0) and cols == rows  # 8 px × 0.4 both ways: still a square
        else:
            assert cols > rows  # 0.4 across, 0.36 down: squashed
    # a 2:1 image: crop and stretch read the same pixels
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 256, 3), dtype=np.uint8)).save(tmp_path / "w.png")
    assert torch.equal(load_image(tmp_path / "w.png", 64, 128), load_image(tmp_path / "w.png", 64, 128, fit="stretch"))

    # the lead-vehicle rule sees only the columns the frames show: a camera at the origin looking along x
    cs = {"translation": [0.0, 0.0, 1.5], "rotation": [0.5, -0.5, 0.5, -0.5], "camera_intrinsic": k}
    left_of_centre = np.array([[10.0, 7.0]])  # projects at u = 159.5 − 160 · 0.7 = 47.5
    assert CameraView.of(cs, 320).sees(left_of_centre)[0]
    assert not CameraView.of(cs, 320, fit_box(320, 180, 64, 64)).sees(left_of_centre)[0]  # square: u 70–250


def test_drivable_area_keeps_the_maps_holes(clips):
    """The map's traffic island reaches the clip, the scorer's scene and scene.json: not drivable."""
    import json

    import shapely

    from reworld.planning.scene import PlanningScene

    clip = clips[2]
    rings = [r for rs in clip.target.drivable_holes for r in rs]
    assert len(rings) == 1 and len(clip.target.drivable_holes) == len(clip.target.drivable_area)
    scene = PlanningScene.from_clip(clip)
    centre = rings[0].mean(axis=0)  # the island's middle, in the ego frame
    assert not shapely.intersects_xy(scene.drivable_geometry, *centre)
    assert shapely.intersects_xy(scene.drivable_geometry, centre[0], 0.0)  # the ego's lane beside it
    again = PlanningScene.from_json_dict(json.loads(json.dumps(scene.to_json_dict())))
    assert not shapely.intersects_xy(again.drivable_geometry, *centre)


def test_heading_is_the_devkits_quaternion_yaw_with_pitch_and_roll():
    """One convention for ego and agents: the heading of the body x axis in the ground plane (the devkit's
    `quaternion_yaw`), also for quaternions with pitch and roll."""
    import numpy as np
    from nuscenes.eval.common.utils import quaternion_yaw
    from pyquaternion import Quaternion

    from reworld.data.loader import yaw_of

    rng = np.random.default_rng(0)
    for _ in range(50):
        yaw, pitch, roll = rng.uniform(-np.pi, np.pi), rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)
        q = (Quaternion(axis=[0, 0, 1], angle=yaw) * Quaternion(axis=[0, 1, 0], angle=pitch)
             * Quaternion(axis=[1, 0, 0], angle=roll))
        assert abs(np.angle(np.exp(1j * (yaw_of(q.elements.tolist()) - quaternion_yaw(q))))) < 1e-9
        assert abs(np.angle(np.exp(1j * (yaw_of(q.elements.tolist()) - yaw)))) < 1e-9


def test_future_poses_at_the_next_key_frames(root, clips):
    """`data.future_poses: keyframes` takes the ground truth at the next 8 key frames (the nuScenes planning
    convention); on this root the key frames are exactly 0.5 s apart, so it equals the uniform grid, and only
    clips with 8 key frames ahead remain."""
    kf = NuScenesClips(DataConfig(dataroot=str(root), version=fx.VERSION, image_height=32, image_width=64,
                                  future_poses="keyframes"), geometry=False, frames=False)
    assert 0 < len(kf) <= len(clips)
    uniform = {c.sample_token: c for c in (clips[i] for i in range(len(clips)))}
    for i in range(len(kf)):
        clip = kf[i]
        np.testing.assert_allclose(clip.target.trajectory.numpy(), uniform[clip.sample_token].target.trajectory.numpy(),
                                   atol=1e-4)
    with pytest.raises(ValueError, match="future_poses"):
        NuScenesClips(DataConfig(dataroot=str(root), version=fx.VERSION, future_poses="sweeps"))


def test_clips_carry_the_lanes_and_intersections_navsims_rules_read(clips):
    """The map's lane polygons (here one, under the ego) reach the clip and the scorer's scene; this root has no
    intersection (no road segment flagged `is_intersection`)."""
    import shapely

    from reworld.planning.scene import PlanningScene

    without = NuScenesClips(DataConfig(dataroot=clips.cfg.dataroot, version=fx.VERSION, image_height=32,
                                       image_width=64, map_lanes=False), frames=False)
    assert without[2].target.lanes == []  # data.map_lanes: false skips reading them
    clip = clips[2]  # on by default
    assert len(clip.target.lanes) == 1 and clip.target.intersections == []
    scene = PlanningScene.from_clip(clip)
    assert shapely.Polygon(scene.lanes[0]).contains(shapely.Point(0.0, 0.0))  # the ego stands in it


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    root = fx.build_quirky(tmp_path_factory.mktemp("quirky"))
    return root, NuScenesClips(DataConfig(dataroot=str(root), version=fx.QUIRKY_VERSION, image_height=32,
                                          image_width=64), split="all")


def test_real_timing_quirks(quirky):
    """On a root with nuScenes' timing (samples timed by 20 Hz LIDAR sweeps 450–550 ms apart, CAM_FRONT 35 ms
    earlier with 50/83/100 ms steps, poses of both sensors interleaved, pitch and roll, two scenes in one log):
    every future pose is the true one, the last clip of a scene too (its 4 s pose comes from the LIDAR poses, not
    from a pose held past the end of the camera chain), and the t = 0 frame is the sample's key frame."""
    from reworld.data.loader import load_image

    root, ds = quirky
    assert {r.scene_name for r in ds.samples} == {"quirky-0000", "quirky-0001"}
    worst, last_of_scene = 0.0, {}
    for i in range(len(ds)):
        clip = ds[i]
        t0 = (clip.timestamp - fx.T0_US) * 1e-6
        x0 = fx.ego_state(t0)[0]
        truth = np.array([fx.ego_state(t0 + 0.5 * k)[0] - x0 for k in range(1, 9)])
        worst = max(worst, float(np.abs(clip.target.trajectory[:, 0].numpy() - truth).max()))
        assert float(np.abs(clip.target.trajectory[:, 1:].numpy()).max()) < 1e-4  # straight, heading 0
        last_of_scene[clip.scene_name] = t0
    assert worst < 0.01
    assert last_of_scene["quirky-0001"] == pytest.approx(19.0 - 4.0, abs=0.06)  # the horizon ends at the last pose
    clip = ds[3]
    sample = ds.nusc.get("sample", clip.sample_token)
    key = ds.nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    assert clip.timestamp - key["timestamp"] == fx.CAM_LAG_US
    assert torch.equal(clip.observation.frames[-1], load_image(root / key["filename"], 32, 64))


def test_ego_status_has_no_turning_bias():
    """A constant-speed turn reads zero acceleration; a straight acceleration reads itself; reversing reads a
    negative speed."""
    import numpy as np

    from reworld.data.loader import PoseTrack, ego_status

    t = np.linspace(0, 3, 301)
    ang = 8.0 * t / 15.0  # 8 m/s on a 15 m radius
    turn = PoseTrack(t, np.stack([15 * np.sin(ang), 15 * (1 - np.cos(ang))], -1), ang)
    speed, accel, yaw_rate = ego_status(turn, 2.0)
    assert abs(speed - 8.0) < 0.01 and abs(accel) < 0.01 and abs(yaw_rate - 8.0 / 15.0) < 1e-3
    x = 5 * t + 0.5 * 2.0 * t**2
    speed, accel, _ = ego_status(PoseTrack(t, np.stack([x, 0 * t], -1), 0 * t), 2.0)
    assert abs(accel - 2.0) < 1e-3 and abs(speed - (5 + 2 * 2.0) + 0.25) < 0.01  # the last step's mean speed
    speed, _, _ = ego_status(PoseTrack(t, np.stack([-3 * t, 0 * t], -1), 0 * t), 2.0)
    assert abs(speed + 3.0) < 1e-6


def test_clips_carry_the_ego_box_offset(clips):
    """`data.ego_center_offset_m` (nuScenes: rear-axle poses) reaches the clip and the scorer's scene."""
    from reworld.planning.scene import PlanningScene

    assert PlanningScene.from_clip(clips[0]).ego_center_offset == 0.0
    axle = NuScenesClips(DataConfig(dataroot=clips.cfg.dataroot, version=fx.VERSION, image_height=32, image_width=64,
                                    ego_length=4.084, ego_width=1.730, ego_center_offset_m=1.385), frames=False)
    scene = PlanningScene.from_clip(axle[0])
    assert (scene.ego_length, scene.ego_width, scene.ego_center_offset) == (4.084, 1.730, 1.385)


def test_map_index_answers_as_the_devkit(tiny_world):
    """`MapIndex` gives the devkit's `get_records_in_patch(mode="intersect")` and `get_closest_lane` answers, same
    tokens in the same order, on patches and points all over the synthetic map (junctions, islands, off the road)."""
    import json

    from nuscenes.map_expansion.map_api import NuScenesMap

    from reworld.data.map_index import LAYERS, MapIndex

    nmap = NuScenesMap(str(tiny_world), "boston-seaport")
    index = MapIndex(nmap)
    meta = json.loads((Path(tiny_world) / "synth_meta.json").read_text())
    rng = np.random.default_rng(0)
    found = 0
    for scene in meta["scenes"]:
        cx, cy = scene["map_offset"]
        for k in range(8):
            x, y = cx + rng.uniform(-150, 150), cy + rng.uniform(-150, 150)
            if k % 2:  # on a road: along the scene's x axis or y axis through its centre
                x, y = (x, cy + rng.uniform(-4, 4)) if k % 4 == 1 else (cx + rng.uniform(-4, 4), y)
            r = float(rng.choice([3.0, 20.0, 60.0]))
            box = (x - r, y - r, x + r, y + r)
            assert index.records_in_patch(box, LAYERS) == nmap.get_records_in_patch(box, list(LAYERS), mode="intersect")
            lane = index.closest_lane(x, y, radius=4.0)
            assert lane == nmap.get_closest_lane(x, y, radius=4.0)
            found += bool(lane)
    assert found >= 10
