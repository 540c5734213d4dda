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
    """One other road user over the horizon, in the ego frame at t=0."""

    id: str
    type: str  # one of AGENT_TYPES
    length: float  # [m]
    width: float  # [m]
    track: np.ndarray  # (N, 4) rows [t (s from 0), x (m), y (m), heading (rad)]; one row = standing still


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
