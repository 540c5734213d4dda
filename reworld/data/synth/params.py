"""Constants of the synthetic world, in one frozen dataclass (units in the comments)."""
from __future__ import annotations

from dataclasses import dataclass

GENERATOR_VERSION = "synth-1.1"
# what each generator version changes from the defaults: 1.1 has nuScenes' sensor timing and median islands (drivable
# area holes); 1.0 is the world the shipped checkpoints were trained on (reproduced byte for byte)
GENERATORS = {"synth-1.1": {}, "synth-1.0": {"timing": "uniform", "median_islands": False}}
MAP_LOCATION = "boston-seaport"  # NuScenesMap accepts only the four built-in location names


@dataclass(frozen=True)
class SynthParams:
    # timing
    scene_seconds: float = 20.0  # [s] length of a scene (rounded to whole key-frame intervals)
    sweep_hz: int = 12  # [Hz] camera frames (sweeps + key frames)
    keyframe_every: int = 6  # a key frame every this many camera frames (12 Hz / 6 = 2 Hz)
    # "nuscenes": LIDAR_TOP at 20 Hz times the samples (450–550 ms apart), CAM_FRONT cam_lag_us earlier in 50 / 100 ms
    # steps, ego pitch and roll; "uniform": the camera alone every 1/12 s (synth-1.0). reworld.data.synth.timing
    timing: str = "nuscenes"
    lidar_hz: int = 20  # [Hz]
    cam_lag_us: int = 35_000  # [µs] CAM_FRONT key frame before the sample's LIDAR sweep
    body_pitch_rad: float = 0.006  # [rad] amplitude of the ego body's pitch (nuscenes timing)
    body_roll_rad: float = 0.004  # [rad] and roll
    scenes_per_log: int = 2  # consecutive scenes recorded in one log (nuscenes timing)
    # road geometry
    lane_width: float = 3.5  # [m]
    shoulder_width: float = 2.5  # [m] drivable strip beyond the edge line (parking)
    sidewalk_width: float = 2.5  # [m] not drivable
    junction_margin: float = 6.0  # [m] junction square beyond the crossing road's shoulders
    arm_length: float = 330.0  # [m] from a junction's centre to the end of an arm
    median_islands: bool = True  # straight roads get a kerbed island on the centre line (a drivable-area hole)
    island_length: float = 14.0  # [m]
    island_width: float = 0.6  # [m] leaves 0.2 m to a 2.5 m wide bus at its lane centre
    map_lane_piece: float = 80.0  # [m] longest lane record written to the map
    scene_spacing: float = 1000.0  # [m] each scene lives in its own square of the one map location
    # ego driving
    ego_length: float = 4.5  # [m]
    ego_width: float = 1.9  # [m]
    ego_height: float = 1.6  # [m]
    ego_speed_min: float = 8.5  # [m/s] desired cruise speed range
    ego_speed_max: float = 11.5  # [m/s]
    lat_acc_comfort: float = 1.8  # [m/s²] curve speed limit uses this
    brake_comfort: float = 1.2  # [m/s²] planned deceleration ahead of curves
    acc_max: float = 1.3  # [m/s²]
    dec_max: float = 3.0  # [m/s²]
    jerk_max: float = 2.0  # [m/s³] acceleration rate limit
    idm_time_gap: float = 1.5  # [s]
    idm_min_gap: float = 3.5  # [m] bumper to bumper
    idm_comfort_dec: float = 1.8  # [m/s²] IDM b
    lookahead: float = 70.0  # [m] how far a driver looks for a leader
    # camera (nuScenes CAM_FRONT intrinsics at 1600x900, scaled per axis to the image size)
    cam_fx: float = 1266.4
    cam_fy: float = 1266.4
    cam_cx: float = 816.3
    cam_cy: float = 491.5
    cam_ref_width: int = 1600  # [px]
    cam_ref_height: int = 900  # [px]
    cam_forward: float = 1.5  # [m] camera ahead of the ego_pose point (box centre)
    cam_height: float = 1.5  # [m]
    # rendering
    ground_res: float = 0.1  # [m/px] of the top-down ground texture
    ground_margin: float = 160.0  # [m] ground texture around the ego's path
    supersample: int = 2  # render at this factor and box-filter down
    draw_distance: float = 160.0  # [m] objects farther than this are not drawn
    fog_distance: float = 260.0  # [m] haze e-folding distance
    jpeg_quality: int = 90
    annotate_radius: float = 80.0  # [m] agents within this of the ego get annotations
