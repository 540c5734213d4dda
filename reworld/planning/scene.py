"""A planning scene: what the PDM scorer needs, readable from a Clip or from JSON, strictly validated.

Coordinates are the ego frame at t=0 (x forward, y left, heading counter-clockwise; metres, radians,
seconds). JSON schema::

    scene.json: {"ego": {"speed", "acceleration", "yaw_rate", "length", "width"},
                 "command": "left" | "straight" | "right" | "unknown",
                 "drivable_area": [[[x, y], ...], ...],          # polygons (exteriors)
                 "drivable_holes": [[[[x, y], ...], ...], ...],  # optional; per polygon, its holes (islands)
                 "lanes": [[[x, y], ...], ...],                  # optional; lane and lane-connector polygons
                 "intersections": [[[x, y], ...], ...],          # optional; intersection polygons
                 "centerline": [[x, y], ...],                    # route centreline
                 "agents": [{"id", "type", "length", "width",
                             "track": [[t, x, y, heading], ...]}],  # t in s from 0 (to 5 s); there from
                                                    # its first row to its last; one row = there, standing, throughout
                 "expert": [[x, y, heading] x 8]}                # optional; poses at 0.5 ... 4.0 s
    traj.json:  {"poses": [[x, y, heading] x 8]}

Any missing or malformed field, wrong shape, NaN or inf raises `SceneFormatError` naming the field.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from reworld.arrays import finite_rows
from reworld.data.types import AGENT_TYPES, COMMANDS, AgentTrack, Clip

SCENE_COMMANDS = (*COMMANDS, "unknown")
NUM_POSES = 8  # poses per trajectory, at 0.5 ... 4.0 s
EGO_KEYS = ("speed", "acceleration", "yaw_rate", "length", "width")
AGENT_KEYS = ("id", "type", "length", "width", "track")


class SceneFormatError(ValueError):
    """A scene or trajectory that does not follow the schema; the message names the field."""


# --------------------------------------------------------------------------- field validators


def _number(value: Any, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SceneFormatError(f"{where}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise SceneFormatError(f"{where}: expected a finite number, got {value}")
    if positive and value <= 0:
        raise SceneFormatError(f"{where}: expected a positive number, got {value}")
    return value


def _array(value: Any, where: str, cols: int, what: str, min_rows: int = 1) -> np.ndarray:
    """A finite float (R, cols) array with R >= min_rows; `what` describes a row for the message."""
    return finite_rows(value, where, what, cols=cols, min_rows=min_rows, error=SceneFormatError)


def validate_poses(poses: Any, where: str = "poses") -> np.ndarray:
    """A finite (8, 3) float array of [x, y, heading] at 0.5 ... 4.0 s, or SceneFormatError."""
    if hasattr(poses, "detach"):  # torch tensor
        poses = poses.detach().cpu().numpy()
    arr = _array(poses, where, 3, "[x, y, heading]")
    if arr.shape[0] != NUM_POSES:
        raise SceneFormatError(f"{where}: expected {NUM_POSES} poses [x, y, heading], got {arr.shape[0]}")
    return arr


def _validate_agent(agent: Any, where: str) -> AgentTrack:
    if not isinstance(agent, AgentTrack):
        raise SceneFormatError(f"{where}: expected an AgentTrack, got {type(agent).__name__}")
    if not isinstance(agent.id, str) or not agent.id:
        raise SceneFormatError(f"{where}.id: expected a non-empty string")
    if agent.type not in AGENT_TYPES:
        raise SceneFormatError(f"{where}.type: expected one of {list(AGENT_TYPES)}, got {agent.type!r}")
    length = _number(agent.length, f"{where}.length", positive=True)
    width = _number(agent.width, f"{where}.width", positive=True)
    track = _array(agent.track, f"{where}.track", 4, "[t, x, y, heading]")
    if (track[:, 0] < 0).any():
        raise SceneFormatError(f"{where}.track: times must be >= 0 s")
    if (np.diff(track[:, 0]) <= 0).any():
        raise SceneFormatError(f"{where}.track: times must be strictly increasing")
    return AgentTrack(id=agent.id, type=agent.type, length=length, width=width, track=track)


# --------------------------------------------------------------------------- the scene


@dataclass(frozen=True, eq=False)
class MapLayer:
    """The polygons of one map layer, prepared, with their bounding boxes (P, 4): min x, min y, max x, max y."""
    polygons: list
    bounds: np.ndarray

    @classmethod
    def of(cls, rings: list[np.ndarray]) -> MapLayer:
        polygons = [shapely.Polygon(r) for r in rings]
        for g in polygons:
            shapely.prepare(g)
        return cls(polygons, shapely.bounds(np.array(polygons, dtype=object)).reshape(-1, 4))

    def contains(self, x: np.ndarray, y: np.ndarray):
        """Per polygon, whether each point (x, y) lies strictly inside it (shapely's `contains_xy`): one bool array
        of x's shape per polygon. Only the points inside a polygon's bounding box are tested (the same answer)."""
        for geom, (x0, y0, x1, y1) in zip(self.polygons, self.bounds):
            near = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
            inside = np.zeros(x.shape, dtype=bool)
            if near.any():
                inside[near] = shapely.contains_xy(geom, x[near], y[near])
            yield inside


@dataclass(frozen=True, eq=False)
class PlanningScene:
    """Everything the PDM scorer needs about one moment, in the ego frame at t=0."""

    ego_speed: float  # [m/s]
    ego_acceleration: float  # [m/s²] longitudinal
    ego_yaw_rate: float  # [rad/s]
    ego_length: float  # [m]
    ego_width: float  # [m]
    command: str  # one of SCENE_COMMANDS
    drivable_area: list[np.ndarray]  # polygons, each (M, 2) [m], M >= 3
    centerline: np.ndarray  # (K, 2) route centreline [m]; K < 2 means none (progress along x)
    agents: list[AgentTrack] = field(default_factory=list)
    expert: np.ndarray | None = None  # (8, 3) logged future [x, y, heading] at 0.5 ... 4.0 s
    # holes of each drivable polygon (islands, medians, blocks): one list of (M, 2) rings per polygon, aligned with
    # `drivable_area`; empty: no holes
    drivable_holes: list[list[np.ndarray]] = field(default_factory=list)
    # map layers NAVSIM's at-fault and TTC rules read (optional; without them the ego is never "in several
    # lanes" or "in an intersection"): lane and lane-connector polygons, intersection polygons
    lanes: list[np.ndarray] = field(default_factory=list)
    intersections: list[np.ndarray] = field(default_factory=list)
    # [m] where the ego box's centre lies ahead of the pose point, along the heading: 0 when the poses are box
    # centres (the synthetic world), ~1.385 for nuScenes, whose ego frame is the midpoint of the rear axle
    # (Renault Zoe: 4.084 m long, 2.588 m wheelbase); NAVSIM's poses are rear-axle poses too (Pacifica, 1.461 m)
    ego_center_offset: float = 0.0

    def __post_init__(self) -> None:
        # Validation happens here so every constructor (JSON, Clip, by hand) goes through it.
        set_ = object.__setattr__
        set_(self, "ego_speed", _number(self.ego_speed, "ego.speed"))
        if self.ego_speed < 0:
            raise SceneFormatError(f"ego.speed: expected >= 0 m/s, got {self.ego_speed}")
        set_(self, "ego_acceleration", _number(self.ego_acceleration, "ego.acceleration"))
        set_(self, "ego_yaw_rate", _number(self.ego_yaw_rate, "ego.yaw_rate"))
        set_(self, "ego_length", _number(self.ego_length, "ego.length", positive=True))
        set_(self, "ego_width", _number(self.ego_width, "ego.width", positive=True))
        set_(self, "ego_center_offset", _number(self.ego_center_offset, "ego.center_offset"))
        if abs(self.ego_center_offset) > self.ego_length / 2:
            raise SceneFormatError(f"ego.center_offset: {self.ego_center_offset} m puts the pose outside the "
                                   f"{self.ego_length} m long box")
        if self.command not in SCENE_COMMANDS:
            raise SceneFormatError(f"command: expected one of {list(SCENE_COMMANDS)}, got {self.command!r}")
        if not isinstance(self.drivable_area, (list, tuple)) or not self.drivable_area:
            raise SceneFormatError("drivable_area: expected a non-empty list of polygons")
        polys = [
            _array(p, f"drivable_area[{i}]", 2, "[x, y]", min_rows=3) for i, p in enumerate(self.drivable_area)
        ]
        set_(self, "drivable_area", polys)
        holes = self.drivable_holes if self.drivable_holes is not None else []
        if not isinstance(holes, (list, tuple)):
            raise SceneFormatError("drivable_holes: expected a list (one list of rings per drivable polygon)")
        if holes and len(holes) != len(polys):
            raise SceneFormatError(f"drivable_holes: expected one list of rings per drivable polygon ({len(polys)}), "
                                   f"got {len(holes)}")
        checked = []
        for i, rings in enumerate(holes):
            if not isinstance(rings, (list, tuple)):
                raise SceneFormatError(f"drivable_holes[{i}]: expected a list of rings")
            checked.append([_array(r, f"drivable_holes[{i}][{j}]", 2, "[x, y]", min_rows=3)
                            for j, r in enumerate(rings)])
        set_(self, "drivable_holes", checked)
        for key in ("lanes", "intersections"):
            value = getattr(self, key) if getattr(self, key) is not None else []
            if not isinstance(value, (list, tuple)):
                raise SceneFormatError(f"{key}: expected a list of polygons")
            set_(self, key, [_array(p, f"{key}[{i}]", 2, "[x, y]", min_rows=3) for i, p in enumerate(value)])
        centerline = np.asarray(self.centerline, dtype=np.float64)
        if centerline.size == 0:
            centerline = np.zeros((0, 2))
        set_(self, "centerline", _array(centerline, "centerline", 2, "[x, y]", min_rows=0))
        if not isinstance(self.agents, (list, tuple)):
            raise SceneFormatError("agents: expected a list")
        agents = [_validate_agent(a, f"agents[{i}]") for i, a in enumerate(self.agents)]
        ids = [a.id for a in agents]
        if len(set(ids)) != len(ids):
            raise SceneFormatError("agents: ids must be unique")
        set_(self, "agents", agents)
        if self.expert is not None:
            set_(self, "expert", validate_poses(self.expert, "expert"))

    # ------------------------------------------------------------------ derived geometry (cached)

    @cached_property
    def drivable_geometry(self) -> shapely.Geometry:
        """Union of the drivable polygons (each minus its holes), prepared for fast point queries."""
        holes = self.drivable_holes or [[] for _ in self.drivable_area]
        polys = shapely.make_valid(np.array([shapely.Polygon(p, rings) for p, rings in zip(self.drivable_area, holes)]))
        union = shapely.union_all(polys)
        shapely.prepare(union)
        return union

    @cached_property
    def lane_geometries(self) -> MapLayer:
        """`lanes` as prepared polygons with their bounding boxes, for point queries."""
        return MapLayer.of(self.lanes)

    @cached_property
    def intersection_geometries(self) -> MapLayer:
        """`intersections` as prepared polygons with their bounding boxes, for point queries."""
        return MapLayer.of(self.intersections)

    @cached_property
    def centerline_geometry(self) -> shapely.LineString | None:
        """The route centreline as a LineString; None when it has fewer than two distinct points."""
        if len(self.centerline) < 2:
            return None
        line = shapely.linestrings(self.centerline)
        return line if line.length > 0 else None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_clip(cls, clip: Clip) -> "PlanningScene":
        status = np.asarray(clip.observation.ego_status.detach().cpu().numpy(), dtype=np.float64).reshape(-1)
        if status.shape != (3,):
            raise SceneFormatError(f"observation.ego_status: expected 3 values, got {status.shape}")
        command = clip.observation.command
        if not isinstance(command, (int, np.integer)) or not 0 <= int(command) < len(COMMANDS):
            raise SceneFormatError(f"observation.command: expected an index into {list(COMMANDS)}, got {command!r}")
        length, width = clip.target.ego_size
        return cls(
            ego_speed=status[0],
            ego_acceleration=status[1],
            ego_yaw_rate=status[2],
            ego_length=length,
            ego_width=width,
            ego_center_offset=float(getattr(clip.target, "ego_center_offset", 0.0)),
            command=COMMANDS[int(command)],
            drivable_area=list(clip.target.drivable_area),
            drivable_holes=list(getattr(clip.target, "drivable_holes", [])),
            lanes=list(getattr(clip.target, "lanes", [])),
            intersections=list(getattr(clip.target, "intersections", [])),
            centerline=clip.target.centerline,
            agents=list(clip.target.agents),
            expert=clip.target.trajectory,
        )

    @classmethod
    def from_json_dict(cls, d: Any) -> "PlanningScene":
        if not isinstance(d, dict):
            raise SceneFormatError(f"scene: expected an object, got {type(d).__name__}")
        for key in ("ego", "command", "drivable_area", "centerline", "agents"):
            if key not in d:
                raise SceneFormatError(f"{key}: missing")
        ego = d["ego"]
        if not isinstance(ego, dict):
            raise SceneFormatError("ego: expected an object")
        for key in EGO_KEYS:
            if key not in ego:
                raise SceneFormatError(f"ego.{key}: missing")
        if not isinstance(d["command"], str):
            raise SceneFormatError("command: expected a string")
        if not isinstance(d["drivable_area"], list):
            raise SceneFormatError("drivable_area: expected a list of polygons")
        if not isinstance(d["agents"], list):
            raise SceneFormatError("agents: expected a list")
        agents = []
        for i, a in enumerate(d["agents"]):
            where = f"agents[{i}]"
            if not isinstance(a, dict):
                raise SceneFormatError(f"{where}: expected an object")
            for key in AGENT_KEYS:
                if key not in a:
                    raise SceneFormatError(f"{where}.{key}: missing")
            if not isinstance(a["id"], str):
                raise SceneFormatError(f"{where}.id: expected a string")
            if not isinstance(a["type"], str):
                raise SceneFormatError(f"{where}.type: expected a string")
            track = _array(a["track"], f"{where}.track", 4, "[t, x, y, heading]")
            agents.append(AgentTrack(id=a["id"], type=a["type"], length=a["length"], width=a["width"], track=track))
        expert = d.get("expert")
        return cls(
            ego_speed=ego["speed"],
            ego_acceleration=ego["acceleration"],
            ego_yaw_rate=ego["yaw_rate"],
            ego_length=ego["length"],
            ego_width=ego["width"],
            ego_center_offset=ego.get("center_offset", 0.0),
            command=d["command"],
            drivable_area=list(d["drivable_area"]),
            centerline=_array(d["centerline"], "centerline", 2, "[x, y]", min_rows=2),
            agents=agents,
            expert=None if expert is None else validate_poses(expert, "expert"),
            drivable_holes=d.get("drivable_holes") or [],
            lanes=d.get("lanes") or [],
            intersections=d.get("intersections") or [],
        )

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ego": {
                "speed": self.ego_speed,
                "acceleration": self.ego_acceleration,
                "yaw_rate": self.ego_yaw_rate,
                "length": self.ego_length,
                "width": self.ego_width,
                **({"center_offset": self.ego_center_offset} if self.ego_center_offset else {}),
            },
            "command": self.command,
            "drivable_area": [p.tolist() for p in self.drivable_area],
            **({"drivable_holes": [[r.tolist() for r in rings] for rings in self.drivable_holes]}
               if any(self.drivable_holes) else {}),
            **({"lanes": [p.tolist() for p in self.lanes]} if self.lanes else {}),
            **({"intersections": [p.tolist() for p in self.intersections]} if self.intersections else {}),
            "centerline": self.centerline.tolist(),
            "agents": [
                {"id": a.id, "type": a.type, "length": a.length, "width": a.width, "track": a.track.tolist()}
                for a in self.agents
            ],
        }
        if self.expert is not None:
            out["expert"] = self.expert.tolist()
        return out


# --------------------------------------------------------------------------- files


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise SceneFormatError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SceneFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_scene(path: str | Path) -> PlanningScene:
    return PlanningScene.from_json_dict(_read_json(path))


def save_scene(scene: PlanningScene, path: str | Path) -> None:
    Path(path).write_text(json.dumps(scene.to_json_dict()))


def load_trajectory(path: str | Path) -> np.ndarray:
    """(8, 3) poses [x, y, heading] at 0.5 ... 4.0 s from a traj.json `{"poses": [...]}`."""
    d = _read_json(path)
    if not isinstance(d, dict):
        raise SceneFormatError(f"trajectory: expected an object, got {type(d).__name__}")
    if "poses" not in d:
        raise SceneFormatError("poses: missing")
    return validate_poses(d["poses"], "poses")
