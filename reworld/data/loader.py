"""One loader for any nuScenes-format root, real nuScenes or the synthetic world.

A clip is cut around a key frame t=0 of the front camera: `context_frames` frames up to and including
t=0 and `future_frames` after it, `1 / frame_rate` apart, taken from the camera's sample_data chain
(key frames and sweeps, 12 Hz on nuScenes). The ego trajectory, the ego status and the agents come from
the ego poses and the instance-tracked annotations; the drivable area and the route centreline from the
map expansion. Everything geometric is in the ego frame at t=0: x forward, y left, heading CCW.
"""
from __future__ import annotations

import bisect
import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pyquaternion import Quaternion

from reworld.config import DataConfig
from reworld.data.types import (AgentTrack, Clip, COMMANDS, FrameLabels, LEAD_CORRIDOR_M, LEAD_RANGE_M, Observation,
                                Target)
from reworld.data.map_index import MapIndex

REQUIRED_TABLES = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
    "sample_annotation", "sample_data", "scene", "sensor", "visibility",
)
MAP_NAMES = ("singapore-onenorth", "singapore-hollandvillage", "singapore-queenstown", "boston-seaport")
US = 1e-6  # [s] per nuScenes timestamp unit
OBSERVATION_EXTRA_S = 1.0  # [s] agents are read this far past the plan's horizon (NAVSIM v1.1: 5 s for 4 s plans)


class DatasetError(ValueError):
    """A nuScenes-format root that cannot be read: the message names what is wrong."""


# ----------------------------------------------------------------------------------------------
# Root validation: short errors for a user's mistakes, before nuscenes-devkit raises raw ones.


def check_root(dataroot: str | Path, version: str) -> Path:
    root = Path(dataroot)
    if not root.is_dir():
        raise DatasetError(f"dataroot not found: {root}")
    tables = root / version
    if not tables.is_dir():
        if (root.name == version) or (root / "scene.json").is_file():
            raise DatasetError(
                f"dataroot {root} is the table folder itself; pass its parent {root.parent} as dataroot"
            )
        nested = [p.parent for p in root.glob(f"*/{version}") if p.is_dir()]
        if nested:
            raise DatasetError(f"dataroot is one level off: found {nested[0] / version}; pass --dataroot {nested[0]}")
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
        expected = f"one of {found}" if found else "a folder like v1.0-mini or v1.0-synth"
        raise DatasetError(f"unknown version {version!r}: no folder {tables}; expected {expected}")
    missing = [t for t in REQUIRED_TABLES if not (tables / f"{t}.json").is_file()]
    if missing:
        raise DatasetError(f"{tables}: missing table(s) {', '.join(m + '.json' for m in missing)}")
    return root


def _read_table(root: Path, version: str, name: str) -> list[dict]:
    path = root / version / f"{name}.json"
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _open_nuscenes(root: Path, version: str):
    from nuscenes.nuscenes import NuScenes

    for name in ("map", "log"):
        _read_table(root, version, name)  # JSON errors name the file
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenes(version=version, dataroot=str(root), verbose=False)
    except AssertionError as e:
        raise DatasetError(f"{root}: nuscenes-devkit refused the root ({e or 'a map mask is missing'})") from None
    except json.JSONDecodeError:
        for name in REQUIRED_TABLES:  # name the broken table (the devkit's error does not)
            _read_table(root, version, name)
        raise
    except (KeyError, IndexError, FileNotFoundError) as e:
        raise DatasetError(f"{root}/{version}: inconsistent tables ({type(e).__name__}: {e})") from None


def _open_map(root: Path, location: str):
    from nuscenes.map_expansion.map_api import NuScenesMap

    path = root / "maps" / "expansion" / f"{location}.json"
    if location not in MAP_NAMES:
        raise DatasetError(f"log location {location!r} is not a nuScenes map; expected one of {MAP_NAMES}")
    if not path.is_file():
        raise DatasetError(f"map expansion not found: {path} (the drivable area and route need it)")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return NuScenesMap(dataroot=str(root), map_name=location)
    except (KeyError, IndexError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: malformed map expansion ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------
# Geometry helpers


def yaw_of(rotation: list[float]) -> float:
    """Heading (rad, CCW about z) of a nuScenes [w, x, y, z] quaternion: the direction of the body x axis in the
    ground plane, the devkit's convention (`quaternion_yaw`), for the ego and agents alike. With pitch and roll it
    differs from pyquaternion's Euler yaw (`yaw_pitch_roll[0]`; 3.4 mrad at 0.1 rad of pitch and roll)."""
    r = Quaternion(rotation).rotation_matrix
    return float(np.arctan2(r[1, 0], r[0, 0]))


def wrap_angle(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def to_ego_frame(xy: np.ndarray, origin: np.ndarray, yaw: float) -> np.ndarray:
    """World (N, 2) → ego frame at `origin` (2,) with heading `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    d = np.asarray(xy, dtype=np.float64) - origin
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


@dataclass(frozen=True)
class PoseTrack:
    """Ego poses of one scene, sorted by time, for interpolation."""

    t: np.ndarray  # (N,) [s]
    xy: np.ndarray  # (N, 2) [m]
    yaw: np.ndarray  # (N,) unwrapped [rad]

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        times = np.asarray(times, dtype=np.float64)
        x = np.interp(times, self.t, self.xy[:, 0])
        y = np.interp(times, self.t, self.xy[:, 1])
        yaw = np.interp(times, self.t, self.yaw)
        return np.stack([x, y], axis=-1), yaw


def ego_status(track: PoseTrack, t0: float, dt: float = 0.25) -> np.ndarray:
    """[speed m/s, longitudinal acceleration m/s², yaw rate rad/s] at t0 from past poses only.

    Each speed is the length of one step's displacement, signed by its projection on that step's mean heading
    (reversing reads negative), so a turn at constant speed reads zero acceleration: projecting the earlier step
    on the current heading instead shortens it by cos Δψ (+0.57 m/s² at 8 m/s on a 15 m radius)."""
    xy, yaw = track.at(np.array([t0 - 2 * dt, t0 - dt, t0]))

    def step_speed(k: int) -> float:
        d = xy[k] - xy[k - 1]
        mid = 0.5 * (yaw[k] + yaw[k - 1])
        sign = 1.0 if np.dot(d, [np.cos(mid), np.sin(mid)]) >= 0 else -1.0
        return sign * float(np.hypot(*d)) / dt

    v1, v0 = step_speed(2), step_speed(1)
    return np.array([v1, (v1 - v0) / dt, (yaw[2] - yaw[1]) / dt], dtype=np.float32)


def driving_command(future_xy_ego: np.ndarray, threshold: float) -> int:
    """UniAD's rule: the lateral offset of the last future pose decides left / straight / right."""
    y = float(future_xy_ego[-1, 1])
    if y >= threshold:
        return COMMANDS.index("left")
    if y <= -threshold:
        return COMMANDS.index("right")
    return COMMANDS.index("straight")


def agent_type(category: str) -> str:
    if category.startswith("human.pedestrian"):
        return "pedestrian"
    if category.startswith(("vehicle.bicycle", "vehicle.motorcycle")):
        return "cyclist"
    if category.startswith("vehicle"):
        return "vehicle"
    return "static"


# ----------------------------------------------------------------------------------------------
# The dataset


@dataclass(frozen=True)
class SampleRef:
    scene_name: str
    sample_token: str
    timestamp: int  # [µs]


class NuScenesClips(torch.utils.data.Dataset):
    """Clips from a nuScenes-format root; `split` is 'train', 'val' or 'all' (split by scene).

    `geometry=False` skips agents and map (what video training needs), which is much faster; `frames=False` skips
    decoding the camera images (what the scorer and the hard-negative generator need: their clips carry empty
    frame tensors, (0, 3, H, W)).
    """

    def __init__(self, cfg: DataConfig, split: str = "all", geometry: bool = True, dataroot: str | None = None,
                 version: str | None = None, frames: bool = True):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be train, val or all, got {split!r}")
        if cfg.future_poses not in ("uniform", "keyframes"):
            raise ValueError(f"data.future_poses must be 'uniform' or 'keyframes', got {cfg.future_poses!r}")
        self.cfg = cfg
        self.root = check_root(dataroot or cfg.dataroot, version or cfg.version)
        self.version = version or cfg.version
        self.geometry = geometry
        self.frames = frames
        self.nusc = _open_nuscenes(self.root, self.version)
        self._maps: dict[str, object] = {}
        self._polygons: dict[tuple[str, str], object] = {}  # (location, polygon token) → shapely polygon
        self._index: dict[str, MapIndex] = {}  # location → spatial index of its map's polygon layers
        self._pose_index: dict[str, list[str]] | None = None  # scene token → ego pose tokens of all its sensors
        self._chains: dict[str, tuple[list[int], list[str]]] = {}  # scene token → camera (times µs, files)
        self._poses: dict[str, PoseTrack] = {}
        self._vehicles: dict[str, list] = {}  # scene token → its vehicles' annotation tracks (frame labels)
        self.scene_names = sorted(s["name"] for s in self.nusc.scene)
        self.split_scenes = split_scenes(self.scene_names, cfg.val_fraction, cfg.split_seed)
        keep = set(self.scene_names) if split == "all" else set(self.split_scenes[split])
        self.samples: list[SampleRef] = []
        for scene in sorted(self.nusc.scene, key=lambda s: s["name"]):
            if scene["name"] in keep:
                self.samples.extend(self._scene_samples(scene))

    # -- index -------------------------------------------------------------------------------
    def _camera_chain(self, scene: dict) -> tuple[list[int], list[str]]:
        if scene["token"] in self._chains:
            return self._chains[scene["token"]]
        first = self.nusc.get("sample", scene["first_sample_token"])
        if self.cfg.camera not in first["data"]:
            raise DatasetError(f"scene {scene['name']}: no {self.cfg.camera} sample_data")
        sd = self.nusc.get("sample_data", first["data"][self.cfg.camera])
        while sd["prev"]:
            sd = self.nusc.get("sample_data", sd["prev"])
        times, files = [], []
        while True:
            times.append(sd["timestamp"])
            files.append(sd["filename"])
            if not sd["next"]:
                break
            sd = self.nusc.get("sample_data", sd["next"])
        self._chains[scene["token"]] = (times, files)
        self._poses[scene["token"]] = self._scene_pose_track(scene)
        return times, files

    def _scene_pose_track(self, scene: dict) -> PoseTrack:
        """Every ego pose of the scene, from the sample_data of all its sensors (LIDAR sweeps carry the pose at
        each sample's own timestamp; the camera chain alone ends short of the last key frame's horizon)."""
        if self._pose_index is None:  # one pass over sample_data: scene token → its ego pose tokens
            scene_of = {s["token"]: s["scene_token"] for s in self.nusc.sample}
            index: dict[str, list[str]] = {}
            for sd in self.nusc.sample_data:
                index.setdefault(scene_of.get(sd["sample_token"], ""), []).append(sd["ego_pose_token"])
            self._pose_index = index
        stamped = {}
        for token in self._pose_index.get(scene["token"], []):
            pose = self.nusc.get("ego_pose", token)
            stamped[pose["timestamp"]] = pose
        if not stamped:
            raise DatasetError(f"scene {scene['name']}: no ego poses")
        order = sorted(stamped)
        t = np.array(order, dtype=np.float64) * US
        xy = np.array([stamped[k]["translation"][:2] for k in order], dtype=np.float64)
        yaw = np.unwrap(np.array([yaw_of(stamped[k]["rotation"]) for k in order]))
        return PoseTrack(t, xy, yaw)

    def _scene_samples(self, scene: dict) -> list[SampleRef]:
        times, _ = self._camera_chain(scene)
        track = self._poses[scene["token"]]
        cfg = self.cfg
        past = (cfg.context_frames - 1) / cfg.frame_rate
        out, token = [], scene["first_sample_token"]
        while token:
            sample = self.nusc.get("sample", token)
            t0 = sample["timestamp"]
            cam = self._key_frame_time(sample)
            # frames: the context and future frames within 50 ms of the camera chain; poses: strictly inside the
            # scene's ego poses, the 0.5 s of past that ego status needs and the whole horizon (nothing held)
            frames_ok = (cam - times[0]) * US >= past - 0.05 and (times[-1] - cam) * US >= \
                cfg.future_frames / cfg.frame_rate - 0.05
            poses_ok = t0 * US - track.t[0] >= 0.5 - 1e-6 and track.t[-1] - t0 * US >= cfg.horizon_s - 1e-6
            if frames_ok and poses_ok:
                keys = self._next_keyframes(sample, cfg.num_poses) if cfg.future_poses == "keyframes" else None
                if keys is None or (len(keys) == cfg.num_poses and keys[-1] <= times[-1]):
                    out.append(SampleRef(scene["name"], token, t0))
            token = sample["next"]
        return out

    def _key_frame_time(self, sample: dict) -> int:
        """[µs] the sample's own camera key frame (on real nuScenes about 35 ms before the sample's LIDAR time)."""
        token = sample["data"].get(self.cfg.camera)
        return self.nusc.get("sample_data", token)["timestamp"] if token else sample["timestamp"]

    def _next_keyframes(self, sample: dict, n: int) -> list[int]:
        """Timestamps [µs] of the next `n` key frames of the sample's scene (fewer at the end of a scene)."""
        out, token = [], sample["next"]
        while token and len(out) < n:
            nxt = self.nusc.get("sample", token)
            out.append(nxt["timestamp"])
            token = nxt["next"]
        return out

    def __len__(self) -> int:
        return len(self.samples)

    # -- one clip ------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Clip:
        ref = self.samples[index]
        sample = self.nusc.get("sample", ref.sample_token)
        scene = self.nusc.get("scene", sample["scene_token"])
        times, files = self._camera_chain(scene)
        track = self._poses[scene["token"]]
        cfg = self.cfg
        t0 = ref.timestamp * US
        step = 1.0 / cfg.frame_rate
        cam0 = self._key_frame_time(sample) * US  # the t = 0 frame is the sample's key frame; the others step from it
        ctx_t = cam0 + step * np.arange(-(cfg.context_frames - 1), 1)
        fut_t = cam0 + step * np.arange(1, cfg.future_frames + 1)
        if self.frames:
            context = torch.stack([self._frame(times, files, t) for t in ctx_t])
            future = torch.stack([self._frame(times, files, t) for t in fut_t])
        else:  # geometry only: no image is read
            context = future = torch.zeros((0, 3, cfg.image_height, cfg.image_width))

        (origin,), (yaw0,) = track.at(np.array([t0]))
        traj = self._trajectory(sample, track, t0)

        observation = Observation(
            frames=context,
            ego_status=torch.from_numpy(ego_status(track, t0)),
            command=driving_command(traj[:, :2], cfg.command_threshold),
        )
        agents, drivable, holes, lanes, intersections, centerline = [], [], [], [], [], np.zeros((0, 2))
        if self.geometry:
            agents = self._agents(sample, origin, yaw0, t0)
            drivable, holes, lanes, intersections, centerline = self._map_geometry(scene, track, origin, yaw0, t0)
        target = Target(
            frames=future,
            trajectory=torch.from_numpy(traj.astype(np.float32)),
            agents=agents,
            drivable_area=drivable,
            drivable_holes=holes,
            lanes=lanes,
            intersections=intersections,
            centerline=centerline,
            ego_size=(cfg.ego_length, cfg.ego_width),
            ego_center_offset=cfg.ego_center_offset_m,
        )
        return Clip(ref.scene_name, ref.sample_token, ref.timestamp, observation, target)

    def frame_box(self, sample_data: dict) -> tuple[float, float, float, float]:
        """The region of this camera image (a sample_data record, its `width` × `height`) that the frames show."""
        return fit_box(sample_data["width"], sample_data["height"], self.cfg.image_width, self.cfg.image_height,
                       self.cfg.image_fit)

    def _frame(self, times: list[int], files: list[str], t: float) -> torch.Tensor:
        return load_image(self.root / files[nearest_index(times, t)], self.cfg.image_height, self.cfg.image_width,
                          fit=self.cfg.image_fit)

    def frame_times(self, index: int) -> np.ndarray:
        """[s] the capture time of each frame of clip `index` (context then future), from the t = 0 frame's."""
        sample = self.nusc.get("sample", self.samples[index].sample_token)
        times, _ = self._camera_chain(self.nusc.get("scene", sample["scene_token"]))
        cam0 = self._key_frame_time(sample) * US
        step = 1.0 / self.cfg.frame_rate
        wanted = cam0 + step * np.arange(-(self.cfg.context_frames - 1), self.cfg.future_frames + 1)
        return np.array([times[nearest_index(times, t)] * US for t in wanted]) - cam0

    def frame_labels(self, index: int) -> FrameLabels:
        """The world's truth about every frame of clip `index` (`FrameLabels`): ego pose since the t = 0 frame, speed,
        lead vehicle, the clip's command. Reads the tables only, no image."""
        ref = self.samples[index]
        sample = self.nusc.get("sample", ref.sample_token)
        scene = self.nusc.get("scene", sample["scene_token"])
        self._camera_chain(scene)
        track = self._poses[scene["token"]]
        rel = self.frame_times(index)
        t = self._key_frame_time(sample) * US + rel  # [s] absolute capture times
        xy, yaw = track.at(t)
        k0 = self.cfg.context_frames - 1  # the t = 0 frame
        pose = np.concatenate([to_ego_frame(xy, xy[k0], yaw[k0]), (yaw - yaw[k0])[:, None]], axis=1)
        h = 0.1  # [s] central difference, one-sided at the ends of the log
        lo, hi = np.clip(t - h, track.t[0], track.t[-1]), np.clip(t + h, track.t[0], track.t[-1])
        (xa, _), (xb, _) = track.at(lo), track.at(hi)
        speed = np.linalg.norm(xb - xa, axis=1) / np.maximum(hi - lo, 1e-6)
        instances = self._instance_tracks(scene)
        sd = self.nusc.get("sample_data", sample["data"][self.cfg.camera])
        camera = CameraView.of(self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), sd["width"],
                               self.frame_box(sd))
        lead = np.array([lead_vehicle(instances, track, float(tk), xy[k], float(yaw[k]), camera)
                         for k, tk in enumerate(t)])
        traj = self._trajectory(sample, track, ref.timestamp * US)
        return FrameLabels(time=rel, ego_pose=pose, speed=speed, lead=lead,
                           command=driving_command(traj[:, :2], self.cfg.command_threshold))

    def _trajectory(self, sample: dict, track: PoseTrack, t0: float) -> np.ndarray:
        """(num_poses, 3) future ego poses [x, y, heading] in the ego frame at the sample's time t0 [s]."""
        (origin,), (yaw0,) = track.at(np.array([t0]))
        if self.cfg.future_poses == "keyframes":
            pose_t = np.array(self._next_keyframes(sample, self.cfg.num_poses)) * US
        else:
            pose_t = t0 + self.cfg.horizon_s / self.cfg.num_poses * np.arange(1, self.cfg.num_poses + 1)
        xy, yaw = track.at(pose_t)
        return np.concatenate([to_ego_frame(xy, origin, yaw0), wrap_angle(yaw - yaw0)[:, None]], axis=1)

    def _instance_tracks(self, scene: dict) -> list[tuple[np.ndarray, np.ndarray]]:
        """The scene's annotated vehicles: per instance, its annotation times [s] and centres (N, 2) [m], sorted."""
        if scene["token"] in self._vehicles:
            return self._vehicles[scene["token"]]
        rows: dict[str, list] = {}
        token = scene["first_sample_token"]
        while token:
            s = self.nusc.get("sample", token)
            for ann_token in s["anns"]:
                ann = self.nusc.get("sample_annotation", ann_token)
                if agent_type(ann["category_name"]) == "vehicle":
                    rows.setdefault(ann["instance_token"], []).append([s["timestamp"] * US, *ann["translation"][:2]])
            token = s["next"]
        out = []
        for r in rows.values():
            arr = np.array(sorted(r), dtype=np.float64)
            out.append((arr[:, 0], arr[:, 1:3]))
        self._vehicles[scene["token"]] = out
        return out

    def _agents(self, sample: dict, origin: np.ndarray, yaw0: float, t0: float) -> list[AgentTrack]:
        """Every instance annotated at a key frame of [0, horizon + 1 s] (and the first one after), tracked over
        them (linear in between), as NAVSIM v1.1's observation has them (its metric caching reads 5 s for 4 s plans:
        TTC looks 0.9 s past the last pose): an agent that enters after t = 0 is there from its first annotation,
        one that leaves is gone after its last (`reworld.planning.pdm`). Where the scene ends before horizon + 1 s,
        an agent still annotated at its last key frame is held there to horizon + 1 s
        (the data stops, not the agent)."""
        end = self.cfg.horizon_s + OBSERVATION_EXTRA_S
        rows: dict[str, list] = {}
        meta: dict[str, tuple] = {}
        s, last_key = sample, 0.0
        while s is not None:  # the key frames from t = 0 to the first at or after the end (they are not on a grid)
            t = last_key = s["timestamp"] * US - t0
            for ann_token in s["anns"]:
                ann = self.nusc.get("sample_annotation", ann_token)
                inst = ann["instance_token"]
                xy = to_ego_frame(np.array(ann["translation"][:2]), origin, yaw0)
                rows.setdefault(inst, []).append([t, xy[0], xy[1], yaw_of(ann["rotation"]) - yaw0])
                meta[inst] = (ann["category_name"], ann["size"])
            if t >= end - 1e-3:
                break
            s = self.nusc.get("sample", s["next"]) if s["next"] else None
        scene_ends = last_key < end - 1e-3
        agents = []
        for inst, r in rows.items():
            arr = np.array(r, dtype=np.float64)
            arr[:, 3] = wrap_angle(np.unwrap(arr[:, 3]))
            if len(arr) > 1 and np.max(np.linalg.norm(arr[:, 1:3] - arr[0, 1:3], axis=1)) < 0.1:
                arr = arr[[0, -1]]  # standing still: its first pose, over its first to its last annotation
                arr[1, 1:] = arr[0, 1:]
            if scene_ends and arr[-1, 0] == last_key:
                arr = np.concatenate([arr, arr[-1:]])
                arr[-1, 0] = end
            standing = len(arr) == 2 and np.array_equal(arr[0, 1:], arr[1, 1:])
            if standing and arr[0, 0] == 0.0 and arr[1, 0] >= end - 1e-3:
                arr = arr[:1]  # standing over the whole observation: one row
            category, (w, l, _h) = meta[inst]
            agents.append(AgentTrack(id=inst, type=agent_type(category), length=float(l), width=float(w), track=arr))
        return agents

    def _map_geometry(self, scene, track: PoseTrack, origin, yaw0, t0) -> tuple:
        from shapely.geometry import box

        log = self.nusc.get("log", scene["log_token"])
        nmap = self._maps.get(log["location"])
        if nmap is None:
            nmap = self._maps[log["location"]] = _open_map(self.root, log["location"])
        r = self.cfg.map_radius
        x, y = origin
        patch = box(x - r, y - r, x + r, y + r)
        location = log["location"]

        def polygon(token: str):  # the devkit builds each polygon from its nodes on every call: once per map here
            key = (location, token)
            if key not in self._polygons:
                self._polygons[key] = nmap.extract_polygon(token)
            return self._polygons[key]

        index = self._index.get(location)
        if index is None:  # built once per map (and process): the devkit's patch queries test every record
            index = self._index[location] = MapIndex(nmap, polygon)
        records = index.records_in_patch((x - r, y - r, x + r, y + r), ["drivable_area"])
        polygons, holes = [], []
        for rec_token in records["drivable_area"]:
            for poly_token in nmap.get("drivable_area", rec_token)["polygon_tokens"]:
                shape = polygon(poly_token).intersection(patch)
                for part in getattr(shape, "geoms", [shape]):
                    if part.geom_type == "Polygon" and not part.is_empty:
                        polygons.append(to_ego_frame(np.asarray(part.exterior.coords), origin, yaw0))
                        # keep the holes: a traffic island or a block inside a drivable polygon is not drivable
                        holes.append([to_ego_frame(np.asarray(ring.coords), origin, yaw0) for ring in part.interiors])
        if not any(holes):
            holes = []
        # the layers NAVSIM's at-fault and TTC rules read: lanes and lane connectors, and intersections (the map
        # expansion's road segments flagged `is_intersection`)
        lanes, intersections = [], []
        if not self.cfg.map_lanes:
            return polygons, holes, lanes, intersections, self._route_centerline(index, track, origin, yaw0, t0)
        near = index.records_in_patch((x - r, y - r, x + r, y + r), ["lane", "lane_connector", "road_segment"])
        for layer in ("lane", "lane_connector", "road_segment"):
            for token in near[layer]:
                rec = nmap.get(layer, token)
                if layer == "road_segment" and not rec.get("is_intersection", False):
                    continue
                shape = polygon(rec["polygon_token"]).intersection(patch)
                for part in getattr(shape, "geoms", [shape]):
                    if part.geom_type == "Polygon" and not part.is_empty:
                        ring = to_ego_frame(np.asarray(part.exterior.coords), origin, yaw0)
                        (intersections if layer == "road_segment" else lanes).append(ring)
        return polygons, holes, lanes, intersections, self._route_centerline(index, track, origin, yaw0, t0)

    def _route_centerline(self, index: MapIndex, track: PoseTrack, origin, yaw0, t0) -> np.ndarray:
        """Lanes under the ego's logged path from t=0 on (up to 2× the horizon), discretised in order."""
        nmap, lane_points = index.nmap, index.lane_points  # lanes discretised at 0.5 m, once per map
        end = min(track.t[-1], t0 + 2 * self.cfg.horizon_s)
        xy, _ = track.at(np.arange(t0, end + 1e-6, 0.25))

        def distance(token: str, p: np.ndarray) -> float:
            return float(np.min(np.linalg.norm(lane_points(token) - p, axis=1)))

        # Follow the lane graph: stay on the current lane while the path is on it, then take the successor
        # nearest the path. Only with no usable successor fall back to the closest lane, whose ties at a
        # junction entrance (all connectors start at one point) say nothing about the route.
        lanes: list[str] = []
        tol = 1.0  # [m]
        for p in xy:
            if lanes and distance(lanes[-1], p) <= tol:
                continue
            outgoing = nmap.connectivity.get(lanes[-1], {}).get("outgoing", []) if lanes else []
            outgoing = [t for t in outgoing if t in nmap.arcline_path_3]
            best = min(outgoing, key=lambda t: distance(t, p)) if outgoing else ""
            if not best or distance(best, p) > tol:
                best = index.closest_lane(float(p[0]), float(p[1]), radius=4.0)
            if best and best not in lanes:
                lanes.append(best)
        points = [lane_points(token) for token in lanes]
        if not points:
            return np.zeros((0, 2))
        line = to_ego_frame(np.concatenate(points), origin, yaw0)
        # lanes meet end to start: drop repeated points, which make zero-length segments
        step_len = np.linalg.norm(np.diff(line, axis=0), axis=1)
        line = line[np.concatenate([[True], step_len > 1e-6])]
        # keep the stretch from a little behind the ego to well past the horizon
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(line, axis=0), axis=1))])
        s0 = s[np.argmin(np.linalg.norm(line, axis=1))]
        keep = (s >= s0 - self.cfg.centerline_behind) & (s <= s0 + self.cfg.centerline_ahead)
        return line[keep]


def nearest_index(times: list[int], t: float) -> int:
    """Index of the timestamp [µs] in the sorted `times` nearest to `t` [s] (the earlier one on a tie)."""
    i = bisect.bisect_left(times, t / US)
    if i > 0 and (i == len(times) or abs(times[i - 1] * US - t) <= abs(times[i] * US - t)):
        i -= 1
    return i


def path_ahead(track: PoseTrack, t: float, length: float, dt: float = 0.1) -> np.ndarray:
    """(K, 2) [m] the path the ego drives from time `t` [s] on: its logged positions until it has covered `length`
    (or the log ends), then straight on along its last heading; world frame, duplicate points dropped."""
    times = np.arange(t, min(track.t[-1], t + 60.0) + 1e-9, dt)
    xy, yaw = track.at(times)
    keep = np.concatenate([[True], np.linalg.norm(np.diff(xy, axis=0), axis=1) > 1e-3])
    xy, yaw = xy[keep], yaw[keep]
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    if cum[-1] >= length:
        return xy[: int(np.searchsorted(cum, length)) + 1]
    heading = np.array([np.cos(yaw[-1]), np.sin(yaw[-1])])  # the log ends (or the ego stands): straight on
    return np.concatenate([xy, (xy[-1] + heading * (length - cum[-1] + 1.0))[None]])


def project_on_path(path: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arc length along `path` (K, 2) of each point's nearest path point, and its signed distance from the path
    (left of the direction of travel positive): points (P, 2) → (P,), (P,)."""
    a, b = path[:-1], path[1:]  # (S, 2) segments
    seg = b - a
    seg_len = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])[:-1]
    d = points[:, None, :] - a[None]  # (P, S, 2)
    u = np.clip(np.einsum("psk,sk->ps", d, seg) / np.maximum(seg_len**2, 1e-12), 0.0, 1.0)
    foot = a[None] + u[..., None] * seg[None]
    dist = np.linalg.norm(points[:, None, :] - foot, axis=2)  # (P, S)
    j = np.argmin(dist, axis=1)
    rows = np.arange(len(points))
    cross = seg[j, 0] * d[rows, j, 1] - seg[j, 1] * d[rows, j, 0]
    return cum[j] + u[rows, j] * seg_len[j], np.sign(cross) * dist[rows, j]


@dataclass(frozen=True)
class CameraView:
    """Where a camera looks in the ground plane, from its calibrated_sensor: a point is in view when it lies in front
    of the camera and its centre projects inside the columns the frames show (the vertical is not checked)."""

    position: np.ndarray  # (2,) [m] in the ego frame
    forward: np.ndarray  # (2,) optical axis in the ego frame (unit in the ground plane)
    right: np.ndarray  # (2,) image x axis in the ego frame
    fx: float  # [px]
    cx: float  # [px]
    u_min: float  # [px] the left edge of the columns the frames show, in the image the intrinsic is for
    u_max: float  # [px] their right edge

    @classmethod
    def of(cls, calibrated_sensor: dict, width: int, box: tuple[float, float, float, float] | None = None
           ) -> "CameraView":
        """`width` [px] of the image the intrinsic is for; `box` the region of it the frames show (`fit_box`; the
        whole image when None)."""
        r = Quaternion(calibrated_sensor["rotation"]).rotation_matrix  # camera (x right, y down, z forward) → ego
        k = np.asarray(calibrated_sensor["camera_intrinsic"], dtype=np.float64)
        left, _, right, _ = box if box is not None else (0.0, 0.0, float(width), 0.0)
        return cls(np.asarray(calibrated_sensor["translation"][:2], dtype=np.float64), r[:2, 2], r[:2, 0],
                   float(k[0, 0]), float(k[0, 2]), float(left), float(right))

    def sees(self, points_ego: np.ndarray) -> np.ndarray:
        """(P, 2) points in the ego frame → (P,) bool."""
        d = points_ego - self.position
        depth = d @ self.forward
        u = self.fx * (d @ self.right) / np.maximum(depth, 1e-6) + self.cx
        return (depth > 0.5) & (u >= self.u_min) & (u < self.u_max)


def lead_vehicle(instances: list[tuple[np.ndarray, np.ndarray]], track: PoseTrack, t: float, ego_xy: np.ndarray,
                 ego_yaw: float, camera: CameraView | None = None) -> np.ndarray:
    """[present, distance m, lateral offset m] of the lead vehicle at time `t` [s] (the rule of `FrameLabels`);
    [0, NaN, NaN] without one. Vehicles count while `t` lies within their annotated span and, given the `camera`,
    while their centre is in its view."""
    centres = [np.array([np.interp(t, ts, xy[:, 0]), np.interp(t, ts, xy[:, 1])])
               for ts, xy in instances if ts[0] - 1e-6 <= t <= ts[-1] + 1e-6]
    if centres:
        pts = np.stack(centres)
        ahead = to_ego_frame(pts, ego_xy, ego_yaw)
        keep = (ahead[:, 0] > 0.0) & (np.linalg.norm(ahead, axis=1) <= LEAD_RANGE_M + LEAD_CORRIDOR_M)
        if camera is not None:
            keep &= camera.sees(ahead)
        pts = pts[keep]
        if len(pts):
            s, d = project_on_path(path_ahead(track, t, LEAD_RANGE_M + 5.0), pts)
            ok = (s > 0.0) & (s <= LEAD_RANGE_M) & (np.abs(d) <= LEAD_CORRIDOR_M)
            if ok.any():
                i = np.flatnonzero(ok)[np.argmin(s[ok])]
                return np.array([1.0, s[i], d[i]])
    return np.array([0.0, np.nan, np.nan])


def split_scenes(names: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """A fixed train/val split by scene name (independent of the order the tables list them)."""
    names = sorted(names)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = int(round(val_fraction * len(names)))
    if len(names) >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), len(names) - 1)
    val = sorted(names[i] for i in order[:n_val])
    return {"train": [n for n in names if n not in set(val)], "val": val}


IMAGE_FITS = ("crop", "stretch")


def fit_box(src_w: float, src_h: float, dst_w: int, dst_h: int, fit: str = "crop") -> tuple[float, float, float, float]:
    """The region (left, top, right, bottom) [px of the source image, pixel edges] that becomes a `dst_w` × `dst_h`
    frame of a `src_w` × `src_h` image: the whole image ("stretch"), or the centred region with the frame's aspect
    ("crop": the image resized to cover the frame, the overhang cut evenly from both sides)."""
    if fit not in IMAGE_FITS:
        raise ValueError(f"data.image_fit must be one of {list(IMAGE_FITS)}, got {fit!r}")
    if fit == "stretch":
        return 0.0, 0.0, float(src_w), float(src_h)
    scale = max(dst_w / src_w, dst_h / src_h)
    w, h = dst_w / scale, dst_h / scale
    return (src_w - w) / 2, (src_h - h) / 2, (src_w + w) / 2, (src_h + h) / 2


def frame_intrinsic(camera: dict, frame_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) [px] the camera's intrinsic in the frames read: `camera` as `reworld.evaluation.judge.clip_camera` gives
    it (`camera_intrinsic` for an image of `size` (W, H); `box` the region of that image the frames show, `fit_box`,
    the whole image when absent); `frame_size` (H, W). Pixel centres at whole numbers, as in the intrinsic: a source
    pixel u maps to (u + 0.5 − left) · W / (right − left) − 0.5."""
    k = np.asarray(camera["camera_intrinsic"], dtype=np.float64).copy()
    w0, h0 = camera["size"]
    left, top, right, bottom = camera.get("box") or (0.0, 0.0, w0, h0)
    h, w = frame_size
    sx, sy = w / (right - left), h / (bottom - top)
    k[0, 0], k[0, 1], k[0, 2] = k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] + 0.5 - left) * sx - 0.5
    k[1, 1], k[1, 2] = k[1, 1] * sy, (k[1, 2] + 0.5 - top) * sy - 0.5
    return k


def load_image(path: Path, height: int, width: int, reduced_decode: bool = True, fit: str = "crop") -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1]; a missing or corrupt image is an error naming the file. `fit` (`fit_box`): the
    image is resized to cover the frame and centre-cropped ("crop"), or each axis resized on its own ("stretch").

    With `reduced_decode` a JPEG is decoded at the smallest power-of-two reduction (libjpeg's DCT scaling, PIL's
    draft mode) that still leaves at least twice the target size, then resized with Pillow's antialiased bilinear
    filter: a 1600×900 nuScenes frame for a 64×128 clip is decoded at 400×225 instead of in full
    (`benchmarks/bench_decode.py`). Images already within 2× of the target (the synthetic world's 128×256) are
    decoded in full, so their pixels do not change."""
    if not os.path.isfile(path):
        raise DatasetError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            if reduced_decode:
                im.draft("RGB", (2 * width, 2 * height))
            im = im.convert("RGB")
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"corrupt image {path}: {e}") from None
    box = fit_box(im.width, im.height, width, height, fit)  # draft scales both axes alike: the same fractions
    if im.size != (width, height) or box != (0.0, 0.0, float(im.width), float(im.height)):
        im = im.resize((width, height), Image.BILINEAR, box=box)
    arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    return arr.float() / 127.5 - 1.0
