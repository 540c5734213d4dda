"""What the guidance scale w does to a world model's futures, read by the video judge on real (held-out) clips.

Intermediate guidance samples with v_w = v_i + w (v_f − v_i) (v_i: the trained head's velocity, v_f: the final
output's): w = 1 is the plain model, w = 0 the head alone, w > 1 pushes past the final output, away from the head.
`guidance_sweep` samples the same clips with the same noise at every w of a list (sample k of clip j seeded as in
`eval`) and reads every future with the judge: `fd_judge` / `kid_judge` against the clips' real futures, the
reading errors per future frame, and per clip the position error at each whole second ahead, so that each w's
difference to the reference w (1 by default) gets a paired 95 % bootstrap interval over clips. The baselines
(repeat the last frame, copy the context forward) and the floor (real futures) are read once, as references.
`python -m analysis guidance-sweep` writes it as JSON with a figure (`sweep_figure`) and a frame grid
(`sweep_frames`: one clip's future at several horizons, a row per w); the app's guidance view shows the shipped
sweep (assets/ablation/guidance_sweep_<checkpoint>.json) beside the 2-D toy.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image, ImageDraw
from plotly.subplots import make_subplots

from reworld.evaluation.stats import paired_interval, per_clip_mean
from reworld.models.layers import state_digest

LABEL_W, LABEL_H, GAP = 56, 12, 2  # [px] the frame grid's label column, label strip and gaps
COLORS = {"w": "#0072B2", "repeat_last": "#D55E00", "copy_context": "#CC79A7", "real": "#009E73"}  # Okabe-Ito


def check_ws(ws) -> list[float]:
    ws = [float(w) for w in ws]
    if not ws:
        raise ValueError("the sweep needs at least one guidance value w")
    if any(not np.isfinite(w) or w < 0 or w > 10 for w in ws):
        raise ValueError(f"guidance values must lie in [0, 10], got {ws}")
    if len(set(ws)) != len(ws):
        raise ValueError(f"guidance values repeat: {ws}")
    return sorted(ws)


def _seconds(n_future: int, frame_rate: float) -> tuple[list[float], list[int]]:
    seconds = [float(s) for s in range(1, int(n_future / frame_rate) + 1)] or [n_future / frame_rate]
    return seconds, [int(round(frame_rate * s)) - 1 for s in seconds]


def check_steps_list(steps_list) -> list[int]:
    steps_list = [int(s) for s in steps_list]
    if not steps_list:
        raise ValueError("the sweep needs at least one step count")
    if any(s < 1 or s > 200 for s in steps_list):
        raise ValueError(f"step counts must lie in [1, 200], got {steps_list}")
    if len(set(steps_list)) != len(steps_list):
        raise ValueError(f"step counts repeat: {steps_list}")
    return sorted(steps_list)


# what a kept report's figures mean: "K1" = kid_judge without the pairs of videos that share frames, the all-pairs
# estimate as kid_judge_all_pairs (docs/world4s.md, K1); readings kept under another meaning are not reused
READINGS = "K1"


def _sweep_key(pipe, judge, data, samples: int, seed: int) -> str:
    """What decides a sweep's readings besides its setting: the world model's and the judge's weights, the checkpoint's
    config (its sampler settings), the device and dtype it samples on, the clips (frames and labels, and where they
    sit in their scenes), the samples and the seed, and which readings a report holds (`READINGS`)."""
    from reworld.config import config_to_dict

    h = hashlib.sha256()
    h.update(json.dumps({"world_model": pipe.world_model_digest(), "judge": state_digest([("", judge)]),
                         "config": config_to_dict(pipe.config), "device": str(pipe.device),
                         "dtype": str(next(pipe.video_dit.parameters()).dtype),
                         "samples": samples, "seed": seed, "scenes": data.scenes, "n_context": data.n_context,
                         "command": data.command.tolist(), "readings": READINGS,
                         "key_time": None if data.key_time is None else data.key_time.tolist()},
                        sort_keys=True, default=str).encode())
    h.update(data.frames.contiguous().numpy().tobytes())
    for labels in (data.time, data.ego_pose, data.speed, data.lead):
        h.update(np.ascontiguousarray(labels, dtype=np.float64).tobytes())
    return h.hexdigest()


def _load_setting(path: Path, key: str):
    """A setting's kept readings (report, clip of each video, seconds per future, its grid frames), or None when there
    are none for exactly this key (another checkpoint, judge, clip set, seed …) or the file does not read."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            kept = json.loads(meta["kept"])
            frames = f.get_tensor("frames")
    except (SafetensorError, OSError, KeyError, ValueError):
        return None  # cut off or foreign: sampled again
    return kept["report"], np.asarray(kept["clip_of"]), kept["seconds_per_future"], frames


def _keep_setting(path: Path, key: str, report: dict, clip_of, per_video_s: float, frames: torch.Tensor) -> None:
    """Written whole or not at all (a temporary file, then renamed)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    kept = json.dumps({"report": report, "clip_of": np.asarray(clip_of).tolist(), "seconds_per_future": per_video_s})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"frames": frames.detach().to("cpu").contiguous()}, str(tmp), metadata={"key": key, "kept": kept})
    os.replace(tmp, path)


def sampler_sweep(pipe, ds, indices, judge, settings, reference, samples: int = 1, seed: int = 0, log=None,
                  keep: str | Path | None = None) -> dict:
    """The judge's figures of `pipe`'s futures on clips `indices` of `ds` at every sampler setting `(steps, w)` of
    `settings`, each paired clip by clip with the `reference` setting (the module docstring); the same noise for the
    same clip and sample at every setting. Each row also holds the wall time of one `generate` at its setting.
    With `keep` (a folder), each setting's readings are kept there as they land and a rerun with the same checkpoint,
    judge, clips, samples and seed reads them instead of sampling again: a sweep cut off resumes at the setting it
    was on, with the same numbers (every setting's noise is its own, whatever the order)."""
    import time

    from reworld.evaluation.evaluate import sampled_videos
    from reworld.evaluation.judge import check_judge_reads, judge_baselines, judge_set_of, judge_video_report, \
        read_videos

    settings = [(int(st), float(w)) for st, w in settings]
    reference = (int(reference[0]), float(reference[1]))
    if reference not in settings:
        raise ValueError(f"the reference setting {reference} must be one of the swept settings {settings}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer ≥ 1, got {samples!r}")
    check_judge_reads(judge, ds.cfg)
    indices = list(indices)
    data = judge_set_of(ds, indices)
    n = len(indices)
    real_embedding = read_videos(judge, data.video(slice(None)), times=data.time)["embedding"]
    seconds, marks = _seconds(ds.cfg.future_frames, ds.cfg.frame_rate)
    sweep_key = _sweep_key(pipe, judge, data, samples, seed) if keep is not None else None
    rows, per_clip, frames, resumed = [], {}, {}, []
    for steps, w in settings:
        if log:
            log(f"{steps} steps, w = {w:g}: {n} clips × {samples}")
        path = Path(keep) / f"{steps}-steps-w{w:g}.safetensors" if keep is not None else None
        key = f"{sweep_key}:{steps}:{w!r}" if keep is not None else None
        kept = _load_setting(path, key) if keep is not None else None
        if kept is not None:
            rep, clip_of, per_video_s, frames[steps, w] = kept
            resumed.append([steps, w])
            if log:
                log(f"  read from {path} (kept by an earlier run)")
        else:
            t0 = time.perf_counter()
            videos, clip_of = sampled_videos(pipe, ds, indices, samples, steps, w, seed)
            per_video_s = (time.perf_counter() - t0) / len(videos)
            rep = judge_video_report(judge, data, videos, clip_of, real_embedding=real_embedding)
            frames[steps, w] = videos[0, data.n_context:]  # the first clip's first sample: the frame grid
            del videos
            if keep is not None:
                _keep_setting(path, key, rep, clip_of, per_video_s, frames[steps, w])
        pc = per_clip_mean(rep["position_m_per_video"], clip_of, n)
        per_clip[steps, w] = pc
        ivs = [paired_interval(pc[:, m], resamples=4000) for m in marks]
        mean_iv = paired_interval(pc.mean(1), resamples=4000)
        rows.append({"steps": steps, "w": w, "seconds_per_future": per_video_s, "fd_judge": rep["fd_judge"],
                     "kid_judge": rep["kid_judge"], "kid_judge_all_pairs": rep["kid_judge_all_pairs"],
                     "errors": rep["errors"],
                     "position_m_at_s": [iv.mean for iv in ivs],
                     "position_m_at_s_boot": [[iv.boot_lo, iv.boot_hi] for iv in ivs],
                     "position_m_mean": mean_iv.mean, "position_m_mean_boot": [mean_iv.boot_lo, mean_iv.boot_hi]})
    for row in rows:  # paired with the reference setting, clip by clip
        diff = per_clip[row["steps"], row["w"]] - per_clip[reference]
        ivs = [paired_interval(diff[:, m], resamples=4000) for m in marks]
        mean_iv = paired_interval(diff.mean(1), resamples=4000)
        row["minus_reference_position_m_at_s"] = [iv.mean for iv in ivs]
        row["minus_reference_position_m_at_s_boot"] = [[iv.boot_lo, iv.boot_hi] for iv in ivs]
        row["minus_reference_position_m_mean"] = mean_iv.mean
        row["minus_reference_position_m_mean_boot"] = [mean_iv.boot_lo, mean_iv.boot_hi]
    span = list(range(min(indices), max(indices) + 1))  # the floor's two real halves: the clips the choice spans
    base = judge_baselines(judge, data, floor=judge_set_of(ds, span) if len(span) > n else None)
    references = {}
    for kind, b in base.items():
        pos = np.asarray(b["position_m_per_video"]) if "position_m_per_video" in b else None
        references[kind] = {"fd_judge": b["fd_judge"], "kid_judge": b["kid_judge"],
                            "kid_judge_all_pairs": b["kid_judge_all_pairs"],
                            "position_m_at_s": [float(np.mean(b["errors"]["position_m"][m])) for m in marks],
                            "position_m_mean": float(np.mean(b["errors"]["position_m"]))}
        if pos is not None:
            references[kind]["position_m_mean_boot"] = list(_boot(pos.mean(1)))
    return {"checkpoint": str(pipe.path), "world_model_digest": pipe.world_model_digest(),
            "trained_heads": list(pipe.trained_heads),
            "default_guidance": pipe.default_guidance, "samples_per_clip": samples, "seed": seed, "clips": n,
            "indices": indices, "scenes": sorted(set(data.scenes)), "seconds": seconds,
            "frame_rate": ds.cfg.frame_rate, "rows": rows, "references": references, "resumed_settings": resumed,
            "frame_clip": {"scene": data.scenes[0], "index": indices[0]}, "_frames": frames,
            "_truth": data.video(slice(0, 1))[0, data.n_context:]}


def guidance_sweep(pipe, ds, indices, judge, ws, steps: int = 20, samples: int = 1, seed: int = 0,
                   reference: float = 1.0, log=None, keep: str | Path | None = None) -> dict:
    """The judge's figures of `pipe`'s futures on clips `indices` of `ds` at every w of `ws` (module docstring).
    A checkpoint without a trained intermediate head has nothing to guide with: refused."""
    if not pipe.trained_heads:
        raise ValueError(f"{pipe.path or 'this checkpoint'} has no trained intermediate head (λ_ig = 0): guidance "
                         "would only scale its velocity, so there is nothing to sweep")
    ws = check_ws(ws)
    if reference not in ws:
        raise ValueError(f"the reference w = {reference:g} must be one of the swept values {ws}")
    sweep = sampler_sweep(pipe, ds, indices, judge, [(steps, w) for w in ws], (steps, reference), samples, seed, log,
                          keep)
    sweep["_frames"] = {f"w = {w:g}": f for (_, w), f in sweep["_frames"].items()}
    return {**sweep, "varies": "w", "reference_w": reference, "steps": steps}


def steps_sweep(pipe, ds, indices, judge, steps_list, guidance: float | None = None, samples: int = 1, seed: int = 0,
                reference: int | None = None, log=None, keep: str | Path | None = None) -> dict:
    """The same at every sampler step count of `steps_list` and one w (the checkpoint's default unless given; w ≠ 1
    needs a trained head), each paired with `reference` steps (default: the most); with the registered rule's
    reading (`fewest_steps`)."""
    steps_list = check_steps_list(steps_list)
    w = pipe.default_guidance if guidance is None else float(guidance)
    if w != 1.0 and not pipe.trained_heads:
        raise ValueError(f"{pipe.path or 'this checkpoint'} has no trained intermediate head: it samples at w = 1")
    reference = max(steps_list) if reference is None else int(reference)
    if reference not in steps_list:
        raise ValueError(f"the reference {reference} steps must be one of the swept counts {steps_list}")
    sweep = sampler_sweep(pipe, ds, indices, judge, [(st, w) for st in steps_list], (reference, w), samples, seed,
                          log, keep)
    sweep["_frames"] = {f"{st} steps": f for (st, _), f in sweep["_frames"].items()}
    return {**sweep, "varies": "steps", "guidance": w, "reference_steps": reference,
            "fewest_steps": fewest_steps(sweep["rows"], reference)}


# the registered rule (docs/sampler-steps.md): a step count reads as the reference when its fd_judge is at most 10 %
# above the reference's and the upper end of the paired interval of its mean position error's change is ≤ 0.25 m
FD_TOLERANCE, POSITION_TOLERANCE_M = 0.10, 0.25


def fewest_steps(rows, reference: int) -> dict:
    """The registered rule over a steps sweep's rows: every step count's pass/fail with its reasons, and the fewest
    that passes (the reference passes by definition)."""
    ref = next(r for r in rows if r["steps"] == reference)
    verdicts = {}
    for r in rows:
        fd_ok = r["fd_judge"] is not None and ref["fd_judge"] is not None \
            and r["fd_judge"] <= (1 + FD_TOLERANCE) * ref["fd_judge"]
        pos_ok = r["minus_reference_position_m_mean_boot"][1] <= POSITION_TOLERANCE_M
        verdicts[str(r["steps"])] = {"passes": bool(r["steps"] == reference or (fd_ok and pos_ok)),
                                     "fd_ratio": (r["fd_judge"] / ref["fd_judge"]
                                                  if r["fd_judge"] is not None and ref["fd_judge"] else None),
                                     "position_change_m_boot_hi": r["minus_reference_position_m_mean_boot"][1]}
    passing = sorted(int(k) for k, v in verdicts.items() if v["passes"])
    return {"rule": f"fd_judge ≤ {1 + FD_TOLERANCE:g} × the reference's and the paired interval of the mean position "
                    f"error's change ≤ +{POSITION_TOLERANCE_M:g} m", "steps": passing[0], "by_steps": verdicts}


def _boot(values: np.ndarray) -> tuple[float, float]:
    iv = paired_interval(values, resamples=4000)
    return iv.boot_lo, iv.boot_hi


def sweep_figure(sweep: dict, guidance: float | None = None) -> go.Figure:
    """Two panels against w: the judge's distance to the real futures (FD; lower is closer), and its position
    error (mean over the horizon and at the last whole second, 95 % bootstrap over clips); the baselines and the
    floor as horizontal lines; `guidance` marked (e.g. the app's slider)."""
    rows = sweep["rows"]
    varies = sweep.get("varies", "w")
    ws = [r[varies] for r in rows]
    last = len(sweep["seconds"]) - 1
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("Fréchet distance to real futures (judge)",
                                        "ego position error read by the judge [m]"))
    fig.add_trace(go.Scatter(x=ws, y=[r["fd_judge"] for r in rows], mode="lines+markers", name="generated",
                             line=dict(color=COLORS["w"]), legendgroup="gen"), 1, 1)
    for key, dash, label in (("position_m_mean", "solid", "mean over the horizon"),
                             ("position_m_at_s", "dot", f"at {sweep['seconds'][last]:g} s")):
        if key == "position_m_mean":
            y = [r[key] for r in rows]
            lo = [r[key] - r[key + "_boot"][0] for r in rows]
            hi = [r[key + "_boot"][1] - r[key] for r in rows]
        else:
            y = [r[key][last] for r in rows]
            lo = [r[key][last] - r[key + "_boot"][last][0] for r in rows]
            hi = [r[key + "_boot"][last][1] - r[key][last] for r in rows]
        fig.add_trace(go.Scatter(x=ws, y=y, mode="lines+markers", name=f"generated, {label}",
                                 line=dict(color=COLORS["w"], dash=dash), showlegend=True,
                                 error_y=dict(type="data", array=hi, arrayminus=lo, visible=True)), 1, 2)
    names = {"repeat_last": "repeat last frame", "copy_context": "copy context forward", "real": "real futures (floor)"}
    for kind, ref in sweep["references"].items():
        color = COLORS.get(kind, "#777777")
        if ref["fd_judge"] is not None:
            fig.add_hline(y=ref["fd_judge"], line=dict(color=color, dash="dash", width=1), row=1, col=1)
        fig.add_hline(y=ref["position_m_mean"], line=dict(color=color, dash="dash", width=1), row=1, col=2)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=names.get(kind, kind),
                                 line=dict(color=color, dash="dash")), 1, 2)
    if guidance is not None:
        for col in (1, 2):
            fig.add_vline(x=float(guidance), line=dict(color="#444444", width=1), row=1, col=col)
    if varies == "w":
        fig.add_vline(x=sweep["default_guidance"], line=dict(color="#999999", width=1, dash="dot"), row=1, col=1)
    for col in (1, 2):
        fig.update_xaxes(title_text="guidance w" if varies == "w" else "sampler steps", row=1, col=col)
    fig.update_layout(height=380, margin=dict(l=50, r=20, t=60, b=50), template="plotly_white",
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, font=dict(size=11)),
                      title=dict(text=f"{sweep['clips']} held-out clips × {sweep['samples_per_clip']} · "
                                      + (f"{sweep['steps']} steps · same noise at every w" if varies == "w" else
                                         f"w = {sweep['guidance']:g} · same noise at every step count"),
                                      font=dict(size=13)))
    return fig


def _to_uint8(frame: torch.Tensor) -> np.ndarray:
    return ((frame.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def sweep_frames(truth: torch.Tensor, frames: dict, frame_rate: float, horizons=(1.0, 2.0, 4.0)) -> np.ndarray:
    """A grid (uint8 HWC): a column per horizon [s] the future reaches (else its last frame), the true future in the
    first row, then a row per entry of `frames` (label → future), in its order."""
    cols = [int(round(h * frame_rate)) - 1 for h in horizons if 1 <= round(h * frame_rate) <= len(truth)]
    cols = cols or [len(truth) - 1]  # a future shorter than every horizon: its last frame
    horizons = [(c + 1) / frame_rate for c in cols]
    h, wd = truth.shape[-2:]
    rows = [("truth", truth)] + list(frames.items())
    canvas = Image.new("RGB", (LABEL_W + len(cols) * (wd + GAP), LABEL_H + len(rows) * (h + GAP)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(horizons):
        draw.text((LABEL_W + c * (wd + GAP) + 2, 0), f"+{t:g} s", fill=(0, 0, 0))
    for r, (label, video) in enumerate(rows):
        y = LABEL_H + r * (h + GAP)
        draw.text((2, y + h // 2 - 5), label, fill=(0, 0, 0))
        for c, k in enumerate(cols):
            canvas.paste(Image.fromarray(_to_uint8(video[k])), (LABEL_W + c * (wd + GAP), y))
    return np.asarray(canvas)
