"""Where a video judge's speed error comes from, on real clips (prints JSON).

    python scripts/judge_speed_profile.py --judge runs/judge [--dataroot data/synth-judgeval] [--split all]
        [--by-layout] [--json OUT]

The judge reads every clip of the split with the clips' capture times; its speed readings against the labels give:
the mean absolute error per future frame, the mean signed error (bias), the per-clip constant part of the error
(the mean over a clip's future frames, its mean absolute value) and what is left after removing it, the correlation
of the clip-mean reading with the clip-mean truth, and per scene the signed and absolute error with the true mean
speed. A reader that shrinks toward its training speeds reads slow scenes high and fast ones low.

`--by-layout` (a synthetic world: its `synth_meta.json` names each scene's road) adds, per kind of road, the slope of
the clip-mean reading on the clip-mean truth and the mean signed error of clips below 8 m/s, 8–9.5 and from 9.5 up; on
curve and straight clips the per-frame signed error regressed on the true speed and the yaw rate's magnitude (°/s);
and the two contrasts of docs/world4s.md D13. Intervals: 95 % percentile bootstrap over scenes (a scene's clips drawn
together, scenes drawn within their kind); a figure resting on fewer than 3 scenes is marked `too_few`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reworld.config import load_config, replace  # noqa: E402
from reworld.evaluation.judge import load_judge, load_judge_set, read_videos  # noqa: E402
from reworld.paths import JUDGE_CONFIG, resolve_dataroot  # noqa: E402


def speed_profile(speed: np.ndarray, truth: np.ndarray, scenes: list[str]) -> dict:
    """speed, truth (N, F) [m/s] of N clips' future frames, `scenes` the clips' scene names → the figures above."""
    err = speed - truth
    clip = err.mean(1, keepdims=True)
    names = np.asarray(scenes)
    return {
        "abs_error_per_frame": np.abs(err).mean(0).round(3).tolist(),
        "abs_error": float(np.abs(err).mean()),
        "bias": float(err.mean()),
        "clip_offset_abs": float(np.abs(clip).mean()),
        "after_clip_offset_abs": float(np.abs(err - clip).mean()),
        "clip_mean_correlation": float(np.corrcoef(speed.mean(1), truth.mean(1))[0, 1]),
        "scenes": {s: {"bias": float(err[names == s].mean()), "abs_error": float(np.abs(err[names == s]).mean()),
                       "true_speed": float(truth[names == s].mean())} for s in sorted(set(scenes))},
    }


SPEED_BINS = ((0.0, 8.0), (8.0, 9.5), (9.5, float("inf")))  # [m/s] a clip's true mean future speed
KINDS = ("curve", "straight", "junction")


def yaw_rate(pose: np.ndarray, time: np.ndarray, k0: int) -> np.ndarray:
    """(N, F) the yaw rate's magnitude [°/s] at each future frame (its heading change since the frame before over
    their interval), from (N, T, 3) poses (x, y, heading) and (N, T) frame times, frame k0 the last context frame."""
    heading = np.unwrap(pose[..., 2], axis=1)
    return np.degrees(np.abs(np.diff(heading, axis=1) / np.diff(time, axis=1)))[:, k0:]


def _layout_stats(err: np.ndarray, truth: np.ndarray, yaw: np.ndarray, kind: np.ndarray, rows: np.ndarray) -> dict:
    """The D13 figures on clips `rows` (with repeats, a bootstrap draw): keys → float (nan where a bin is empty)."""
    e, t, y, k = err[rows], truth[rows], yaw[rows], kind[rows]
    ce, ct = e.mean(1), t.mean(1)
    out = {}
    for name in KINDS:
        m = k == name
        out[f"{name}/slope"] = float(np.polyfit(ct[m], ct[m] + ce[m], 1)[0]) if m.sum() > 1 and np.ptp(ct[m]) > 0 \
            else float("nan")
        for lo, hi in SPEED_BINS:
            b = m & (ct >= lo) & (ct < hi)
            out[f"{name}/error_{lo:g}-{hi:g}"] = float(ce[b].mean()) if b.any() else float("nan")
    out["curve_slow_minus_fast"] = out["curve/error_0-8"] - out["curve/error_9.5-inf"]
    out["curve_minus_straight_slope"] = out["curve/slope"] - out["straight/slope"]
    m = (k == "curve") | (k == "straight")
    x = np.c_[np.ones(m.sum() * e.shape[1]), t[m].ravel(), y[m].ravel()]
    coef = np.linalg.lstsq(x, e[m].ravel(), rcond=None)[0] if m.any() else np.full(3, np.nan)
    out["frame_error_per_speed"], out["frame_error_per_yaw"] = float(coef[1]), float(coef[2])
    return out


def layout_profile(speed: np.ndarray, truth: np.ndarray, yaw: np.ndarray, scenes: list[str], layouts: dict[str, str],
                   resamples: int = 2000, seed: int = 0) -> dict:
    """speed, truth, yaw (N, F) per clip and future frame (readings and labels [m/s], |yaw rate| [°/s]), the clips'
    scenes and each scene's road (a junction of any arm is "junction") → each D13 figure with its bootstrap interval
    over scenes and the scenes it rests on."""
    kind_of = {s: ("junction" if v.startswith("junction") else v) for s, v in layouts.items()}
    missing = sorted(set(scenes) - set(kind_of))
    if missing:
        raise ValueError(f"no road kind for scene(s) {', '.join(missing[:3])} in the world's synth_meta.json")
    names = np.asarray(scenes)
    kind = np.array([kind_of[s] for s in scenes])
    err = speed - truth
    by_scene = {s: np.flatnonzero(names == s) for s in sorted(set(scenes))}
    scenes_of = {k: [s for s in by_scene if kind_of[s] == k] for k in KINDS}
    point = _layout_stats(err, truth, yaw, kind, np.arange(len(names)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        pick = [s for k in KINDS for s in (np.array(scenes_of[k])[rng.integers(0, len(scenes_of[k]),
                                                                             len(scenes_of[k]))] if scenes_of[k] else [])]
        draws.append(_layout_stats(err, truth, yaw, kind, np.concatenate([by_scene[s] for s in pick])))
    clip_truth = truth.mean(1)

    def support(key: str) -> int:
        """How many scenes a figure rests on (the smaller side of a contrast)."""
        if key.startswith("frame_"):
            return min(len(scenes_of["curve"]), len(scenes_of["straight"]))
        if key == "curve_slow_minus_fast":
            return min(support("curve/error_0-8"), support("curve/error_9.5-inf"))
        if key == "curve_minus_straight_slope":
            return min(len(scenes_of["curve"]), len(scenes_of["straight"]))
        name, what = key.split("/")
        if what == "slope":
            return len(scenes_of[name])
        lo, hi = (float(v) for v in what.removeprefix("error_").split("-"))
        return len({names[i] for i in np.flatnonzero((kind == name) & (clip_truth >= lo) & (clip_truth < hi))})

    out = {}
    for key, value in point.items():
        boot = np.array([d[key] for d in draws])
        boot = boot[np.isfinite(boot)]
        n = support(key)
        out[key] = {"value": value, "ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
                    if len(boot) else None, "scenes": n, "too_few": n < 3}
    return {"scenes_per_kind": {k: len(v) for k, v in scenes_of.items()},
            "clips_per_kind": {k: int((kind == k).sum()) for k in KINDS}, "figures": out,
            "resamples": resamples}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--judge", required=True)
    p.add_argument("--dataroot", default="data/synth-judgeval")
    p.add_argument("--split", default="all")
    p.add_argument("--by-layout", action="store_true", help="per kind of road (a synthetic world), docs/world4s.md D13")
    p.add_argument("--json", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    data = replace(load_config(JUDGE_CONFIG), data={"dataroot": resolve_dataroot(args.dataroot)}).data
    layouts = world_layouts(data) if args.by_layout else None  # before the read: a wrong world fails at once
    clips = load_judge_set(data, args.split)
    readings = read_videos(load_judge(args.judge), clips.video(slice(None)), times=clips.time)
    k0 = clips.n_context - 1
    out = speed_profile(readings["speed"], clips.speed[:, k0 + 1:], clips.scenes)
    if layouts is not None:
        out["by_layout"] = layout_profile(readings["speed"], clips.speed[:, k0 + 1:],
                                          yaw_rate(clips.ego_pose, clips.time, k0), clips.scenes, layouts)
    from analysis.output import emit_json

    return emit_json(out, args.json)


def world_layouts(data) -> dict[str, str]:
    """Each scene's road kind from a synthetic world's `synth_meta.json` (a short error for any other dataroot)."""
    meta = Path(data.dataroot) / "synth_meta.json"
    if not meta.is_file():
        raise SystemExit(f"--by-layout needs a synthetic world: no synth_meta.json in {data.dataroot}")
    try:
        return {s["name"]: s["layout"] for s in json.loads(meta.read_text())["scenes"]}
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{meta}: not a synthetic world's scene list ({e})") from None


if __name__ == "__main__":
    raise SystemExit(main())
