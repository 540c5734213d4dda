"""How the Action DiT's representation separates expert trajectories from hard negatives (docs/design.md §2, §7).

- `collect_features`: per clip, the expert and up to k hard negatives (`generate_hard_negatives`, labelled
  by the PDM failure kind), fed through the Action DiT (`WorldActionPipeline.planner_features`): one pooled feature
  vector per trajectory, with its label and metadata (scene, sample token, trajectory, PDM sub-scores).
- `umap_embedding`: a 2-D or 3-D UMAP of the features, seeded, cached on disk under a hash of the
  features and every parameter (plus a caller's `cache_key`, e.g. checkpoint and block).
- `separation_metrics`: expert vs negatives measured in feature space, independent of UMAP (a UMAP
  picture can show or hide a separation at will; these numbers cannot): silhouette and cross-validated
  k-NN accuracy on the raw features (euclidean, as UMAP sees them), cross-validated linear-probe ROC AUC
  on standardised features.
- figures: the embedding coloured by label with hover details, separation bars for one or more
  checkpoints side by side (vanilla vs ReWorld).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from reworld.evaluation.video import feature_matrix
from reworld.planning.pdm import FAILURE_KINDS, failure_kind, score_trajectories
from reworld.viz.bev import EXPERT_COLOR, LABEL_COLORS

EXPERT = "expert"
LABELS = (EXPERT, *FAILURE_KINDS)  # "expert", "collision", "off_road", "ttc"
LABEL_COLOR = {EXPERT: EXPERT_COLOR, **{k: LABEL_COLORS[k] for k in FAILURE_KINDS}}
WEBGL_ABOVE = 1000  # points; plotly's own threshold for switching to WebGL


# --------------------------------------------------------------------------- features


@dataclass
class FeatureSet:
    """Action DiT features of experts and hard negatives."""

    feats: np.ndarray  # (N, D) float32
    labels: list[str]  # per point, one of LABELS
    meta: list[dict] = field(default_factory=list)  # per point: scene, sample_token, trajectory, pdm, mean_l2_m
    block: int | None = None  # Action DiT block (None: the pipeline's default, the alignment block)
    sigma: float = 0.0  # noise level of the trajectories when the features were taken
    counts: dict[str, int] = field(init=False, default_factory=dict)  # per label in LABELS

    def __post_init__(self):
        self.counts = {label: self.labels.count(label) for label in LABELS}

    def save(self, path: str | Path) -> Path:
        """`<path>.npz` (features) + `<path>.json` (labels, metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path.with_suffix(".npz"), feats=self.feats)
        from .output import write_json

        write_json({"labels": self.labels, "meta": self.meta, "block": self.block, "sigma": self.sigma},
                   path.with_suffix(".json"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSet":
        path = Path(path)
        d = json.loads(path.with_suffix(".json").read_text())
        feats = np.load(path.with_suffix(".npz"))["feats"]
        return cls(feats=feats, labels=d["labels"], meta=d["meta"], block=d["block"], sigma=d["sigma"])


def _summary(traj: np.ndarray) -> str:
    """One line about a trajectory (8, 3) at 0.5 … 4.0 s."""
    x, y, h = traj[-1]
    dist = float(np.linalg.norm(np.diff(np.vstack([[0.0, 0.0], traj[:, :2]]), axis=0), axis=1).sum())
    return f"end ({x:.1f}, {y:.1f}) m, heading {np.degrees(h):.0f}°, {dist / 4.0:.1f} m/s mean"


def _point_meta(clip, traj: np.ndarray, result, mean_l2: float) -> dict:
    return {
        "scene": clip.scene_name,
        "sample_token": clip.sample_token,
        "trajectory": np.round(traj, 3).tolist(),
        "summary": _summary(traj),
        "pdm": {k: float(v) for k, v in result.as_dict().items()},
        "failure": failure_kind(result),
        "mean_l2_m": float(mean_l2),
    }


def collect_features(pipe, clips, k: int = 8, block: int | None = None, sigma: float = 0.0, seed: int = 0,
                     callback=None) -> FeatureSet:
    """Features of each clip's expert and up to `k` hard negatives (seeded `seed + clip index`).

    Clips need map geometry (drivable area; the loader's geometry=True). A clip where no hard negative
    exists contributes its expert only. `callback(i, n)` after each clip."""
    from reworld.planning.hard_negatives import generate_hard_negatives
    from reworld.planning.scene import PlanningScene

    clips = list(clips)
    if not clips:
        raise ValueError("collect_features: no clips")
    feats, labels, meta = [], [], []
    for i, clip in enumerate(clips):
        if not clip.target.drivable_area:
            raise ValueError(f"clip {clip.scene_name}/{clip.sample_token} has no drivable area: hard negatives need "
                             "map geometry (load clips with geometry=True)")
        scene = PlanningScene.from_clip(clip)
        expert = scene.expert
        hn = generate_hard_negatives(scene, expert, k=k, seed=seed + i)
        trajectories = np.concatenate([expert[None], hn.trajectories]).astype(np.float32)  # (1 + M, 8, 3)
        results = score_trajectories(scene, expert[None])[:1] + list(hn.results)
        f = pipe.planner_features(clip, trajectories, block=block, sigma=sigma, seed=seed)  # (1 + M, D)
        feats.append(np.asarray(f, dtype=np.float32))
        labels += [EXPERT] + list(hn.labels)
        l2 = np.concatenate([[0.0], hn.mean_l2_m])
        meta += [_point_meta(clip, t, r, d) for t, r, d in zip(trajectories, results, l2)]
        if callback is not None:
            callback(i + 1, len(clips))
    return FeatureSet(feats=np.concatenate(feats), labels=labels, meta=meta, block=block, sigma=float(sigma))


# --------------------------------------------------------------------------- UMAP


def _fit_umap(feats: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, metric: str,
              random_state: int) -> np.ndarray:
    """The one place UMAP runs (tests replace it to prove the cache)."""
    import umap  # slow first import (numba); only here

    with warnings.catch_warnings():
        # random_state forces one thread; that is the reproducibility we ask for, not news
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        model = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                          random_state=random_state)
        return np.asarray(model.fit_transform(feats), dtype=np.float32)


def umap_cache_path(feats: np.ndarray, cache_dir: str | Path, **params) -> Path:
    """The cache file of `umap_embedding` for these features and parameters."""
    x = np.ascontiguousarray(feats, dtype=np.float32)
    h = hashlib.sha256()
    h.update(json.dumps({"shape": x.shape, **params}, sort_keys=True).encode())
    h.update(x.tobytes())
    return Path(cache_dir) / f"umap-{h.hexdigest()[:24]}.npy"


def umap_embedding(feats, n_components: int = 2, random_state: int = 0, n_neighbors: int = 15,
                   min_dist: float = 0.1, metric: str = "euclidean", cache_dir: str | Path | None = None,
                   cache_key: str = "") -> np.ndarray:
    """UMAP coordinates (N, n_components) of features (N, D); the same seed gives the same coordinates.

    With `cache_dir`, the result is stored under a hash of the features, every parameter, the umap-learn
    version and `cache_key` (pass the checkpoint and block there), and read back instead of refitting.
    Raises ValueError with a plain message for: fewer than n_neighbors + 1 points, identical feature
    vectors (nothing to embed), NaN/inf, a bad n_components."""
    x = feature_matrix(feats, "umap_embedding", dtype=np.float32)
    if n_components not in (2, 3):
        raise ValueError(f"umap_embedding: n_components must be 2 or 3, got {n_components}")
    if not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise ValueError(f"umap_embedding: n_neighbors must be an integer ≥ 2, got {n_neighbors!r}")
    n = len(x)
    if n < n_neighbors + 1:
        raise ValueError(f"umap_embedding: {n} points are too few for n_neighbors={n_neighbors}; UMAP needs at "
                         f"least n_neighbors + 1 = {n_neighbors + 1} (collect more clips"
                         + (f" or use n_neighbors ≤ {n - 1})" if n >= 3 else ")"))
    if not (np.ptp(x, axis=0) > 0).any():
        raise ValueError("umap_embedding: all feature vectors are identical (constant features), there is nothing "
                         "to embed; check the checkpoint (untrained planner?) and the block")
    params = dict(n_components=n_components, n_neighbors=int(n_neighbors), min_dist=float(min_dist), metric=metric,
                  random_state=int(random_state))
    path = None
    if cache_dir is not None:
        path = umap_cache_path(x, cache_dir, cache_key=cache_key, umap=_umap_version(), **params)
        if path.is_file():
            return np.load(path)
    coords = _fit_umap(x, **params)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, coords)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    return coords


def _umap_version() -> str:
    try:
        return importlib.metadata.version("umap-learn")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- separation


@dataclass
class SeparationReport:
    """Expert vs hard negatives in feature space; NaN where undefined."""

    n_expert: int
    n_negative: int
    folds: int  # stratified cross-validation folds actually used
    k: int  # neighbours of the k-NN classifier
    silhouette: float  # in [-1, 1], euclidean on the raw features, labels expert / negative
    knn_accuracy: float  # cross-validated, euclidean on the raw features
    knn_balanced_accuracy: float  # mean of per-class recalls (0.5 = chance whatever the class balance)
    knn_chance: float  # accuracy of always answering the majority class
    probe_auc: float  # cross-validated linear-probe ROC AUC (mean over folds), standardised features
    probe_auc_std: float  # over folds
    per_kind_auc: dict[str, float] = field(default_factory=dict)  # probe AUC of expert vs each failure kind
    seconds: float = 0.0

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _binary(labels, positive: str) -> np.ndarray:
    return np.array([label != positive for label in labels], dtype=int)  # 1 = hard negative


def _check_two_classes(y: np.ndarray, labels, positive: str, min_per_class: int = 2) -> None:
    n_neg, n_pos = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        present = sorted(set(labels))
        raise ValueError(f"separation needs both classes, {positive!r} and hard negatives; got only {present} "
                         f"({len(y)} points)")
    if min(n_pos, n_neg) < min_per_class:
        raise ValueError(f"separation needs at least {min_per_class} points per class for cross-validation; got "
                         f"{n_pos} {positive!r} and {n_neg} negatives")


def probe_auc(feats, y, folds: int = 5, seed: int = 0) -> tuple[float, float, int]:
    """Cross-validated ROC AUC of a logistic-regression probe on standardised features:
    (mean over folds, std over folds, folds used). y: binary labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(feats, dtype=np.float64), np.asarray(y)
    n_splits = int(min(folds, np.bincount(y).min()))
    aucs = []
    for train, test in StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x, y):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(x[train], y[train])
        aucs.append(roc_auc_score(y[test], probe.decision_function(x[test])))
    return float(np.mean(aucs)), float(np.std(aucs)), n_splits


def separation_metrics(feats, labels, positive: str = EXPERT, folds: int = 5, k: int = 5,
                       seed: int = 0) -> SeparationReport:
    """Expert (label `positive`) vs every other label, in feature space. Folds shrink to the size of the
    smaller class when it is smaller than `folds`; fewer than 2 points in a class is a ValueError."""
    from sklearn.metrics import balanced_accuracy_score, silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    t0 = time.perf_counter()
    x = feature_matrix(feats, "separation_metrics", dtype=np.float32).astype(np.float64)
    labels = list(labels)
    if len(labels) != len(x):
        raise ValueError(f"separation_metrics: {len(x)} feature vectors but {len(labels)} labels")
    y = _binary(labels, positive)
    _check_two_classes(y, labels, positive)
    auc, auc_std, n_splits = probe_auc(x, y, folds, seed)
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    smallest_train = len(y) - int(np.ceil(len(y) / n_splits))
    knn_k = max(1, min(k, smallest_train))
    # raw features, like the silhouette and UMAP: neighbourhoods of the representation as it is
    pred = cross_val_predict(KNeighborsClassifier(n_neighbors=knn_k), x, y, cv=cv)
    sil = np.nan
    if (np.ptp(x, axis=0) > 0).any():  # silhouette of identical points is undefined
        sil = float(silhouette_score(x, y, sample_size=min(len(y), 5000), random_state=seed))
    per_kind = {}
    kinds = [lab for lab in LABELS if lab in labels and lab != positive]
    kinds += sorted(set(labels) - set(LABELS) - {positive})
    for kind in kinds:
        keep = np.array([label in (positive, kind) for label in labels])
        yk = _binary([labels[i] for i in np.flatnonzero(keep)], positive)
        per_kind[kind] = probe_auc(x[keep], yk, folds, seed)[0] if np.bincount(yk, minlength=2).min() >= 2 else np.nan
    return SeparationReport(
        n_expert=int((y == 0).sum()), n_negative=int(y.sum()), folds=n_splits, k=knn_k, silhouette=sil,
        knn_accuracy=float((pred == y).mean()), knn_balanced_accuracy=float(balanced_accuracy_score(y, pred)),
        knn_chance=float(max(y.mean(), 1 - y.mean())), probe_auc=auc, probe_auc_std=auc_std,
        per_kind_auc=per_kind, seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- figures


def _hover(meta: dict | None, label: str) -> str:
    if not meta:
        return label
    text = f"<b>{label}</b><br>{meta.get('scene', '')} · {str(meta.get('sample_token', ''))[:8]}"
    if "summary" in meta:
        text += f"<br>{meta['summary']}"
    pdm = meta.get("pdm")
    if pdm:
        text += (f"<br>PDMS {pdm['pdms']:.3f} · NC {pdm['nc']:g} · DAC {pdm['dac']:g} · TTC {pdm['ttc']:g}"
                 f" · EP {pdm['ep']:.2f} · C {pdm['c']:g}")
    if meta.get("mean_l2_m"):
        text += f"<br>{meta['mean_l2_m']:.2f} m from the expert (mean L2)"
    return text


def embedding_figure(coords, labels, meta: list[dict] | None = None, title: str | None = None) -> go.Figure:
    """Scatter of 2-D or 3-D coordinates, one trace (colour) per label, hover: scene, trajectory, PDM."""
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3) or len(coords) != len(labels):
        raise ValueError(f"embedding_figure: need coords (N, 2|3) and N labels, got {coords.shape} and {len(labels)}")
    labels = list(labels)
    order = [lab for lab in LABELS if lab in labels] + sorted(set(labels) - set(LABELS))
    three_d = coords.shape[1] == 3
    fig = go.Figure()
    for label in order:
        idx = [i for i, lab in enumerate(labels) if lab == label]
        text = [_hover(meta[i] if meta else None, label) for i in idx]
        style = dict(name=f"{label} ({len(idx)})", text=text, hovertemplate="%{text}<extra></extra>", mode="markers")
        color = LABEL_COLOR.get(label, "#7f7f7f")
        if three_d:
            fig.add_trace(go.Scatter3d(x=coords[idx, 0], y=coords[idx, 1], z=coords[idx, 2],
                                       marker=dict(size=3 if label != EXPERT else 4, color=color), **style))
        else:
            cls = go.Scattergl if len(coords) > WEBGL_ABOVE else go.Scatter
            fig.add_trace(cls(x=coords[idx, 0], y=coords[idx, 1],
                              marker=dict(size=6 if label != EXPERT else 8, color=color,
                                          symbol="diamond" if label == EXPERT else "circle", opacity=0.85), **style))
    fig.update_layout(title=title or "UMAP of Action DiT features: experts and hard negatives", height=560,
                      legend_title_text="label")
    if not three_d:
        fig.update_xaxes(title_text="UMAP 1", showticklabels=False)
        fig.update_yaxes(title_text="UMAP 2", showticklabels=False, scaleanchor="x", scaleratio=1)
    return fig


SEPARATION_BARS = (("silhouette", "silhouette"), ("knn_balanced_accuracy", "k-NN balanced acc."),
                   ("probe_auc", "probe AUC"))


def separation_figure(reports: dict[str, SeparationReport]) -> go.Figure:
    """Grouped bars, one colour per checkpoint (e.g. {"vanilla": …, "ReWorld": …}): silhouette, k-NN balanced
    accuracy, probe AUC (± std over folds) and the probe AUC per failure kind."""
    if not reports:
        raise ValueError("separation_figure: no reports")
    kinds = [k for k in FAILURE_KINDS if any(k in r.per_kind_auc for r in reports.values())]
    names = [label for _, label in SEPARATION_BARS] + [f"AUC vs {k}" for k in kinds]
    fig = go.Figure()
    palette = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c")
    for i, (name, r) in enumerate(reports.items()):
        values = [getattr(r, f) for f, _ in SEPARATION_BARS] + [r.per_kind_auc.get(k, np.nan) for k in kinds]
        err = [0.0, 0.0, r.probe_auc_std] + [0.0] * len(kinds)
        fig.add_trace(go.Bar(x=names, y=values, name=f"{name} ({r.n_expert} experts, {r.n_negative} negatives)",
                             marker_color=palette[i % len(palette)], error_y=dict(type="data", array=err),
                             text=[f"{v:.3f}" if np.isfinite(v) else "n/a" for v in values], textposition="outside"))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#999999",
                  annotation_text="chance (AUC, balanced acc.)", annotation_position="bottom right")
    fig.update_layout(barmode="group", title="Expert vs hard negatives in feature space (higher separates better)",
                      yaxis=dict(range=[min([-0.1] + [r.silhouette for r in reports.values()
                                                      if np.isfinite(r.silhouette)]) - 0.05, 1.1]), height=450)
    return fig


# --------------------------------------------------------------------------- alignment of one clip


def alignment_of_clip(pipe, clip, k: int = 8, seed: int = 0, sigma: float = 0.0):
    """The expert and up to `k` hard negatives of one clip (as `collect_features` picks them, seeded `seed`) through
    `pipe.alignment`: returns (Alignment, labels), the expert first."""
    from reworld.planning.hard_negatives import generate_hard_negatives
    from reworld.planning.scene import PlanningScene

    if not clip.target.drivable_area:
        raise ValueError(f"clip {clip.scene_name}/{clip.sample_token} has no drivable area: hard negatives need map "
                         "geometry (load clips with geometry=True)")
    scene = PlanningScene.from_clip(clip)
    hn = generate_hard_negatives(scene, scene.expert, k=k, seed=seed)
    trajectories = np.concatenate([scene.expert[None], hn.trajectories]).astype(np.float32)
    return pipe.alignment(clip, trajectories, sigma=sigma, seed=seed), [EXPERT] + list(hn.labels)


def alignment_figure(results: dict, interval_s: float = 0.5) -> go.Figure:
    """One column per checkpoint (name → (Alignment, labels)). Top: the expert's cosine with the video target per
    Action DiT block (rows, ★ the block the alignment loss supervises) and waypoint (columns, its time ahead).
    Bottom: the pooled cosine of the expert and of each hard negative (what the hard-negative loss compares), with
    the expert's share under that loss's softmax. A checkpoint trained without either term has a projector that
    never learned: its title says so."""
    from plotly.subplots import make_subplots

    if not results:
        raise ValueError("alignment_figure: no checkpoints")
    titles = []
    for name, (al, _) in results.items():
        how = (f"λ_align {al.lambda_align:g}, λ_hn {al.lambda_hn:g}" if al.projector_trained
               else "projector never trained (λ_align = λ_hn = 0)")
        titles.append(f"{name}: {how}")
    titles += [f"{name}: expert's HN-softmax share {al.expert_share():.2f} (τ {al.temperature:g}; chance "
               f"{1 / len(labels):.2f})" for name, (al, labels) in results.items()]
    n = len(results)
    fig = make_subplots(rows=2, cols=n, subplot_titles=titles, vertical_spacing=0.2, horizontal_spacing=0.12,
                        row_heights=[0.55, 0.45])
    for col, (name, (al, labels)) in enumerate(results.items(), start=1):
        cos = al.cosine[0]  # the expert: (blocks, waypoints)
        blocks, waypoints = cos.shape
        rows = [f"{'★ ' if b == al.align_block else ''}block {b}" for b in range(blocks)]
        cols = [f"{(i + 1) * interval_s:g} s" for i in range(waypoints)]
        fig.add_trace(go.Heatmap(z=cos, x=cols, y=rows, zmin=-1, zmax=1, colorscale="RdBu", reversescale=False,
                                 colorbar=dict(title="cos", len=0.45, y=0.78, x=1.0 if col == n else None,
                                               thickness=12),
                                 showscale=col == n, texttemplate="%{z:.2f}",
                                 hovertemplate="%{y}, waypoint %{x}: cos %{z:.3f}<extra>" + name + "</extra>"),
                      1, col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
        for kind in LABELS:
            idx = [i for i, lab in enumerate(labels) if lab == kind]
            if not idx:
                continue
            fig.add_trace(go.Scatter(x=[kind] * len(idx), y=al.pooled_cosine[idx], mode="markers",
                                     marker=dict(size=14 if kind == EXPERT else 9, color=LABEL_COLOR[kind],
                                                 symbol="star" if kind == EXPERT else "circle",
                                                 line=dict(width=1, color="#333333")),
                                     name=kind, legendgroup=kind, showlegend=col == 1,
                                     hovertemplate=kind + ": cos %{y:.3f}<extra>" + name + "</extra>"), 2, col)
        fig.update_yaxes(title_text="cos(projected, video target)", row=2, col=col, title_font=dict(size=11))
    fig.update_layout(height=620, margin=dict(l=60, r=40, t=60, b=40), legend=dict(orientation="h", y=-0.08),
                      plot_bgcolor="white")
    fig.update_annotations(font_size=12)
    return fig
