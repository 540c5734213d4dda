"""A small real-format nuScenes root written by hand (not by our generator), for loader tests.

One 10 s scene on a straight east-west road in `boston-seaport`: the ego accelerates gently along
y = 101.75 (heading east), a parked car stands in the opposite lane, a car drives ahead of the ego.
Front camera at 12 Hz, key frames at 2 Hz, ego poses for every sample_data, a map expansion with
one lane, one drivable area polygon with a hole (a traffic island beside the ego's lane) and straight arcline
paths.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = "v1.0-handmade"
LOCATION = "boston-seaport"
T0_US = 1_600_000_000_000_000
LANE_Y = 101.75
ROAD = (50.0, 98.0, 450.0, 105.5)  # drivable rectangle [x0, y0, x1, y1]
ISLAND = [(120.0, 98.5), (135.0, 98.5), (135.0, 99.5), (120.0, 99.5)]  # a hole in the drivable area


def ego_state(t: float) -> tuple[float, float, float]:
    """(x, y, yaw) of the ego at t seconds: 6 m/s + 0.3 m/s² along +x."""
    return 100.0 + 6.0 * t + 0.15 * t * t, LANE_Y, 0.0


def _quat(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _log_and_mask(root: Path, tables: dict, name: str) -> None:
    """The visibility level, one log in LOCATION and its map mask (the devkit opens the mask with the tables)."""
    tables["visibility"].append({"token": "4", "level": "v80-100", "description": ""})
    tables["log"].append({"token": "log-0", "logfile": name, "vehicle": "ego", "date_captured": "2026-01-01",
                          "location": LOCATION})
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "maps" / f"{name}-mask.png")
    tables["map"].append({"token": "map-0", "log_tokens": ["log-0"], "category": "semantic_prior",
                          "filename": f"maps/{name}-mask.png"})


def build(root: Path, seconds: float = 10.0, image_size: tuple[int, int] = (90, 160),
          extra_agents: dict | None = None) -> Path:
    """`extra_agents`: instance token -> (motion t -> (x, y, yaw), first, last): more cars, annotated at the key
    frames of [first, last] seconds only (an agent that enters or leaves the annotated area)."""
    root = Path(root)
    tables: dict[str, list] = {k: [] for k in (
        "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
        "sample_annotation", "sample_data", "scene", "sensor", "visibility")}
    tables["sensor"].append({"token": "sensor-cam", "channel": "CAM_FRONT", "modality": "camera"})
    tables["calibrated_sensor"].append({
        "token": "calib-cam", "sensor_token": "sensor-cam", "translation": [1.7, 0.0, 1.5],
        "rotation": [0.5, -0.5, 0.5, -0.5],
        "camera_intrinsic": [[120.0, 0, 80.0], [0, 120.0, 45.0], [0, 0, 1]]})
    tables["category"] += [
        {"token": "cat-car", "name": "vehicle.car", "description": "", "index": 0},
    ]
    tables["attribute"] += [
        {"token": "attr-moving", "name": "vehicle.moving", "description": ""},
        {"token": "attr-parked", "name": "vehicle.parked", "description": ""},
    ]
    _log_and_mask(root, tables, "handmade")

    # camera sample_data at 12 Hz, key frames every 6th (2 Hz)
    n = int(seconds * 12) + 1
    keys = [i for i in range(n) if i % 6 == 0]
    sample_tokens = [f"sample-{k // 6:03d}" for k in keys]
    h, w = image_size
    for d in ("samples/CAM_FRONT", "sweeps/CAM_FRONT"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = i / 12
        ts = T0_US + int(round(t * 1e6))
        x, y, yaw = ego_state(t)
        tables["ego_pose"].append({"token": f"pose-{i:04d}", "timestamp": ts, "translation": [x, y, 0.0],
                                   "rotation": _quat(yaw)})
        key = i % 6 == 0
        folder = "samples" if key else "sweeps"
        filename = f"{folder}/CAM_FRONT/handmade__CAM_FRONT__{ts}.jpg"
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = (120, 160, 220)
        img[h // 2:] = (80, 80, 80)
        img[h // 2:, (i * 3) % w] = 255  # something that moves, so frames differ
        Image.fromarray(img).save(root / filename, quality=90)
        next_key = min(k for k in keys if k >= i) if i <= keys[-1] else keys[-1]
        tables["sample_data"].append({
            "token": f"sd-{i:04d}", "sample_token": sample_tokens[keys.index(next_key)],
            "ego_pose_token": f"pose-{i:04d}", "calibrated_sensor_token": "calib-cam", "timestamp": ts,
            "fileformat": "jpg", "is_key_frame": key, "height": h, "width": w, "filename": filename,
            "prev": f"sd-{i - 1:04d}" if i else "", "next": f"sd-{i + 1:04d}" if i + 1 < n else ""})
    for j, k in enumerate(keys):
        tables["sample"].append({"token": sample_tokens[j], "timestamp": T0_US + int(round(k / 12 * 1e6)),
                                 "scene_token": "scene-0",
                                 "prev": sample_tokens[j - 1] if j else "",
                                 "next": sample_tokens[j + 1] if j + 1 < len(keys) else ""})
    tables["scene"].append({"token": "scene-0", "name": "handmade-0001", "description": "straight road",
                            "log_token": "log-0", "nbr_samples": len(keys), "first_sample_token": sample_tokens[0],
                            "last_sample_token": sample_tokens[-1]})

    # two agents: a parked car in the opposite lane, a lead car 20 m ahead at 7 m/s
    agents = {
        "inst-parked": (lambda t: (160.0, 99.9, math.pi), "attr-parked"),
        "inst-lead": (lambda t: (120.0 + 7.0 * t, LANE_Y, 0.0), "attr-moving"),
    }
    window = {inst: (0.0, math.inf) for inst in agents}
    for inst, (motion, first, last) in (extra_agents or {}).items():
        agents[inst], window[inst] = (motion, "attr-moving"), (first, last)
    for inst, (motion, attr) in agents.items():
        seen = [j for j, k in enumerate(keys) if window[inst][0] - 1e-9 <= k / 12 <= window[inst][1] + 1e-9]
        tokens = [f"ann-{inst}-{j:03d}" for j in range(len(seen))]
        for j, jk in enumerate(seen):
            x, y, yaw = motion(keys[jk] / 12)
            tables["sample_annotation"].append({
                "token": tokens[j], "sample_token": sample_tokens[jk], "instance_token": inst,
                "visibility_token": "4", "attribute_tokens": [attr], "translation": [x, y, 0.8],
                "size": [1.9, 4.6, 1.6], "rotation": _quat(yaw), "prev": tokens[j - 1] if j else "",
                "next": tokens[j + 1] if j + 1 < len(tokens) else "", "num_lidar_pts": 10, "num_radar_pts": 0})
        tables["instance"].append({"token": inst, "category_token": "cat-car", "nbr_annotations": len(tokens),
                                   "first_annotation_token": tokens[0], "last_annotation_token": tokens[-1]})

    (root / VERSION).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(rows))
    _write_map(root)
    return root


def _write_map(root: Path) -> None:
    x0, y0, x1, y1 = ROAD
    nodes = [{"token": f"n{i}", "x": x, "y": y} for i, (x, y) in enumerate(
        [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, LANE_Y - 1.75), (x1, LANE_Y - 1.75), (x1, y1), (x0, y1),
         *ISLAND])]
    polygons = [
        {"token": "poly-road", "exterior_node_tokens": ["n0", "n1", "n2", "n3"],
         "holes": [{"node_tokens": ["n8", "n9", "n10", "n11"]}]},  # a traffic island beside the ego's lane
        {"token": "poly-lane", "exterior_node_tokens": ["n4", "n5", "n6", "n7"], "holes": []},
    ]
    layers = {name: [] for name in (
        "drivable_area", "road_segment", "road_block", "lane", "ped_crossing", "walkway", "stop_line",
        "carpark_area", "road_divider", "lane_divider", "traffic_light", "lane_connector")}
    layers["drivable_area"].append({"token": "da-0", "polygon_tokens": ["poly-road"]})
    layers["lane"].append({"token": "lane-east", "polygon_token": "poly-lane", "lane_type": "CAR",
                           "from_edge_line_token": "", "to_edge_line_token": "",
                           "left_lane_divider_segments": [], "right_lane_divider_segments": []})
    length = x1 - x0
    arc = [{"start_pose": [x0, LANE_Y, 0.0], "end_pose": [x1, LANE_Y, 0.0], "shape": "LSL",
            "radius": 999.0, "segment_length": [0.0, length, 0.0]}]
    doc = {"version": "1.3", "canvas_edge": [2000.0, 2000.0], "node": nodes, "line": [], "polygon": polygons,
           **layers, "arcline_path_3": {"lane-east": arc},
           "connectivity": {"lane-east": {"incoming": [], "outgoing": []}}}
    (root / "maps" / "expansion").mkdir(parents=True, exist_ok=True)
    (root / "maps" / "expansion" / f"{LOCATION}.json").write_text(json.dumps(doc))


# ---------------------------------------------------------------------------------------------- real-data quirks
QUIRKY_VERSION = "v1.0-quirky"
CAM_LAG_US = 35_000  # CAM_FRONT key frames are taken about 35 ms before the LIDAR sweep that times the sample
CAM_STEPS_US = (83_000, 83_000, 100_000, 50_000, 83_000, 84_000)  # camera intervals vary: 50 / 83 / 100 ms
KEY_SWEEPS = (10, 9, 11, 10, 11, 9)  # LIDAR sweeps (20 Hz) between key frames: 450–550 ms


def pitch_roll(t: float) -> tuple[float, float]:
    return 0.02 * math.sin(1.3 * t), 0.015 * math.cos(0.7 * t)


def _quat_ypr(yaw: float, pitch: float, roll: float) -> list[float]:
    """[w, x, y, z] of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cy, sy, cp, sp, cr, sr = (math.cos(yaw / 2), math.sin(yaw / 2), math.cos(pitch / 2), math.sin(pitch / 2),
                              math.cos(roll / 2), math.sin(roll / 2))
    return [cy * cp * cr + sy * sp * sr, cy * cp * sr - sy * sp * cr, cy * sp * cr + sy * cp * sr,
            sy * cp * cr - cy * sp * sr]


def build_quirky(root: Path, scenes: int = 2, seconds: float = 9.0, image_size: tuple[int, int] = (90, 160)) -> Path:
    """A root with the timing of real nuScenes: LIDAR_TOP at 20 Hz times the samples, key frames 450–550 ms apart,
    CAM_FRONT at about 12 Hz with 50/83/100 ms steps and its key frame 35 ms before the sample, ego poses for
    every sample_data of both sensors (interleaved), small pitch and roll, several scenes in one log (the ego
    drives on between them). The ego follows `ego_state` (time from the first scene's start)."""
    root = Path(root)
    tables: dict[str, list] = {k: [] for k in (
        "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
        "sample_annotation", "sample_data", "scene", "sensor", "visibility")}
    tables["sensor"] += [{"token": "sensor-cam", "channel": "CAM_FRONT", "modality": "camera"},
                         {"token": "sensor-lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
    tables["calibrated_sensor"] += [
        {"token": "calib-cam", "sensor_token": "sensor-cam", "translation": [1.7, 0.0, 1.5],
         "rotation": [0.5, -0.5, 0.5, -0.5], "camera_intrinsic": [[120.0, 0, 80.0], [0, 120.0, 45.0], [0, 0, 1]]},
        {"token": "calib-lidar", "sensor_token": "sensor-lidar", "translation": [0.9, 0.0, 1.8],
         "rotation": [1.0, 0.0, 0.0, 0.0], "camera_intrinsic": []}]
    tables["category"].append({"token": "cat-car", "name": "vehicle.car", "description": "", "index": 0})
    _log_and_mask(root, tables, "quirky")
    for d in ("samples/CAM_FRONT", "sweeps/CAM_FRONT", "samples/LIDAR_TOP", "sweeps/LIDAR_TOP"):
        (root / d).mkdir(parents=True, exist_ok=True)
    h, w = image_size
    pose_i = [0]

    def pose(ts: int) -> str:
        t = (ts - T0_US) * 1e-6
        x, y, yaw = ego_state(t)
        p, r = pitch_roll(t)
        tok = f"pose-{pose_i[0]:05d}"
        pose_i[0] += 1
        tables["ego_pose"].append({"token": tok, "timestamp": ts, "translation": [x, y, 0.0],
                                   "rotation": _quat_ypr(yaw, p, r)})
        return tok

    start = T0_US
    for sc in range(scenes):
        end = start + int(seconds * 1e6)
        lidar = list(range(start, end + 1, 50_000))  # 20 Hz
        key_idx, i, j = [], 0, 0
        while i < len(lidar):
            key_idx.append(i)
            i += KEY_SWEEPS[j % len(KEY_SWEEPS)]
            j += 1
        key_ts = [lidar[k] for k in key_idx]
        samples = [f"s{sc}-{k:03d}" for k in range(len(key_ts))]
        cams, t, k = [], start - 60_000, 0
        while t <= end:
            cams.append(t)
            t += CAM_STEPS_US[k % len(CAM_STEPS_US)]
            k += 1
        cam_keys = {}
        for kt in key_ts:  # the camera frame nearest to 35 ms before the sweep becomes its key frame
            c = min(range(len(cams)), key=lambda q: abs(cams[q] - (kt - CAM_LAG_US)))
            cams[c] = kt - CAM_LAG_US
            cam_keys[c] = kt
        cams = sorted(set(cams))
        cam_keys = {cams.index(v - CAM_LAG_US): v for v in cam_keys.values()}
        for chan, stamps, keys in (("LIDAR_TOP", lidar, {i: lidar[i] for i in key_idx}), ("CAM_FRONT", cams, cam_keys)):
            toks = [f"sd-{chan}-{sc}-{q:04d}" for q in range(len(stamps))]
            for q, ts in enumerate(stamps):
                key = q in keys
                owner = keys[q] if key else min((v for v in key_ts if v >= ts), default=key_ts[-1])
                fmt = "jpg" if chan == "CAM_FRONT" else "pcd"
                filename = f"{'samples' if key else 'sweeps'}/{chan}/quirky__{chan}__{ts}.{fmt}"
                if chan == "CAM_FRONT":
                    img = np.zeros((h, w, 3), np.uint8)
                    img[: h // 2] = (120, 160, 220)
                    img[h // 2:] = (80, 80, 80)
                    img[h // 2:, (ts // 10_000) % w] = 255  # the frame's time, readable from its pixels
                    Image.fromarray(img).save(root / filename, quality=95)
                else:
                    (root / filename).write_bytes(b"")
                tables["sample_data"].append({
                    "token": toks[q], "sample_token": samples[key_ts.index(owner)],
                    "ego_pose_token": pose(ts),
                    "calibrated_sensor_token": "calib-cam" if chan == "CAM_FRONT" else "calib-lidar",
                    "timestamp": ts, "fileformat": fmt, "is_key_frame": key, "height": h if fmt == "jpg" else 0,
                    "width": w if fmt == "jpg" else 0, "filename": filename,
                    "prev": toks[q - 1] if q else "", "next": toks[q + 1] if q + 1 < len(stamps) else ""})
        for q, kt in enumerate(key_ts):
            tables["sample"].append({"token": samples[q], "timestamp": kt, "scene_token": f"scene-{sc}",
                                     "prev": samples[q - 1] if q else "",
                                     "next": samples[q + 1] if q + 1 < len(samples) else ""})
        tables["scene"].append({"token": f"scene-{sc}", "name": f"quirky-{sc:04d}", "description": "real timing",
                                "log_token": "log-0", "nbr_samples": len(samples),
                                "first_sample_token": samples[0], "last_sample_token": samples[-1]})
        start = end + 1_000_000  # a second's gap to the next scene of the log
    tables["sample_data"].sort(key=lambda r: r["timestamp"])  # sensors interleaved, as in the real table
    (root / QUIRKY_VERSION).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / QUIRKY_VERSION / f"{name}.json").write_text(json.dumps(rows))
    _write_map(root)
    return root
