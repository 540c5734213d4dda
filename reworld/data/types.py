"""What the model may see (Observation) kept apart, by type, from ground truth (Target).

Coordinates: the ego frame at the current key frame t=0: x forward, y left, heading counter-clockwise,
metres and radians. Commands are indices into COMMANDS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

COMMANDS = ("left", "straight", "right")
AGENT_TYPES = ("vehicle", "pedestrian", "cyclist", "static")


@dataclass(frozen=True)
class AgentTrack:
    """One other road user, in the ego frame at t=0, as NAVSIM's observation has it: annotated over the plan's horizon
    + 1 s, there from its first row to its last (linear in between), or, with one row, standing at every step."""

    id: str
    type: str  # one of AGENT_TYPES
    length: float  # [m]
    width: float  # [m]
    track: np.ndarray  # (N, 4) rows [t (s from 0), x (m), y (m), heading (rad)]; one row = standing throughout


@dataclass(frozen=True)
class Observation:
    """What a planner/world model is allowed to see at t=0."""

    frames: torch.Tensor  # (T_ctx, 3, H, W) float32 in [-1, 1], the last one at t=0
    ego_status: torch.Tensor  # (3,) [speed m/s, longitudinal acceleration m/s², yaw rate rad/s]
    command: int  # index into COMMANDS


@dataclass(frozen=True)
class Target:
    """Ground truth over the horizon; never an input to a model."""

    frames: torch.Tensor  # (T_fut, 3, H, W) float32 in [-1, 1]
    trajectory: torch.Tensor  # (8, 3) future ego poses [x, y, heading] at 0.5 … 4.0 s
    agents: list[AgentTrack] = field(default_factory=list)
    drivable_area: list[np.ndarray] = field(default_factory=list)  # polygons, each (M, 2) [m]
    # the holes of each drivable polygon (traffic islands, medians, blocks), aligned with `drivable_area`: a list
    # of (M, 2) rings per polygon; empty: no holes anywhere
    drivable_holes: list[list[np.ndarray]] = field(default_factory=list)
    lanes: list[np.ndarray] = field(default_factory=list)  # lane and lane-connector polygons [m]
    intersections: list[np.ndarray] = field(default_factory=list)  # intersection polygons [m] (road segments)
    centerline: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2) route centreline [m]
    ego_size: tuple[float, float] = (4.5, 1.9)  # (length, width) [m]
    ego_center_offset: float = 0.0  # [m] box centre ahead of the pose point (nuScenes: rear axle, ~1.385)


@dataclass(frozen=True)
class Clip:
    scene_name: str
    sample_token: str
    timestamp: int  # [µs] of the t=0 key frame
    observation: Observation
    target: Target


@dataclass(frozen=True)
class FrameLabels:
    """What the world knows exactly about every frame of a clip (context and future), read from the tables, never
    from a model: the targets of the video judge (`reworld.evaluation.judge`). Times are each frame's own capture
    time, so the labels describe exactly the image shown.

    The lead vehicle is the nearest vehicle (`AGENT_TYPES` "vehicle") in the camera's view whose centre lies within
    `LEAD_CORRIDOR_M` of the path the ego actually drives next (its logged poses from that frame on, extended straight
    past the end of the log) and at most `LEAD_RANGE_M` along it: its own lane, the next lane and the shoulder, so the
    offset tells a leader (≈ 0) from oncoming (≈ +3.5 m) and parked (≈ −3 m) cars. Its distance is the arc length
    along that path from the ego pose point to the vehicle's centre, its offset the signed distance from the path
    (left positive). In the synthetic world a same-lane rule (±2 m) finds a vehicle in 11 % of frames, this one in
    about half. Annotations are interpolated linearly between key frames, as nuscenes-devkit's `get_boxes` does for
    sweeps, with one difference: the devkit gives a key-frame camera image its sample's boxes, annotated at the LIDAR
    time 35 ms later (0.35 m at 10 m/s of relative speed); here every frame, key or not, is read at its own time."""

    time: np.ndarray  # (T,) [s] capture time of each frame from that of the t = 0 frame
    ego_pose: np.ndarray  # (T, 3) [x m, y m, heading rad] in the ego frame of the t = 0 frame (x forward, y left)
    speed: np.ndarray  # (T,) [m/s]
    lead: np.ndarray  # (T, 3) [present 0 / 1, distance m, lateral offset m]; distance and offset NaN when absent
    command: int  # index into COMMANDS (the clip's, as Observation.command)


LEAD_RANGE_M = 40.0  # [m] along the ego's path: farther vehicles are a few pixels in a 64×128 frame
LEAD_CORRIDOR_M = 6.0  # [m] either side of the path: the ego lane, the next lane and the shoulder
