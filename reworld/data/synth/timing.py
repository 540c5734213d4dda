"""When each sensor of a synthetic scene fires, and the road users' states at those times.

Two timings (`SynthParams.timing`):

- "nuscenes" (default): the timing of real nuScenes. LIDAR_TOP sweeps at 20 Hz time the samples; consecutive
  samples are 9, 10 or 11 sweeps (450 / 500 / 550 ms) apart, in random order, summing to the scene length;
  CAM_FRONT fires `cam_lag_us` (35 ms) before each sample's LIDAR sweep and six times per key-frame interval, in
  steps of 50 and 100 ms (about 12 Hz); every sample_data record has its own ego pose, so the two sensors' poses
  interleave in time, and the ego body pitches and rolls a little.
- "uniform" (synth-1.0, the world the shipped checkpoints were trained on): the camera alone, exactly every
  1/12 s, a key frame every sixth, no pitch or roll.

The scene is simulated on the uniform camera grid (`traffic.simulate_scene`); states at other times are
interpolated linearly (positions, speeds) and along the shortest arc (headings). At 12 Hz and the synthetic
world's speeds and curvatures that interpolation is within millimetres of the simulated path.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from reworld.data.synth.params import SynthParams
from reworld.data.synth.traffic import Track

TIMINGS = ("nuscenes", "uniform")


@dataclass(frozen=True)
class SensorTimes:
    """Times [µs] from the scene's start; the sample times are the key frames' LIDAR times (uniform: the
    camera's)."""

    samples: np.ndarray  # (S,) int64
    camera: np.ndarray  # (F,) int64
    camera_key: np.ndarray  # (F,) bool, S of them, in order
    lidar: np.ndarray  # (L,) int64; empty without LIDAR ("uniform")
    lidar_key: np.ndarray  # (L,) bool


def sensor_times(rng: np.random.Generator, n_samples: int, p: SynthParams) -> SensorTimes:
    """The sensor timing of one scene with `n_samples` samples (`p.timing`)."""
    if p.timing == "uniform":
        ke = p.keyframe_every
        n_frames = (n_samples - 1) * ke + 1
        cam = np.array([round(k * 1e6 / p.sweep_hz) for k in range(n_frames)], dtype=np.int64)
        key = np.arange(n_frames) % ke == 0
        return SensorTimes(cam[key], cam, key, np.zeros(0, np.int64), np.zeros(0, bool))
    if p.timing != "nuscenes":
        raise ValueError(f"timing must be one of {TIMINGS}, got {p.timing!r}")
    sweep = round(1e6 / p.lidar_hz)  # [µs]
    n_int = n_samples - 1
    # the first sample one sweep after the start, so its camera frame (cam_lag_us earlier) is inside the scene
    total = round(p.scene_seconds * 1e6) // sweep - 1  # [sweeps] from the first to the last sample
    ticks = np.full(n_int, 10, dtype=np.int64)
    deficit = int(total - ticks.sum())
    if abs(deficit) > n_int:
        raise ValueError(f"{n_samples} samples cannot span {p.scene_seconds} s at 450–550 ms")
    ticks[rng.choice(n_int, size=abs(deficit), replace=False)] += int(np.sign(deficit))
    tens = np.flatnonzero(ticks == 10)
    pairs = rng.permutation(tens)[: 2 * (len(tens) // 4)]  # half of the 500 ms intervals become 450 + 550
    ticks[pairs[0::2]], ticks[pairs[1::2]] = 9, 11
    key_ticks = 1 + np.concatenate([[0], np.cumsum(ticks)])
    lidar = np.arange(1, key_ticks[-1] + 1, dtype=np.int64) * sweep
    lidar_key = np.isin(np.arange(1, key_ticks[-1] + 1), key_ticks)
    samples = key_ticks * sweep
    cam, cam_key = [int(samples[0] - p.cam_lag_us)], [True]
    for m, n in enumerate(ticks):
        interval_ms = int(n) * sweep // 1000
        long_steps = (interval_ms - 50 * p.keyframe_every) // 50  # six steps of 50 or 100 ms
        steps = rng.permutation([100] * long_steps + [50] * (p.keyframe_every - long_steps))
        start = int(samples[m] - p.cam_lag_us)
        cam.extend(start + int(s) * 1000 for s in np.cumsum(steps)[:-1])
        cam.append(int(samples[m + 1] - p.cam_lag_us))
        cam_key.extend([False] * (p.keyframe_every - 1) + [True])
    return SensorTimes(samples, np.array(cam, dtype=np.int64), np.array(cam_key), lidar, lidar_key)


def tracks_at(tracks: list[Track], times_us: np.ndarray, p: SynthParams) -> list[Track]:
    """Each track's state at `times_us` [µs from the scene start], from the simulation's uniform grid."""
    t = np.asarray(times_us, dtype=np.float64) * 1e-6
    n = len(tracks[0].xy)
    grid = np.arange(n) / p.sweep_hz
    if t.min() < -1e-9 or t.max() > grid[-1] + 1e-9:
        raise ValueError(f"sensor times {t.min():.3f}–{t.max():.3f} s outside the simulated {grid[-1]:.3f} s")
    k = np.clip(np.searchsorted(grid, t, side="right") - 1, 0, n - 2)
    w = np.clip((t - grid[k]) / (grid[k + 1] - grid[k]), 0.0, 1.0)
    on = np.clip(np.rint(t * p.sweep_hz).astype(int), 0, n - 1)
    exact = np.abs(t - grid[on]) <= 1e-6  # stamps are whole µs: within one of a grid time is that time
    out = []
    for tr in tracks:
        dyaw = (tr.yaw[k + 1] - tr.yaw[k] + np.pi) % (2 * np.pi) - np.pi
        xy = tr.xy[k] * (1 - w)[:, None] + tr.xy[k + 1] * w[:, None]
        yaw = tr.yaw[k] + w * dyaw
        speed = tr.speed[k] * (1 - w) + tr.speed[k + 1] * w
        xy[exact], yaw[exact], speed[exact] = tr.xy[on[exact]], tr.yaw[on[exact]], tr.speed[on[exact]]
        out.append(dataclasses.replace(tr, xy=xy, yaw=yaw, speed=speed))
    return out


def body_pitch_roll(phase: np.ndarray, times_us: np.ndarray, p: SynthParams) -> tuple[np.ndarray, np.ndarray]:
    """Small pitch and roll [rad] of the ego body at `times_us` (zero with the uniform timing); `phase` (2,) is the
    scene's, so every sensor's pose agrees."""
    t = np.asarray(times_us, dtype=np.float64) * 1e-6
    if p.timing == "uniform":
        return np.zeros_like(t), np.zeros_like(t)
    return (p.body_pitch_rad * np.sin(2 * np.pi * t / 3.7 + phase[0]),
            p.body_roll_rad * np.sin(2 * np.pi * t / 2.9 + phase[1]))
