"""The intermediate-guidance toy study (docs/study.md §1): arms × seeds on the 2-D tree, paired intervals, verdicts,
and the figures (samples over the density; the outlier rate per arm with its interval)."""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from reworld.guidance_toy import ToyConfig, TreeDensity, sample_toy, toy_metrics, train_toy

METRICS = ("outlier_rate", "mean_log_density", "sliced_w2", "mmd")
# (label, arm trained, guidance w at sampling: None = the pre-registered w)
LABELS = (("vanilla", "vanilla", 1.0), ("IG w=1", "ig", 1.0), ("IG w=w*", "ig", None), ("IG-sg", "ig_sg", 1.0))
HEAD_ONLY = "IG head only (w=0)"  # a diagnostic: the head's own samples
# docs/study.md §1: (arm, reference) pairs; the claim is a lower outlier rate for the arm
COMPARISONS = (("IG w=w*", "IG w=1"), ("IG w=w*", "vanilla"), ("IG-sg", "vanilla"), ("IG w=1", "vanilla"))
SMALLEST_EFFECT = 0.10  # of vanilla's mean outlier rate


@dataclass
class Interval:
    mean: float
    boot_lo: float
    boot_hi: float
    t_lo: float
    t_hi: float


def paired_interval(diffs: np.ndarray, resamples: int = 10_000, seed: int = 0) -> Interval:
    """95 % percentile bootstrap over the units (numpy seed 0) and the Student-t interval of their mean."""
    from scipy import stats

    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(resamples, n))].mean(1)
    half = stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / math.sqrt(n) if n > 1 else float("inf")
    return Interval(float(diffs.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)),
                    float(diffs.mean() - half), float(diffs.mean() + half))


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
