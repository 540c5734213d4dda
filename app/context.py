"""What the callbacks share: the loaded pipelines and dataset (read-only), caches that never change what a
user sees, the model lock, and per-session stop flags keyed by Gradio's session hash. Nothing here is a
module global; `create_demo` makes one `AppContext` per app."""
from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import validate as V

DATA_FIELDS = ("image_height", "image_width", "context_frames", "future_frames", "frame_rate", "num_poses",
               "horizon_s")


class LRU:
    """A small thread-safe memo (clips, feature sets): a cache, never state a user can change for another."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key, default=None):
        """The value kept for `key` (not made, not moved), or `default`."""
        with self._lock:
            return self._data.get(key, default)

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def get(self, key, make):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = make()
        self.put(key, value)
        return value


@dataclass
class _Session:
    event: threading.Event
    pending: int = 0  # UI clicks whose job has not started yet
    running: bool = False


class StopFlags:
    """Per-session stop requests. A job calls `start` first (before validation) and `finish` in `finally`
    (`app.callbacks.stoppable`);
    `stop` only sets the flag while that session has a job pending or running, so a stray click never
    stops the next run."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def _get(self, session: str) -> _Session:
        return self._sessions.setdefault(session, _Session(threading.Event()))

    def arm(self, session: str, jobs: int = 1) -> None:
        """A UI click queued `jobs` jobs that run one after the other (called from an unqueued step before the heavy
        ones); a stop request made during any of them reaches the ones still to come. Every armed job must call
        `start` and `finish`, failed or not (chain them with `.then`, not `.success`)."""
        with self._lock:
            self._get(session).pending += jobs

    def start(self, session: str) -> threading.Event:
        with self._lock:
            s = self._get(session)
            s.pending = max(0, s.pending - 1)
            s.running = True
            return s.event

    def event(self, session: str) -> threading.Event:
        """The stop flag of the session's running job (the job called `start`)."""
        with self._lock:
            return self._get(session).event

    def finish(self, session: str) -> None:
        with self._lock:
            s = self._get(session)
            s.running = False
            if s.pending == 0:  # nothing else queued by this session: forget it (and any stop request)
                del self._sessions[session]

    def stop(self, session: str) -> bool:
        """True if there was something to stop."""
        with self._lock:
            s = self._sessions.get(session)
            if s is None or not (s.running or s.pending):
                return False
            s.event.set()
            return True


CONTEXT_CACHE = 16  # encoded contexts kept per checkpoint
SESSIONS_KEPT = 1024  # sessions whose last Generate & plan settings are remembered (a pick does not rerun them)
KEEP_FILES = 256  # output files (videos, pictures, exports) kept in out_dir; Gradio serves its own copies


def interactive_steps(ablation_dir: Path | None, name: str, checkpoint: str | Path, validated_steps: int,
                      guidance: float, digest: str | None = None) -> tuple[int, str]:
    """The sampler steps the app uses for checkpoint `name` unless the user sets them: the fewest steps that its own
    steps sweep (`python -m analysis steps-sweep`, `ablation_dir/steps_sweep_<name>.json`) found to read as its
    validated count by the video judge (docs/sampler-steps.md), with a sentence saying so; without such a sweep of
    this checkpoint (its folder name, validated steps and w, and — given `digest`, its
    `WorldActionPipeline.world_model_digest` — the very weights the sweep measured), its validated count and no
    sentence. A sweep that names no digest does not vouch for weights given one: a checkpoint re-shipped into the same
    folder gets its own sweep before the app samples it with fewer steps."""
    path = Path(ablation_dir) / f"steps_sweep_{name}.json" if ablation_dir else None
    if path is None or not path.is_file():
        return validated_steps, ""
    try:
        doc = json.loads(path.read_text())
        steps = doc["fewest_steps"]["steps"]
        same = (doc["varies"] == "steps" and Path(str(doc["checkpoint"])).name == Path(str(checkpoint)).name
                and doc["reference_steps"] == validated_steps and float(doc["guidance"]) == float(guidance)
                and (digest is None or doc.get("world_model_digest") == digest))
    except (OSError, ValueError, KeyError, TypeError):
        return validated_steps, ""
    if not same or not isinstance(steps, int) or not 1 <= steps <= validated_steps:
        return validated_steps, ""
    rows = {r.get("steps"): r for r in doc.get("rows", [])}
    got, ref = rows.get(steps, {}), rows.get(validated_steps, {})
    numbers = ""
    if isinstance(got.get("fd_judge"), float) and isinstance(ref.get("fd_judge"), float):
        numbers = (f" (fd_judge {got['fd_judge']:.2f} against {ref['fd_judge']:.2f}, mean position error "
                   f"{got.get('minus_reference_position_m_mean', 0.0):+.2f} m)")
    return steps, (f"Default steps for `{name}`: **{steps}**, the fewest its steps sweep found the video judge to read "
                   f"as its validated {validated_steps} on {doc['clips']} held-out clips{numbers}; `eval` and the "
                   f"model card use {validated_steps} (docs/sampler-steps.md).")


class AppContext:
    def __init__(self, pipelines: dict, dataset, out_dir: str | Path, ablation_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, offload: bool | None = None, toy_dir: str | Path | None = None):
        if not pipelines:
            raise ValueError("create_demo needs at least one loaded pipeline")
        self.pipelines = dict(pipelines)
        # on an accelerator, only the checkpoint at work keeps its transformers there; the others wait in host
        # memory (None: so when there is more than one checkpoint and any sits on a non-CPU device)
        self.offload = (len(self.pipelines) > 1 and any(p.device.type != "cpu" for p in self.pipelines.values())
                        if offload is None else bool(offload))
        self.dataset = dataset
        self.data_cfg = dataset.cfg
        for name, pipe in self.pipelines.items():
            V.name(name, "checkpoint", [name])  # names are shown and typed: no paths
            pipe.context_cache_size = CONTEXT_CACHE  # video, plan and analyses of one clip encode its context once
            diff = [f for f in DATA_FIELDS if getattr(pipe.clip_spec, f) != getattr(self.data_cfg, f)]
            if diff:
                raise ValueError(f"checkpoint {name!r} was trained on other clip shapes than the dataset: "
                                 + ", ".join(f"{f} {getattr(pipe.clip_spec, f)} ≠ {getattr(self.data_cfg, f)}"
                                             for f in diff))
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._files: deque[Path] = deque()  # what new_path named, oldest first
        self._files_lock = threading.Lock()
        self.ablation_dir = Path(ablation_dir) if ablation_dir else None
        # name → (default sampler steps in the app, the sentence that says where they come from)
        self.interactive = {name: interactive_steps(self.ablation_dir, name, pipe.path or name, pipe.default_steps,
                                                    pipe.default_guidance, pipe.world_model_digest())
                            for name, pipe in self.pipelines.items()}
        self.cache_dir = Path(cache_dir) if cache_dir else self.out_dir / "cache"
        self.model_lock = threading.Lock()  # one job on the models at a time, whatever the queue does
        self.stops = StopFlags()
        self.shown = LRU(SESSIONS_KEPT)  # session → the settings its Generate & plan tab last finished a run of
        self.clips = LRU(64)
        self.features = LRU(8)
        self.toy_dir = Path(toy_dir) if toy_dir else None  # the guidance toy's model folder (None: no toy view)
        self.toy_sweeps = LRU(8)  # seed → outlier rate against w
        self.sweeps = LRU(4)  # (guidance sweep on real clips, file mtime) → its JSON
        self._toy = None
        self.scenes: dict[str, list[int]] = {}
        for i, ref in enumerate(dataset.samples):
            self.scenes.setdefault(ref.scene_name, []).append(i)
        if not self.scenes:
            raise ValueError("the dataset has no usable samples (scenes too short for the clip length?)")
        nusc = getattr(dataset, "nusc", None)
        self.descriptions = {s["name"]: s.get("description", "") for s in nusc.scene} if nusc is not None else {}
        splits = getattr(dataset, "split_scenes", {}) or {}
        self.split_of = {n: split for split, names in splits.items() for n in names}

    # ---------------------------------------------------------------------------------------------
    @contextmanager
    def using(self, pipe):
        """The model lock, with `pipe`'s transformers on its device and, with `offload`, every other checkpoint's
        in host memory: one job at a time, one checkpoint's weights on the accelerator at a time."""
        with self.model_lock:
            if self.offload:
                for other in self.pipelines.values():
                    if other is not pipe and other.resident:
                        other.offload()
                pipe.onload()
            yield pipe

    @property
    def names(self) -> list[str]:
        return list(self.pipelines)

    def pipeline(self, name):
        return self.pipelines[V.name(name, "checkpoint", self.pipelines)]

    def scene_choices(self) -> list[tuple[str, str]]:
        out = []
        for name in self.scenes:
            desc = self.descriptions.get(name, "")
            out.append((f"{name} — {desc}" if desc else name, name))
        return out

    def sample_index(self, scene, index) -> int:
        """The dataset index of sample `index` of `scene`, validated."""
        scene = V.name(scene, "scene", self.scenes)
        samples = self.scenes[scene]
        k = V.count(index, f"sample index of {scene}", 0, len(samples) - 1)
        return samples[k]

    def clip(self, scene, index):
        i = self.sample_index(scene, index)
        return self.clips.get(i, lambda: self.dataset[i])

    def toy(self):
        """The guidance toy's (model, meta, density), loaded on first use; a `CheckpointError` when it is absent."""
        from reworld.guidance_toy import TreeDensity, load_toy
        from reworld.models.layers import CheckpointError

        if self._toy is None:
            if self.toy_dir is None or not self.toy_dir.is_dir():
                raise CheckpointError(f"no guidance-toy model at {self.toy_dir}: make it with `python -m analysis "
                                      "guidance-toy-model --out assets/checkpoints/guidance_toy`")
            model, meta = load_toy(self.toy_dir)
            self._toy = (model, meta, TreeDensity(meta["config"].levels))
        return self._toy

    def new_path(self, suffix: str) -> Path:
        """A fresh file name in `out_dir`. Only the last `KEEP_FILES` are kept: Gradio serves its own copy of an
        output file (its cache), so an older one of ours is only disk a long session would fill (a PNG every pick)."""
        path = self.out_dir / f"{uuid.uuid4().hex}{suffix}"
        with self._files_lock:
            self._files.append(path)
            while len(self._files) > KEEP_FILES:
                self._files.popleft().unlink(missing_ok=True)
        return path
