"""The intermediate-guidance toy study (docs/study.md §1): arms × seeds on the 2-D tree, paired intervals, verdicts,
and the figures (samples over the density; the outlier rate per arm with its interval)."""
from __future__ import annotations

import csv
import math
from dataclasses import asdict
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from reworld.evaluation.stats import Interval, paired_interval
from reworld.guidance_toy import (ToyConfig, TreeDensity, sample_toy, toy_metrics, toy_trajectories, toy_velocities,
                                  train_toy)

METRICS = ("outlier_rate", "mean_log_density", "sliced_w2", "mmd")
# (label, arm trained, guidance w at sampling: None = the pre-registered w)
LABELS = (("vanilla", "vanilla", 1.0), ("IG w=1", "ig", 1.0), ("IG w=w*", "ig", None), ("IG-sg", "ig_sg", 1.0))
HEAD_ONLY = "IG head only (w=0)"  # a diagnostic: the head's own samples
# docs/study.md §1: (arm, reference) pairs; the claim is a lower outlier rate for the arm
COMPARISONS = (("IG w=w*", "IG w=1"), ("IG w=w*", "vanilla"), ("IG-sg", "vanilla"), ("IG w=1", "vanilla"))
if TYPE_CHECKING:
    import plotly.graph_objects as go

SMALLEST_EFFECT = 0.10  # of vanilla's mean outlier rate


SMALL = "reproduces, below the smallest effect"  # docs/study.md, amendment 1


def verdict(iv: Interval, smallest: float) -> str:
    """For an effect whose claimed sign is negative: 'reproduces' when both intervals lie below 0, 'does not' when
    both lie above −smallest, else 'inconclusive' (docs/study.md §0); both at once (a clear effect in the claimed
    direction that is smaller than the smallest effect of interest) reads 'reproduces, below the smallest effect'
    (amendment 1)."""
    if iv.boot_hi < 0 and iv.t_hi < 0:
        return SMALL if (iv.boot_lo > -smallest and iv.t_lo > -smallest) else "reproduces"
    if iv.boot_lo > -smallest and iv.t_lo > -smallest:
        return "does not"
    return "inconclusive"


def run_study(seeds, cfg: ToyConfig, samples: int, log=print):
    """Every arm and seed: rows (label, seed, metric, value), the seed-1 samples per label (for the figure)."""
    density = TreeDensity(cfg.levels)
    rows, shown = [], {}
    for seed in seeds:
        models = {}
        for label, arm, w in LABELS:
            if arm not in models:
                models[arm] = train_toy(arm, seed, cfg, density)
            points = sample_toy(models[arm], samples, cfg.guidance if w is None else w, seed=100 + seed,
                                steps=cfg.sample_steps)
            m = toy_metrics(points, density, seed=200 + seed)
            rows += [(label, seed, k, getattr(m, k)) for k in METRICS]
            if seed == seeds[0]:
                shown[label] = points[:4000]
        head = sample_toy(models["ig"], samples, 0.0, seed=100 + seed, steps=cfg.sample_steps)
        m = toy_metrics(head, density, seed=200 + seed)
        rows += [(HEAD_ONLY, seed, k, getattr(m, k)) for k in METRICS]
        log(f"  seed {seed}: " + ", ".join(f"{lab} {v:.3f}" for lab, s, k, v in rows
                                           if s == seed and k == "outlier_rate"))
    return rows, shown, density


def summarize(rows, seeds) -> dict:
    value = {(lab, s, k): v for lab, s, k, v in rows}
    labels = list(dict.fromkeys(lab for lab, _, _, _ in rows))
    means = {lab: {k: float(np.mean([value[lab, s, k] for s in seeds])) for k in METRICS} for lab in labels}
    smallest = SMALLEST_EFFECT * means["vanilla"]["outlier_rate"]
    comps = {}
    for arm, ref in COMPARISONS:
        d = np.array([value[arm, s, "outlier_rate"] - value[ref, s, "outlier_rate"] for s in seeds])
        iv = paired_interval(d)
        comps[f"{arm} − {ref}"] = {"per_seed": d.tolist(), **asdict(iv), "smallest_effect": smallest,
                                   "verdict": verdict(iv, smallest)}
    return {"means": means, "comparisons": comps}


def write_csv(rows, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "metric", "value"])
        w.writerows(rows)
    return path


def samples_image(density: TreeDensity, shown: dict, size: int = 260) -> np.ndarray:
    """One panel per label (the density's own samples first): points on white, each panel titled."""
    from PIL import Image, ImageDraw

    panels = {"density": density.sample(4000, seed=999), **shown}
    out = Image.new("RGB", (size * len(panels), size + 18), "white")
    draw = ImageDraw.Draw(out)
    for i, (label, pts) in enumerate(panels.items()):
        u = ((pts[:, 0] + 1.1) / 2.2 * (size - 1)).astype(int)
        v = ((1.1 - pts[:, 1]) / 2.2 * (size - 1)).astype(int) + 18
        keep = (u >= 0) & (u < size) & (v >= 18) & (v < size + 18)
        colour = (0, 0, 0) if label == "density" else (0, 90, 181)
        for x, y in zip(u[keep], v[keep]):
            draw.point((i * size + int(x), int(y)), fill=colour)
        draw.text((i * size + 6, 3), label, fill=(0, 0, 0))
        if i:
            draw.line([(i * size, 0), (i * size, size + 18)], fill=(200, 200, 200))
    return np.asarray(out)


def outlier_figure(summary: dict, rows, seeds):
    """Outlier rate per arm: seed points and the mean, with the paired comparisons' intervals in the hover."""
    import plotly.graph_objects as go

    labels = list(summary["means"])
    fig = go.Figure()
    for lab in labels:
        vals = [v for la, s, k, v in rows if la == lab and k == "outlier_rate"]
        fig.add_trace(go.Box(y=vals, name=lab, boxpoints="all", jitter=0.3, marker_color="#0072B2"))
    lines = [f"{c}: {d['mean']:+.3f} [{d['boot_lo']:+.3f}, {d['boot_hi']:+.3f}] → {d['verdict']}"
             for c, d in summary["comparisons"].items()]
    fig.update_layout(title=f"Outlier rate on the 2-D tree ({len(seeds)} seeds; lower is better)",
                      yaxis_title="share of samples below the density's 1st percentile", showlegend=False,
                      annotations=[dict(text="<br>".join(lines), xref="paper", yref="paper", x=0.01, y=0.99,
                                        showarrow=False, align="left", font=dict(size=11))],
                      margin=dict(t=60, b=60), template="plotly_white")
    return fig


# ---------------------------------------------------------------------------------------------- the app's view
VIEW_LIM = 1.15  # the plotted square [-lim, lim]²; the tree lies in [-1, 1]²
ARROW_COLORS = {"head": "#E69F00", "final": "#0072B2", "guided": "#009E73"}  # Okabe-Ito
OUTLIER_COLOR = "#D55E00"


def _arrows(points: np.ndarray, vectors: np.ndarray, scale: float) -> tuple[list, list]:
    """Segments from each point along its vector × scale, as one scatter trace's x/y (None between segments)."""
    ends = points + scale * vectors
    xs = np.stack([points[:, 0], ends[:, 0], np.full(len(points), np.nan)], 1).ravel().round(3)
    ys = np.stack([points[:, 1], ends[:, 1], np.full(len(points), np.nan)], 1).ravel().round(3)
    return [None if math.isnan(v) else float(v) for v in xs], [None if math.isnan(v) else float(v) for v in ys]


def _density_image(density: TreeDensity, size: int = 90) -> tuple[np.ndarray, np.ndarray]:
    axis = np.linspace(-VIEW_LIM, VIEW_LIM, size)
    gx, gy = np.meshgrid(axis, axis)
    lp = density.log_prob(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(size, size)
    return axis.round(3), np.clip(lp, lp.max() - 8.0, None).round(2)  # 8 nats below the peak and lower: white


def toy_view(model, density: TreeDensity, guidance: float, seed: int = 0, samples: int = 500, steps: int = 32,
             grid: int = 13) -> tuple[go.Figure, dict]:
    """The guidance toy as a teaching figure: three panels (the head's velocity v_i, the final v_f, the guided
    v_w = v_i + w (v_f − v_i) with the samples it moves), one animation frame per sampler step. Arrows point where a
    sample moves (−v: the sampler steps σ down), all panels at one common scale per frame. Returns the figure and
    the numbers of the final samples (outlier rate, mean log-density)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    xs, sigmas = toy_trajectories(model, samples, guidance, seed=seed, steps=steps)
    # what the figure carries (rounded: its JSON size); points outside the view are left out (plotly draws markers
    # past a subplot's edge); the metrics use the exact samples
    shown = np.where((np.abs(xs) <= VIEW_LIM).all(-1, keepdims=True), xs.round(3), np.nan)
    axis = np.linspace(-1.0, 1.0, grid)
    gx, gy = np.meshgrid(axis, axis)
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    cell = 2.0 / (grid - 1)
    ref = density.sample(4000, seed=1)
    threshold = float(np.quantile(density.log_prob(ref), 0.01))

    def fields(k: int):
        vi, vf = toy_velocities(model, pts, sigmas[min(k, steps - 1)])
        vw = vi + guidance * (vf - vi)
        move = {"head": -vi, "final": -vf, "guided": -vw}
        top = max(np.quantile(np.linalg.norm(v, axis=1), 0.95) for v in move.values())
        scale = 0.9 * cell / max(top, 1e-6)
        return {name: _arrows(pts, np.clip(v * scale, -cell, cell), 1.0) for name, v in move.items()}

    def outliers(k: int):
        return density.log_prob(xs[k]) < threshold

    titles = ("head v<sub>i</sub> (block %d)" % min(model.config.head_blocks), "final v<sub>f</sub>",
              f"guided v<sub>w</sub>, w = {guidance:g}, and {samples} samples")
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.04)
    d_axis, d_img = _density_image(density)
    for col in (1, 2, 3):
        fig.add_trace(go.Heatmap(x=d_axis, y=d_axis, z=d_img, colorscale=[[0, "#ffffff"], [1, "#a0a0a0"]],
                                 showscale=False,
                                 hoverinfo="skip", name="log p(x)"), 1, col)
    first = fields(0)
    for col, name in zip((1, 2, 3), ("head", "final", "guided")):
        x, y = first[name]
        heads = dict(symbol="arrow", angleref="previous", size=[0, 7, 0] * len(pts), color=ARROW_COLORS[name])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", line=dict(color=ARROW_COLORS[name], width=1.5),
                                 marker=heads, name=f"{name} velocity (where a sample moves)", hoverinfo="skip"),
                      1, col)
    out0 = outliers(0)
    fig.add_trace(go.Scatter(x=shown[0][~out0, 0], y=shown[0][~out0, 1], mode="markers", name="sample", cliponaxis=True,
                             marker=dict(size=4, color="#000000")), 1, 3)
    fig.add_trace(go.Scatter(x=shown[0][out0, 0], y=shown[0][out0, 1], mode="markers", cliponaxis=True,
                             name="sample off the tree (below its 1st percentile)",
                             marker=dict(size=5, color=OUTLIER_COLOR, symbol="x")), 1, 3)
    moving = [3, 4, 5, 6, 7]  # trace indices a frame replaces: the three arrow sets and the two sample sets
    frames = []
    for k in range(steps + 1):
        f, out = fields(k), outliers(k)
        frames.append(go.Frame(name=str(k), traces=moving, data=[
            go.Scatter(x=f["head"][0], y=f["head"][1]), go.Scatter(x=f["final"][0], y=f["final"][1]),
            go.Scatter(x=f["guided"][0], y=f["guided"][1]),
            go.Scatter(x=shown[k][~out, 0], y=shown[k][~out, 1]), go.Scatter(x=shown[k][out, 0], y=shown[k][out, 1])]))
    fig.frames = frames
    slider = dict(active=0, y=-0.02, len=0.9, x=0.1, currentvalue=dict(prefix="σ = ", font=dict(size=13)),
                  steps=[dict(label=f"{sigmas[k]:.2f}", method="animate",
                              args=[[str(k)], dict(mode="immediate", frame=dict(duration=0, redraw=False),
                                                   transition=dict(duration=0))]) for k in range(steps + 1)])
    play = dict(type="buttons", direction="left", x=0.0, y=-0.02, xanchor="left", yanchor="top", showactive=False,
                buttons=[dict(label="▶ play", method="animate",
                              args=[None, dict(frame=dict(duration=120, redraw=False), fromcurrent=True,
                                               transition=dict(duration=0))])])
    fig.update_layout(sliders=[slider], updatemenus=[play], height=470, margin=dict(l=10, r=10, t=40, b=90),
                      legend=dict(orientation="h", x=0, y=-0.32, font=dict(size=12)), plot_bgcolor="white")
    for col in (1, 2, 3):
        fig.update_xaxes(range=[-VIEW_LIM, VIEW_LIM], showticklabels=False, constrain="domain", showline=True,
                         mirror=True, linecolor="#bbbbbb", row=1, col=col)
        fig.update_yaxes(range=[-VIEW_LIM, VIEW_LIM], showticklabels=False, scaleanchor=f"x{'' if col == 1 else col}",
                         constrain="domain", showline=True, mirror=True, linecolor="#bbbbbb", row=1, col=col)
    m = toy_metrics(xs[-1], density, seed=1)
    return fig, {"guidance": guidance, "samples": samples, "steps": steps, "seed": seed,
                 "outlier_rate": m.outlier_rate, "mean_log_density": m.mean_log_density}


def toy_sweep(model, density: TreeDensity, ws, seed: int = 0, samples: int = 4000, steps: int = 32) -> dict:
    """Outlier rate and mean log-density of the final samples for each w in `ws` (same noise for every w)."""
    # `toy_metrics`'s two exact numbers without its O(N²) MMD: the same threshold (the 1st percentile of as many
    # of the density's own samples, drawn with seed 1), computed once for every w
    threshold = np.quantile(density.log_prob(density.sample(samples, seed=1)), 0.01)
    rows = {"w": [], "outlier_rate": [], "mean_log_density": []}
    for w in ws:
        lp = density.log_prob(sample_toy(model, samples, float(w), seed=seed, steps=steps))
        rows["w"].append(float(w))
        rows["outlier_rate"].append(float((lp < threshold).mean()))
        rows["mean_log_density"].append(float(lp.mean()))
    return rows


def toy_sweep_figure(sweep: dict, guidance: float | None = None, reference: dict | None = None) -> go.Figure:
    """Outlier rate against w (exact samples: 0.01), the chosen w marked, and optional horizontal reference lines
    (label → outlier rate, e.g. the study's vanilla mean)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=sweep["w"], y=sweep["outlier_rate"], mode="lines+markers", name="this model",
                               line=dict(color=ARROW_COLORS["guided"])))
    fig.add_hline(y=0.01, line=dict(color="#000000", dash="dot"), annotation_text="exact samples (0.01)",
                  annotation_position="bottom right")
    for i, (label, value) in enumerate((reference or {}).items()):
        fig.add_hline(y=value, line=dict(color="#CC79A7", dash="dash"), annotation_text=label,
                      annotation_position="top left" if i % 2 == 0 else "top right")
    if guidance is not None:
        fig.add_vline(x=guidance, line=dict(color="#555555"), annotation_text=f"w = {guidance:g}",
                      annotation_position="top")
    fig.update_layout(xaxis_title="guidance w (1 = no guidance, 0 = the head alone)",
                      yaxis_title="share of samples off the tree", height=340, margin=dict(l=60, r=20, t=30, b=50),
                      showlegend=False, plot_bgcolor="white")
    fig.update_xaxes(gridcolor="#e5e5e5")
    fig.update_yaxes(gridcolor="#e5e5e5", rangemode="tozero")
    return fig
