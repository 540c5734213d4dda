"""`generate_world`: lay out, simulate, render and write every scene of the synthetic world."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path as FsPath
from typing import Callable

import numpy as np
import shapely

from reworld.data.synth.geometry import box_corners
from reworld.data.synth.layout import Layout, build_junction, build_road
from reworld.data.synth.params import GENERATOR_VERSION, GENERATORS, MAP_LOCATION, SynthParams
from reworld.data.synth.render import SceneRenderer, make_camera, random_lighting
from reworld.data.synth.timing import TIMINGS, sensor_times, tracks_at
from reworld.data.synth.traffic import simulate_scene
from reworld.data.synth.writer import CHANNEL, LIDAR, MapWriter, TableWriter, write_map_mask

# layouts repeat in this order; junction scenes take the commands in turn, so any world of three or more
# scenes has left and right turns, and any of five or more has all three commands
KIND_CYCLE = ("junction4", "junction3", "straight", "junction4", "curve", "junction3")
JUNCTION_COMMANDS = ("left", "right", "straight")


def plan_scenes(num_scenes: int) -> list[tuple[str, str]]:
    """(layout kind, route command) of each scene."""
    plan, n_junction = [], 0
    for i in range(num_scenes):
        kind = KIND_CYCLE[i % len(KIND_CYCLE)]
        if kind.startswith("junction"):
            plan.append((kind, JUNCTION_COMMANDS[n_junction % 3]))
            n_junction += 1
        else:
            plan.append((kind, "straight"))
    return plan


def build_layout(rng: np.random.Generator, kind: str, command: str, p: SynthParams) -> Layout:
    if kind in ("straight", "curve"):
        return build_road(rng, p, curved=kind == "curve")
    return build_junction(rng, p, four_way=kind == "junction4", command=command)


def scene_offset(idx: int, p: SynthParams) -> np.ndarray:
    """Where scene idx's local origin lies on the shared map (its own square, never overlapping)."""
    return np.array([(idx + 0.5) * p.scene_spacing, 0.5 * p.scene_spacing])


def _render_scene(layout: Layout, tracks: list, cam, light, p: SynthParams, rng: np.random.Generator,
                  paths: list[FsPath]) -> None:
    """Render and write one scene's camera frames. In a worker process the scene's random stream comes with the
    job, so the images are byte for byte the ones one process would write."""
    renderer = SceneRenderer(layout, tracks, cam, light, p, rng)
    for k, path in enumerate(paths):
        renderer.render(k).save(path, quality=p.jpeg_quality)


def default_workers() -> int:
    """Processes that render scenes: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class _SceneRenderers:
    """Renders scenes in `workers` processes (1: in this one) while the caller lays out and simulates the next ones;
    at most two scenes per worker wait; `progress(done, total)` as each scene's frames are written."""

    def __init__(self, workers: int, total: int, progress: Callable[[int, int], None] | None):
        # fork where there is one: the workers need only this module (DataLoader's workers start the same way)
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        self.pool = ProcessPoolExecutor(workers, mp_context=context) if workers > 1 else None
        self.limit, self.total, self.progress = 2 * workers, total, progress
        self.pending, self.done = deque(), 0

    def submit(self, *job) -> None:
        if self.pool is None:
            _render_scene(*job)
            self._finished()
            return
        self.pending.append(self.pool.submit(_render_scene, *job))
        while len(self.pending) >= self.limit:
            self._wait_one()

    def drain(self) -> None:
        while self.pending:
            self._wait_one()

    def _wait_one(self) -> None:
        self.pending.popleft().result()  # a worker's error is raised here
        self._finished()

    def _finished(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def __enter__(self) -> "_SceneRenderers":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def generate_world(out_dir: str | FsPath, num_scenes: int = 24, seed: int = 0, version: str = "v1.0-synth",
                   image_size: tuple[int, int] = (128, 256), progress: Callable[[int, int], None] | None = None,
                   scene_seconds: float | None = None, params: SynthParams | None = None,
                   generator: str = GENERATOR_VERSION, workers: int | None = None) -> dict:
    """Write a nuScenes-format synthetic world to out_dir and return a summary.

    image_size is (height, width) in pixels. The same seed gives byte-identical tables and images with any number of
    `workers` (processes that render scenes while this one lays out and simulates the next; default: the usable
    cores, at most 8; 1: all in this process).
    """
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    p = params or SynthParams()
    if scene_seconds is not None:
        p = dataclasses.replace(p, scene_seconds=float(scene_seconds))
    if generator not in GENERATORS:
        raise ValueError(f"generator must be one of {sorted(GENERATORS)}, got {generator!r}")
    p = dataclasses.replace(p, **GENERATORS[generator])
    if num_scenes < 1:
        raise ValueError(f"num_scenes must be at least 1, got {num_scenes}")
    if len(image_size) != 2 or min(image_size) < 16:
        raise ValueError(f"image_size must be (height, width) of at least 16 px, got {image_size}")
    n_samples = int(round(p.scene_seconds * p.sweep_hz / p.keyframe_every)) + 1
    if n_samples < 2:
        raise ValueError(f"scene_seconds={p.scene_seconds} is shorter than one key-frame interval")
    root = FsPath(out_dir)
    if p.timing not in TIMINGS:
        raise ValueError(f"timing must be one of {TIMINGS}, got {p.timing!r}")
    for stale in (root / version, *(root / f / c for f in ("samples", "sweeps") for c in (CHANNEL, LIDAR))):
        if stale.exists():
            shutil.rmtree(stale)
    for folder in ("samples", "sweeps"):
        for channel in (CHANNEL, LIDAR) if p.timing == "nuscenes" else (CHANNEL,):
            (root / folder / channel).mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    cam = make_camera(p, tuple(image_size))
    tables, maps = TableWriter(seed), MapWriter(seed, p)
    placed, meta_scenes = [], []
    counts = Counter()
    with _SceneRenderers(min(workers, num_scenes), num_scenes, progress) as renderers:
        _add_scenes(root, num_scenes, seed, image_size, p, cam, tables, maps, placed, meta_scenes, counts, renderers)
        renderers.drain()
    canvas = (num_scenes * p.scene_spacing, p.scene_spacing)
    mask = write_map_mask(root, seed, placed, canvas)
    tables.write(root, version, mask)
    maps.write(root, canvas)
    meta = {"generator": generator, "timing": p.timing, "seed": seed, "num_scenes": num_scenes, "version": version,
            "map_location": MAP_LOCATION, "image_size": list(image_size), "scene_seconds": p.scene_seconds,
            "scenes": meta_scenes}
    (root / "synth_meta.json").write_text(json.dumps(meta, indent=1))
    return {"scenes": num_scenes, "samples": counts["samples"], "sweeps": counts["sweeps"],
            "annotations": counts["annotations"], "layouts": dict(Counter(s["layout"] for s in meta_scenes)),
            "commands": dict(Counter(s["command"] for s in meta_scenes)),
            "seconds": round(time.perf_counter() - t_start, 2)}


def _add_scenes(root: FsPath, num_scenes: int, seed: int, image_size, p: SynthParams, cam, tables: TableWriter,
                maps: MapWriter, placed: list, meta_scenes: list, counts: Counter, renderers: _SceneRenderers) -> None:
    """Lay out, simulate and table every scene, in order; its frames go to `renderers`."""
    n_samples = int(round(p.scene_seconds * p.sweep_hz / p.keyframe_every)) + 1
    n_frames = (n_samples - 1) * p.keyframe_every + 1
    for idx, (kind, command) in enumerate(plan_scenes(num_scenes)):
        rng = np.random.default_rng([seed, idx])
        layout = build_layout(rng, kind, command, p)
        tracks = simulate_scene(rng, layout, p, n_frames)
        _check_ego_on_road(layout, tracks[0], p, idx)
        offset = scene_offset(idx, p)
        name = f"scene-{idx:04d}"
        # the sensor timing draws from its own stream: the layout, traffic and images' content do not depend on it
        timing_rng = np.random.default_rng([seed, idx, 1])
        times = sensor_times(timing_rng, n_samples, p)
        info = tables.add_scene(idx, name, f"synthetic {layout.kind}, {layout.command}", tracks, offset,
                                cam.intrinsic(), p, tuple(image_size), times, timing_rng.uniform(0, 2 * np.pi, 2))
        renderers.submit(layout, tracks_at(tracks, times.camera, p), cam, random_lighting(rng), p, rng,
                         [root / fname for fname in info["files"]])
        for fname in info["lidar_files"]:  # no point clouds are simulated: each sweep has zero points
            (root / fname).write_bytes(b"")
        maps.add_layout(idx, layout, offset)
        placed.append((layout, offset))
        counts["samples"] += info["samples"]
        counts["sweeps"] += info["sweeps"]
        counts["annotations"] += info["annotations"]
        meta_scenes.append({"name": name, "token": info["token"], "layout": layout.kind, "command": layout.command,
                            "route": layout.ego_route, "map_offset": offset.tolist(),
                            "lanes_each_way": len(layout.roads[0].fwd), "agents": len(tracks) - 1})


def _check_ego_on_road(layout: Layout, ego, p: SynthParams, idx: int) -> None:
    corners = box_corners(ego.xy[:, 0], ego.xy[:, 1], ego.yaw, p.ego_length, p.ego_width).reshape(-1, 2)
    if not shapely.contains_xy(layout.drivable, corners[:, 0], corners[:, 1]).all():
        raise RuntimeError(f"scene {idx}: the ego's box leaves the drivable area (generator bug)")


def world_generator(root: str | FsPath) -> str | None:
    """The generator version that wrote the synthetic world at `root` (its synth_meta.json); None when the root is
    not one (real nuScenes) or its meta is unreadable."""
    try:
        meta = json.loads((FsPath(root) / "synth_meta.json").read_text())
    except (OSError, ValueError):
        return None
    generator = meta.get("generator") if isinstance(meta, dict) else None
    return generator if isinstance(generator, str) else None
