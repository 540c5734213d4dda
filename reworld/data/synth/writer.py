"""Writes scenes as a nuScenes v1.0 root: the 13 tables, the map-expansion JSON and a map mask PNG."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path as FsPath

import numpy as np
from PIL import Image, ImageDraw

from reworld.data.synth.geometry import Path, yaw_quaternion, ypr_quaternion
from reworld.data.synth.layout import Layout, _strip
from reworld.data.synth.params import MAP_LOCATION, SynthParams
from reworld.data.synth.timing import SensorTimes, body_pitch_roll, tracks_at
from reworld.data.synth.traffic import Track

CHANNEL = "CAM_FRONT"
LIDAR = "LIDAR_TOP"  # its sweeps time the samples (nuscenes timing); no point clouds are simulated: empty files
# camera frame (x right, y down, z forward) to ego frame (x forward, y left, z up), as [w, x, y, z]
CAM_ROTATION = [0.5, -0.5, 0.5, -0.5]
CATEGORIES = ["vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "human.pedestrian.adult",
              "movable_object.barrier"]
ATTRIBUTES = ["vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing"]
VISIBILITY = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]
BASE_TIMESTAMP = 1_533_000_000_000_000  # [µs]
SCENE_TIME_STRIDE = 1_000_000_000  # [µs] between scene starts


def make_token(*parts) -> str:
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def _r(v, nd=4):
    return [round(float(x), nd) for x in v]


class TableWriter:
    """Collects the nuScenes tables of all scenes."""

    def __init__(self, seed: int):
        self.seed = seed
        self.t = {name: [] for name in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log",
                                        "map", "sample", "sample_annotation", "sample_data", "scene", "sensor",
                                        "visibility")}
        self.sensor_token = make_token("sensor", CHANNEL)
        self.lidar_token = make_token("sensor", LIDAR)
        self.t["sensor"].append({"token": self.sensor_token, "channel": CHANNEL, "modality": "camera"})
        for i, name in enumerate(CATEGORIES):
            self.t["category"].append({"token": make_token("category", name), "name": name, "description": name,
                                       "index": i})
        for name in ATTRIBUTES:
            self.t["attribute"].append({"token": make_token("attribute", name), "name": name, "description": name})
        for tok, level in VISIBILITY:
            self.t["visibility"].append({"token": tok, "level": level, "description": f"visibility {level}"})

    def add_scene(self, idx: int, name: str, description: str, tracks: list[Track], offset: np.ndarray,
                  intrinsic: list[list[float]], p: SynthParams, image_size: tuple[int, int], times: SensorTimes,
                  phase: np.ndarray) -> dict:
        """The scene's tables; `tracks` are on the simulation grid, `times` says when each sensor fires."""
        seed = self.seed
        log_token = make_token(seed, "log", idx // p.scenes_per_log if p.timing != "uniform" else idx)
        if not any(r["token"] == log_token for r in self.t["log"]):
            self.t["log"].append({"token": log_token, "logfile": f"synth-{seed}-{idx:04d}", "vehicle": "synth-ego",
                                  "date_captured": "2018-08-01", "location": MAP_LOCATION})
        cs_token = make_token(seed, "calibrated_sensor", idx)
        self.t["calibrated_sensor"].append({
            "token": cs_token, "sensor_token": self.sensor_token, "translation": [p.cam_forward, 0.0, p.cam_height],
            "rotation": CAM_ROTATION, "camera_intrinsic": [_r(row, 6) for row in intrinsic]})
        start = BASE_TIMESTAMP + idx * SCENE_TIME_STRIDE
        n_samples = len(times.samples)
        sample_tokens = [make_token(seed, "sample", idx, m) for m in range(n_samples)]
        scene_token = make_token(seed, "scene", idx)
        for m, tok in enumerate(sample_tokens):
            self.t["sample"].append({
                "token": tok, "timestamp": int(start + times.samples[m]), "scene_token": scene_token,
                "prev": sample_tokens[m - 1] if m > 0 else "", "next": sample_tokens[m + 1] if m + 1 < n_samples else ""})
        chains = [(CHANNEL, "jpg", cs_token, times.camera, times.camera_key, "sample_data")]
        if len(times.lidar):
            if not any(r["channel"] == LIDAR for r in self.t["sensor"]):
                self.t["sensor"].append({"token": self.lidar_token, "channel": LIDAR, "modality": "lidar"})
            lidar_cs = make_token(seed, "calibrated_sensor", idx, LIDAR)
            self.t["calibrated_sensor"].append({"token": lidar_cs, "sensor_token": self.lidar_token,
                                                "translation": [0.94, 0.0, 1.84], "rotation": [1.0, 0.0, 0.0, 0.0],
                                                "camera_intrinsic": []})
            chains.append((LIDAR, "pcd.bin", lidar_cs, times.lidar, times.lidar_key, "sample_data_lidar"))
        ego = tracks[0]
        files, lidar_files = [], []
        for channel, ext, cs, stamps, keys, kind in chains:
            at = tracks_at([ego], stamps, p)[0]
            pitch, roll = body_pitch_roll(phase, stamps, p)
            sample_of = np.searchsorted(np.flatnonzero(keys), np.arange(len(keys)))  # its sample: the next key frame
            tokens = [make_token(seed, kind, idx, k) for k in range(len(stamps))]
            for k, t in enumerate(stamps):
                ts = int(start + t)
                folder = "samples" if keys[k] else "sweeps"
                fname = f"{folder}/{channel}/{name}__{channel}__{ts}.{ext}"
                (files if channel == CHANNEL else lidar_files).append(fname)
                pose_token = make_token(seed, "ego_pose" if channel == CHANNEL else "ego_pose_lidar", idx, k)
                x, y = at.xy[k] + offset
                self.t["ego_pose"].append({"token": pose_token, "timestamp": ts,
                                           "rotation": ypr_quaternion(float(at.yaw[k]), float(pitch[k]),
                                                                      float(roll[k])),
                                           "translation": [round(float(x), 4), round(float(y), 4), 0.0]})
                self.t["sample_data"].append({
                    "token": tokens[k], "sample_token": sample_tokens[sample_of[k]], "ego_pose_token": pose_token,
                    "calibrated_sensor_token": cs, "timestamp": ts, "fileformat": "jpg" if ext == "jpg" else "pcd",
                    "is_key_frame": bool(keys[k]), "height": image_size[0] if ext == "jpg" else 0,
                    "width": image_size[1] if ext == "jpg" else 0, "filename": fname,
                    "prev": tokens[k - 1] if k > 0 else "", "next": tokens[k + 1] if k + 1 < len(stamps) else ""})
        at_samples = tracks_at(tracks, times.samples, p)
        n_ann = sum(self._add_track(idx, tr, at_samples[0], offset, sample_tokens, p) for tr in at_samples[1:])
        self.t["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": n_samples,
                                "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                                "name": name, "description": description})
        return {"token": scene_token, "log_token": log_token, "files": files, "lidar_files": lidar_files,
                "samples": n_samples, "sweeps": len(files) - n_samples, "annotations": n_ann}

    def _add_track(self, idx, tr: Track, ego: Track, offset, sample_tokens, p: SynthParams) -> int:
        """Annotations of one road user at the samples (`tr` and `ego` are their states at the sample times)."""
        dist = np.linalg.norm(tr.xy - ego.xy, axis=1)
        near = np.nonzero(dist <= p.annotate_radius)[0]
        if len(near) == 0:
            return 0
        ms = list(range(int(near[0]), int(near[-1]) + 1))  # contiguous, as nuScenes tracks are
        inst = make_token(self.seed, "instance", idx, tr.id)
        anns = [make_token(self.seed, "sample_annotation", idx, tr.id, m) for m in ms]
        for j, m in enumerate(ms):
            x, y = tr.xy[m] + offset
            self.t["sample_annotation"].append({
                "token": anns[j], "sample_token": sample_tokens[m], "instance_token": inst,
                "visibility_token": "4" if dist[m] < 40 else "3",
                "attribute_tokens": [make_token("attribute", _attribute(tr, float(tr.speed[m])))],
                "translation": [round(float(x), 4), round(float(y), 4), round(tr.height / 2, 4)],
                "size": [round(tr.width, 4), round(tr.length, 4), round(tr.height, 4)],
                "rotation": yaw_quaternion(float(tr.yaw[m])),
                "prev": anns[j - 1] if j > 0 else "", "next": anns[j + 1] if j + 1 < len(ms) else "",
                "num_lidar_pts": max(1, int(4000.0 / (float(dist[m]) + 5.0) ** 1.2)), "num_radar_pts": 0})
        self.t["instance"].append({"token": inst, "category_token": make_token("category", tr.category),
                                   "nbr_annotations": len(ms), "first_annotation_token": anns[0],
                                   "last_annotation_token": anns[-1]})
        return len(ms)

    def write(self, root: FsPath, version: str, map_file: str) -> None:
        self.t["map"] = [{"token": make_token(self.seed, "map", MAP_LOCATION), "category": "semantic_prior",
                          "filename": map_file, "log_tokens": [r["token"] for r in self.t["log"]]}]
        folder = root / version
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.t.items():
            (folder / f"{name}.json").write_text(json.dumps(rows, indent=0))


def _attribute(tr: Track, speed: float) -> str:
    if tr.kind == "pedestrian":
        return "pedestrian.moving" if speed > 0.2 else "pedestrian.standing"
    if tr.state == "parked":
        return "vehicle.parked"
    return "vehicle.moving" if speed > 0.3 else "vehicle.stopped"


class MapWriter:
    """Collects the map-expansion layers of all scenes (each shifted into its own square)."""

    LAYERS = ("polygon", "line", "node", "drivable_area", "road_segment", "road_block", "lane", "ped_crossing",
              "walkway", "stop_line", "carpark_area", "road_divider", "lane_divider", "traffic_light",
              "lane_connector")

    def __init__(self, seed: int, p: SynthParams):
        self.seed, self.p = seed, p
        self.m = {k: [] for k in self.LAYERS}
        self.arclines: dict[str, list] = {}
        self.connectivity: dict[str, dict] = {}

    def _node(self, key, x, y) -> str:
        tok = make_token(self.seed, "node", *key)
        self.m["node"].append({"token": tok, "x": round(float(x), 3), "y": round(float(y), 3)})
        return tok

    def _polygon(self, key, exterior: np.ndarray, holes=()) -> str:
        ext = [self._node(key + ("e", i), x, y) for i, (x, y) in enumerate(exterior)]
        hs = [{"node_tokens": [self._node(key + ("h", j, i), x, y) for i, (x, y) in enumerate(h)]}
              for j, h in enumerate(holes)]
        tok = make_token(self.seed, "polygon", *key)
        self.m["polygon"].append({"token": tok, "exterior_node_tokens": ext, "holes": hs})
        return tok

    def _line(self, key, pts: np.ndarray) -> str:
        tok = make_token(self.seed, "line", *key)
        self.m["line"].append({"token": tok, "node_tokens": [self._node(key + (i,), x, y) for i, (x, y) in
                                                             enumerate(pts)]})
        return tok

    def add_layout(self, idx: int, layout: Layout, offset: np.ndarray) -> None:
        ox, oy = float(offset[0]), float(offset[1])
        half = self.p.lane_width / 2
        pieces: dict[str, list[str]] = {}
        for lid, lane in layout.lanes.items():
            parts = [lane.path] if lane.connector else lane.path.split(self.p.map_lane_piece)
            pieces[lid] = []
            for k, part in enumerate(parts):
                key = (idx, lid, k)
                tok = make_token(self.seed, "lane", *key)
                pieces[lid].append(tok)
                poly = self._polygon(key, _strip(part, -half, half) + offset)
                self.arclines[tok] = part.arclines(ox, oy)
                if lane.connector:
                    self.m["lane_connector"].append({"token": tok, "polygon_token": poly})
                else:
                    self.m["lane"].append({
                        "token": tok, "polygon_token": poly, "lane_type": "CAR",
                        "from_edge_line_token": self._line(key + ("from",), _edge(part, 0.0, half) + offset),
                        "to_edge_line_token": self._line(key + ("to",), _edge(part, part.length, half) + offset),
                        "left_lane_divider_segments": [], "right_lane_divider_segments": []})
        for lid, lane in layout.lanes.items():
            toks = pieces[lid]
            for k, tok in enumerate(toks):
                incoming = [toks[k - 1]] if k > 0 else [pieces[q][-1] for q in lane.prev]
                outgoing = [toks[k + 1]] if k + 1 < len(toks) else [pieces[q][0] for q in lane.next]
                self.connectivity[tok] = {"incoming": incoming, "outgoing": outgoing}
        polys = []
        for j, g in enumerate(getattr(layout.drivable, "geoms", [layout.drivable])):
            ext = np.asarray(g.exterior.coords)[:-1] + offset
            holes = [np.asarray(h.coords)[:-1] + offset for h in g.interiors]
            polys.append(self._polygon((idx, "drivable", j), ext, holes))
        self.m["drivable_area"].append({"token": make_token(self.seed, "drivable_area", idx), "polygon_tokens": polys})
        if layout.junction_box is not None:  # the junction square, as nuScenes marks it: an intersection road segment
            hx, hy = layout.junction_box
            square = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]]) + offset
            self.m["road_segment"].append({"token": make_token(self.seed, "road_segment", idx),
                                           "polygon_token": self._polygon((idx, "junction"), square),
                                           "is_intersection": True, "drivable_area_token": ""})
        for j, cw in enumerate(layout.crosswalks):
            poly = self._polygon((idx, "crosswalk", j), np.asarray(cw.exterior.coords)[:-1] + offset)
            self.m["ped_crossing"].append({"token": make_token(self.seed, "ped_crossing", idx, j),
                                           "polygon_token": poly, "road_segment_token": ""})

    def write(self, root: FsPath, canvas: tuple[float, float]) -> None:
        obj = {"version": "1.3", "canvas_edge": [float(canvas[0]), float(canvas[1])], **self.m,
               "arcline_path_3": self.arclines, "connectivity": self.connectivity}
        folder = root / "maps" / "expansion"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{MAP_LOCATION}.json").write_text(json.dumps(obj))


def _edge(path: Path, s: float, half: float) -> np.ndarray:
    x, y, h = path.poses_at(np.array([s]))[0]
    n = np.array([-math.sin(h), math.cos(h)])
    return np.stack([np.array([x, y]) + half * n, np.array([x, y]) - half * n])


def write_map_mask(root: FsPath, seed: int, layouts: list[tuple[Layout, np.ndarray]], canvas: tuple[float, float],
                   metres_per_px: float = 5.0) -> str:
    """A coarse drivable-area overview PNG (the devkit only checks that the `map` table's mask exists)."""
    w, h = int(math.ceil(canvas[0] / metres_per_px)), int(math.ceil(canvas[1] / metres_per_px))
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for layout, offset in layouts:
        for g in getattr(layout.drivable, "geoms", [layout.drivable]):
            pts = (np.asarray(g.exterior.coords) + offset) / metres_per_px
            pts[:, 1] = h - pts[:, 1]  # image rows grow downwards
            draw.polygon([tuple(q) for q in pts.tolist()], fill=255)
            for hole in g.interiors:
                pts = (np.asarray(hole.coords) + offset) / metres_per_px
                pts[:, 1] = h - pts[:, 1]
                draw.polygon([tuple(q) for q in pts.tolist()], fill=0)
    name = f"maps/{make_token(seed, 'mask')}.png"
    (root / "maps").mkdir(parents=True, exist_ok=True)
    img.save(root / name, optimize=True)
    return name
