"""Does the conditioning carry the speed the futures lose? (docs/world4s.md, D11; prints JSON)

    python scripts/speed_information.py [--config configs/study-c2.yaml] [--readings docs/d10/steps8.npz]
        [--json OUT] [--resamples 2000]

From the tables only (no image is read): each clip's true future speed (the mean over its future frames, the
`frame_labels` speed) is predicted from what the Video DiT is given, fitted on the train split and read on val:
(a) persistence, the ego status speed; (b) least squares on the ego status, the command (one-hot) and the true speed
at each context frame; (c) scikit-learn's `HistGradientBoostingRegressor` (defaults, random_state 0) on (b)'s
features; (d) (c) plus the lead vehicle at t = 0; (e), added after (a)-(d) had been read, least squares on the numbers alone
(ego status and command, no context speeds), whose coefficients are reported (D12's reference). Per predictor on val: its slope on the truth (prediction regressed
on truth by least squares: the share of the speed's variance an exact conditional sampler keeps), R², mean offset
(prediction − truth), each with a 95 % percentile bootstrap over clips. `--readings`: a `speed_blur_probe.py
--readings` file of the same val clips (its true speeds must match these, clip by clip): its generated and real judge
readings (mean over the future frames) regressed on the ego status speed, and the generated/real slope ratio, on the
same resamples.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis.study_convergence import line_fit  # noqa: E402

RESAMPLES = 2000


def clip_table(ds) -> dict:
    """Every clip of a loaded `NuScenesClips` (frames=False is enough) → arrays: `ego_status` (N, 3), `command` (N,),
    `speed` (N, T) the true speed at each frame, `lead0` (N, 3) the lead vehicle at t = 0, `context` (frames before
    and at t = 0)."""
    ego, command, speed, lead = [], [], [], []
    for i in range(len(ds)):
        clip = ds[i]
        lb = ds.frame_labels(i)
        ego.append(clip.observation.ego_status.numpy())
        command.append(int(clip.observation.command))
        speed.append(lb.speed)
        lead.append(lb.lead[ds.cfg.context_frames - 1])
    return {"ego_status": np.stack(ego).astype(np.float64), "command": np.array(command), "speed": np.stack(speed),
            "lead0": np.stack(lead), "context": ds.cfg.context_frames}


def features(t: dict, lead: bool = False, context: bool = True) -> np.ndarray:
    """(N, D): ego status, command one-hot[, true speed at each context frame][, lead at t = 0 (NaN when absent)]."""
    from reworld.data.types import COMMANDS

    onehot = np.eye(len(COMMANDS))[t["command"]]
    parts = [t["ego_status"], onehot] + ([t["speed"][:, :t["context"]]] if context else [])
    if lead:
        parts.append(t["lead0"])
    return np.concatenate(parts, axis=1)


def target(t: dict) -> np.ndarray:
    """(N,) each clip's true future speed: the mean over its future frames [m/s]."""
    return t["speed"][:, t["context"]:].mean(1)


def predictions(train: dict, val: dict) -> tuple[dict[str, np.ndarray], dict]:
    """The predictors' predictions of `target(val)`, fitted on `train`, and (e)'s coefficients (D12's reference: how
    far the future speed moves per unit of each number with the others held)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    y = target(train)
    out = {"a_persistence": val["ego_status"][:, 0].copy()}
    out["b_linear"] = LinearRegression().fit(features(train), y).predict(features(val))
    out["c_boosted"] = HistGradientBoostingRegressor(random_state=0).fit(features(train), y).predict(features(val))
    out["d_boosted_lead"] = HistGradientBoostingRegressor(random_state=0).fit(
        features(train, True), y).predict(features(val, True))
    # added after (a)-(d) had been read (D11): the numbers the model is given, without the context frames' speeds
    fit = LinearRegression().fit(features(train, context=False), y)
    out["e_linear_given"] = fit.predict(features(val, context=False))
    return out, {"e_linear_given": dict(zip(("speed", "acceleration", "yaw_rate", "left", "straight", "right"),
                                            map(float, fit.coef_)))}


def r2(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1 − SSE / SST along the last axis."""
    return 1.0 - ((pred - truth) ** 2).sum(-1) / ((truth - truth.mean(-1, keepdims=True)) ** 2).sum(-1)


def report(train: dict, val: dict, readings: dict | None = None, resamples: int = RESAMPLES) -> dict:
    def iv(b: np.ndarray) -> list[float]:
        return [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]

    y = target(val)
    n = len(y)
    idx = np.random.default_rng(0).integers(0, n, (resamples, n))
    out: dict = {"unit": "m/s; per val clip, the true future speed = mean over its future frames; percentile 95 % "
                         "bootstrap over clips", "resamples": resamples, "train_clips": len(target(train)),
                 "val_clips": n, "train_mean_future_speed": float(target(train).mean()),
                 "val_mean_future_speed": float(y.mean()), "val_future_speed_sd": float(y.std()), "predictors": {}}
    preds, out["coefficients"] = predictions(train, val)
    for name, p in preds.items():
        slope, _ = line_fit(y, p)
        bs, _ = line_fit(y[idx], p[idx])
        out["predictors"][name] = {"slope_on_truth": float(slope), "slope_interval": iv(bs),
                                   "r2": float(r2(p, y)), "r2_interval": iv(r2(p[idx], y[idx])),
                                   "offset": float((p - y).mean()), "offset_interval": iv((p - y)[idx].mean(1))}
    if readings is not None:
        truth = readings["truth_speed"]
        if truth.shape != val["speed"][:, val["context"]:].shape or not np.allclose(
                truth, val["speed"][:, val["context"]:], atol=1e-4):
            raise ValueError("the readings' true speeds are not this val set's, clip by clip")
        v0 = val["ego_status"][:, 0]
        got = {}
        for arm in ("real", "generated"):
            r = readings[f"{arm}_speed"].mean(1)
            a, b = line_fit(v0, r)
            ba, _ = line_fit(v0[idx], r[idx])
            got[arm] = ba
            out[f"{arm}_reading_on_ego_speed"] = {"slope": float(a), "slope_interval": iv(ba), "intercept": float(b)}
        out["generated_over_real_slope"] = {
            "value": out["generated_reading_on_ego_speed"]["slope"] / out["real_reading_on_ego_speed"]["slope"],
            "interval": iv(got["generated"] / got["real"])}
        a, _ = line_fit(v0, y)
        out["truth_on_ego_speed"] = {"slope": float(a), "slope_interval": iv(line_fit(v0[idx], y[idx])[0])}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/study-c2.yaml")
    ap.add_argument("--readings", type=Path, help="a speed_blur_probe.py --readings file of the same val clips")
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    args = ap.parse_args(argv)
    if args.resamples < 100:
        ap.error("--resamples must be ≥ 100")
    from reworld.config import load_config
    from reworld.data.loader import NuScenesClips
    from reworld.paths import resolve_dataroot

    try:
        cfg = load_config(args.config).data
        cfg = replace(cfg, dataroot=resolve_dataroot(cfg.dataroot))
        tables = {s: clip_table(NuScenesClips(cfg, split=s, geometry=False, frames=False)) for s in ("train", "val")}
        readings = dict(np.load(args.readings)) if args.readings else None
        out = report(tables["train"], tables["val"], readings, args.resamples)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        print(f"speed_information: {e}", file=sys.stderr)
        return 2
    from analysis.output import emit_json

    return emit_json(out, args.json)


if __name__ == "__main__":
    sys.exit(main())
