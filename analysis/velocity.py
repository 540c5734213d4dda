"""Intermediate vs final velocity of the Video DiT, per denoising step and per head block (docs/design.md §2, §7).

One sampling run through the library's pipeline (`WorldActionPipeline.generate(record=True)`, which calls
the one Euler sampler) gives, at every step, the final velocity `v_f` and each head's `v_i` from the same
forward pass, on the future latent frames only. From them:

- `cosine`: cos(v_i, v_f), each sample's future latents flattened to one vector (NaN if either is 0);
- `diff_rms`: RMS of v_f − v_i, `head_rms` / `final_rms`: RMS of v_i / v_f (latent units);
- previews: the x0 prediction of each layer (x_t − σ v), decoded by the VAE: a "lens" per layer;
- the latent path x_σ of the sample (x_t = x0_f + σ v_f at each step start, then the final latents),
  so guided and unguided runs from the same seed can be compared (`guidance_comparison`).

The report describes the run it came from: with guidance w ≠ 1 the trajectory is the guided one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

FINAL = "final"
BLOCK_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def head_key(block: int) -> str:
    """Name of a head's decoded preview in `StepRecord.decoded` and `VelocityReport.previews`."""
    return f"head_{block}"


# --------------------------------------------------------------------------- numbers


def cosine_similarity(a, b) -> np.ndarray:
    """Per-sample cosine of two (B, …) arrays or tensors, every non-batch axis flattened; NaN where either
    vector is zero. Computed in float64."""
    a = _numpy(a).reshape(len(a), -1).astype(np.float64)
    b = _numpy(b).reshape(len(b), -1).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cosine_similarity: shapes differ, {a.shape} vs {b.shape}")
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, dot / np.where(norm > 0, norm, 1.0), np.nan)


def rms(x) -> np.ndarray:
    """Per-sample root mean square of a (B, …) array or tensor."""
    x = _numpy(x).reshape(len(x), -1).astype(np.float64)
    return np.sqrt((x**2).mean(axis=1))


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x)


def _frames_uint8(frames) -> np.ndarray:
    """(T, 3, H, W) in [-1, 1] → (T, H, W, 3) uint8."""
    f = _numpy(frames)
    return np.clip((f.transpose(0, 2, 3, 1) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


@dataclass
class VelocityReport:
    """Velocity discrepancy of one sampling run of one clip. S = steps, K = head blocks."""

    scene_name: str
    sample_token: str
    steps: int
    guidance: float  # w of the run the report describes
    seed: int
    sigmas: np.ndarray  # (S,) σ at the start of each step
    guided: np.ndarray  # (S,) bool: whether v_w (not v_f) moved the sample at this step
    blocks: tuple[int, ...]  # blocks with a velocity head, shallow first
    cosine: np.ndarray  # (S, K) cos(v_i, v_f), mean over the batch
    diff_rms: np.ndarray  # (S, K) RMS of v_f − v_i [latent units]
    head_rms: np.ndarray  # (S, K) RMS of v_i [latent units]
    final_rms: np.ndarray  # (S,) RMS of v_f [latent units]
    latent_path: np.ndarray  # (S + 1, D) float32: flattened future latents at each step start, then the end
    previews: dict[str, np.ndarray] = field(default_factory=dict)  # "final"/"head_k" → (S, T_fut, H, W, 3) uint8

    def to_dict(self) -> dict:
        """The numbers (no frames, no latents), for JSON."""
        return {
            "scene_name": self.scene_name, "sample_token": self.sample_token, "steps": self.steps,
            "guidance": self.guidance, "seed": self.seed, "sigma": self.sigmas, "guided": self.guided,
            "blocks": list(self.blocks),
            "per_block": {str(b): {"cosine": self.cosine[:, j], "diff_rms": self.diff_rms[:, j],
                                   "head_rms": self.head_rms[:, j]} for j, b in enumerate(self.blocks)},
            "final_rms": self.final_rms,
        }


def report_from_records(records, final_latents, *, scene_name: str = "", sample_token: str = "",
                        guidance: float = 1.0, seed: int = 0) -> VelocityReport:
    """A `VelocityReport` from the sampler's `StepRecord`s and the sampled latents (…, C, T, h, w) whose
    last T_fut latent frames are the sampled future."""
    if not records:
        raise ValueError("no step records: sample with record=True")
    blocks = tuple(sorted(records[0].v_heads))
    if not blocks:
        raise ValueError("the Video DiT has no intermediate velocity head: there is nothing to compare v_f with")
    cos, diff, head, final, path, guided, sigmas = [], [], [], [], [], [], []
    previews: dict[str, list] = {}
    for r in records:
        v_f = r.v_final
        v_f64 = _numpy(v_f).astype(np.float64)
        cos.append([cosine_similarity(r.v_heads[b], v_f).mean() for b in blocks])
        diff.append([rms(v_f64 - _numpy(r.v_heads[b])).mean() for b in blocks])
        head.append([rms(r.v_heads[b]).mean() for b in blocks])
        final.append(rms(v_f).mean())
        path.append(_numpy(r.x0_final + r.sigma * v_f)[0].reshape(-1))  # x_t = x0_f + σ v_f, first sample
        guided.append(r.guided)
        sigmas.append(r.sigma)
        for key, frames in r.decoded.items():
            previews.setdefault(key, []).append(_frames_uint8(frames))
    t_fut = records[0].v_final.shape[2]
    end = _numpy(final_latents)
    end = end.reshape(-1, *end.shape[-4:])[0, :, -t_fut:]  # (C, T_fut, h, w) of the first sample
    path.append(end.reshape(-1))
    return VelocityReport(
        scene_name=scene_name, sample_token=sample_token, steps=len(records), guidance=float(guidance), seed=seed,
        sigmas=np.array(sigmas), guided=np.array(guided, dtype=bool), blocks=blocks,
        cosine=np.array(cos), diff_rms=np.array(diff), head_rms=np.array(head), final_rms=np.array(final),
        latent_path=np.stack(path).astype(np.float32),
        previews={k: np.stack(v) for k, v in previews.items()},
    )


def velocity_discrepancy(pipe, clip, steps: int = 20, guidance: float = 1.0, seed: int = 0, *,
                         command: str | None = None, guidance_interval: tuple[float, float] | None = None,
                         decode_previews: bool = True) -> VelocityReport:
    """Sample the future of `clip` with `pipe.generate` (record=True) and measure v_i against v_f at every
    step for every head block; with `decode_previews` each layer's x0 prediction is decoded to frames."""
    result = pipe.generate(clip, steps=steps, guidance=guidance, seed=seed, command=command,
                           guidance_interval=guidance_interval, record=True, decode_previews=decode_previews)
    return report_from_records(result.record, result.latents, scene_name=clip.scene_name,
                               sample_token=clip.sample_token, guidance=guidance, seed=seed)


@dataclass
class VelocitySummary:
    """Mean and standard deviation (over clips, ddof 0) of `VelocityReport`s of the same layout."""

    n_clips: int
    steps: int
    guidance: float
    sigmas: np.ndarray  # (S,)
    blocks: tuple[int, ...]
    cosine_mean: np.ndarray  # (S, K)
    cosine_std: np.ndarray
    diff_rms_mean: np.ndarray  # (S, K) [latent units]
    diff_rms_std: np.ndarray
    head_rms_mean: np.ndarray  # (S, K)
    head_rms_std: np.ndarray
    final_rms_mean: np.ndarray  # (S,)
    final_rms_std: np.ndarray

    def to_dict(self) -> dict:
        return {
            "n_clips": self.n_clips, "steps": self.steps, "guidance": self.guidance, "sigma": self.sigmas,
            "blocks": list(self.blocks),
            "per_block": {str(b): {name: getattr(self, name)[:, j] for name in (
                "cosine_mean", "cosine_std", "diff_rms_mean", "diff_rms_std", "head_rms_mean", "head_rms_std")}
                for j, b in enumerate(self.blocks)},
            "final_rms_mean": self.final_rms_mean, "final_rms_std": self.final_rms_std,
        }


def summarize(reports: list[VelocityReport]) -> VelocitySummary:
    if not reports:
        raise ValueError("summarize: no reports (no clips?)")
    first = reports[0]
    for r in reports[1:]:
        if r.blocks != first.blocks or not np.allclose(r.sigmas, first.sigmas):
            raise ValueError("summarize: reports differ in head blocks or σ schedule; use the same steps and model")
    stack = {name: np.stack([getattr(r, name) for r in reports]) for name in
             ("cosine", "diff_rms", "head_rms", "final_rms")}
    return VelocitySummary(
        n_clips=len(reports), steps=first.steps, guidance=first.guidance, sigmas=first.sigmas, blocks=first.blocks,
        **{f"{name}_{stat}": getattr(np, stat)(values, axis=0) for name, values in stack.items()
           for stat in ("mean", "std")},
    )


def mean_curves(pipe, clips, steps: int = 20, guidance: float = 1.0, seed: int = 0, *,
                command: str | None = None, callback=None) -> VelocitySummary:
    """`velocity_discrepancy` over every clip (no previews), summarised per step and block.
    `callback(i, n)` after each clip (progress bars)."""
    clips = list(clips)
    reports = []
    for i, clip in enumerate(clips):
        reports.append(velocity_discrepancy(pipe, clip, steps, guidance, seed, command=command,
                                            decode_previews=False))
        if callback is not None:
            callback(i + 1, len(clips))
    return summarize(reports)


# --------------------------------------------------------------------------- guided vs unguided


@dataclass
class GuidanceComparison:
    """The latent paths of a guided and an unguided run from the same seed (same starting noise)."""

    guidance: float  # w of the guided run
    sigmas: np.ndarray  # (S + 1,) σ of each point on the paths; the last is 0 (the sample)
    distance_rms: np.ndarray  # (S + 1,) RMS of x_guided − x_unguided [latent units]; 0 at the start
    guided_pca: np.ndarray  # (S + 1, 2) the guided path on the 2 principal axes of both paths together
    unguided_pca: np.ndarray  # (S + 1, 2)
    explained_variance_ratio: np.ndarray  # (2,)

    def to_dict(self) -> dict:
        return {"guidance": self.guidance, "sigma": self.sigmas, "distance_rms": self.distance_rms,
                "guided_pca": self.guided_pca, "unguided_pca": self.unguided_pca,
                "explained_variance_ratio": self.explained_variance_ratio}


def guidance_comparison(guided: VelocityReport, unguided: VelocityReport) -> GuidanceComparison:
    if guided.latent_path.shape != unguided.latent_path.shape:
        raise ValueError("guidance_comparison: the two runs differ in steps or latent size")
    if not np.allclose(guided.sigmas, unguided.sigmas):
        raise ValueError("guidance_comparison: the two runs use different σ schedules")
    a, b = guided.latent_path.astype(np.float64), unguided.latent_path.astype(np.float64)
    both = np.concatenate([a, b])
    centred = both - both.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T  # (2(S+1), ≤2)
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    var = s**2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    n = len(a)
    return GuidanceComparison(
        guidance=guided.guidance, sigmas=np.append(guided.sigmas, 0.0),
        distance_rms=np.sqrt(((a - b) ** 2).mean(axis=1)),
        guided_pca=proj[:n], unguided_pca=proj[n:], explained_variance_ratio=np.pad(ratio, (0, 2 - len(ratio))),
    )


def compare_guidance(pipe, clip, steps: int = 20, guidance: float = 1.4, seed: int = 0,
                     command: str | None = None) -> GuidanceComparison:
    """Two runs of `clip` from the same seed, with guidance `w` and without (w = 1)."""
    guided = velocity_discrepancy(pipe, clip, steps, guidance, seed, command=command, decode_previews=False)
    plain = velocity_discrepancy(pipe, clip, steps, 1.0, seed, command=command, decode_previews=False)
    return guidance_comparison(guided, plain)


# --------------------------------------------------------------------------- figures


def _block_names(blocks) -> list[str]:
    return [f"head block {b}" for b in blocks]


def _get(data, name: str):
    """(mean, std) of a field of a report (std = 0) or a summary."""
    if isinstance(data, VelocitySummary):
        return getattr(data, f"{name}_mean"), getattr(data, f"{name}_std")
    value = getattr(data, name)
    return value, np.zeros_like(value)


def _title_suffix(data) -> str:
    if isinstance(data, VelocitySummary):
        return f"mean over {data.n_clips} clip(s), w = {data.guidance:g}"
    return f"{data.scene_name} {data.sample_token[:8]}, w = {data.guidance:g}, seed {data.seed}"


def cosine_heatmap(data: VelocityReport | VelocitySummary, value: str = "cosine") -> go.Figure:
    """Step × head-block heatmap of cos(v_i, v_f) (`value="cosine"`) or RMS of v_f − v_i ("diff_rms")."""
    if value not in ("cosine", "diff_rms"):
        raise ValueError(f"value must be 'cosine' or 'diff_rms', got {value!r}")
    z, _ = _get(data, value)
    steps = np.arange(len(data.sigmas))
    sigma = np.broadcast_to(data.sigmas[None, :], z.T.shape)
    kwargs = dict(zmin=-1.0, zmax=1.0, colorscale="RdBu", zmid=0.0) if value == "cosine" else dict(colorscale="Viridis")
    label = "cos(v_i, v_f)" if value == "cosine" else "RMS(v_f − v_i)"
    fig = go.Figure(go.Heatmap(
        z=z.T, x=steps, y=_block_names(data.blocks), customdata=sigma, colorbar=dict(title=label),
        hovertemplate="step %{x} (σ = %{customdata:.3f})<br>%{y}<br>" + label + " = %{z:.4f}<extra></extra>",
        **kwargs))
    fig.update_layout(title=f"{label} per denoising step and head block — {_title_suffix(data)}",
                      xaxis_title="denoising step (σ: 1 → 0)", yaxis_title="", height=200 + 40 * len(data.blocks))
    return fig


def _band(fig, x, mean, std, color, name, row, col, show_legend):
    if np.any(std > 0):
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                 fill="toself", fillcolor=color, opacity=0.2, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=name), row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=name, legendgroup=name, showlegend=show_legend,
                             line=dict(color=color),
                             hovertemplate=name + "<br>step %{x}: %{y:.4f}<extra></extra>"), row=row, col=col)


def discrepancy_curves(data: VelocityReport | VelocitySummary) -> go.Figure:
    """Per-step curves (mean ± std band over clips for a summary): cosine, RMS(v_f − v_i), RMS of v_f and v_i."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("cos(v_i, v_f)", "RMS(v_f − v_i)", "RMS of v_f and v_i"))
    x = np.arange(len(data.sigmas))
    for j, (b, name) in enumerate(zip(data.blocks, _block_names(data.blocks))):
        color = BLOCK_COLORS[j % len(BLOCK_COLORS)]
        for col, field_ in ((1, "cosine"), (2, "diff_rms"), (3, "head_rms")):
            mean, std = _get(data, field_)
            _band(fig, x, mean[:, j], std[:, j], color, name, 1, col, show_legend=col == 1)
    mean, std = _get(data, "final_rms")
    _band(fig, x, mean, std, "#000000", "final v_f", 1, 3, show_legend=True)
    fig.update_xaxes(title_text="denoising step (σ: 1 → 0)")
    fig.update_layout(title=f"Intermediate vs final velocity — {_title_suffix(data)}", height=380)
    return fig


def preview_strip(report: VelocityReport, frame: int = -1, max_columns: int = 8, gap: int = 2) -> np.ndarray:
    """A uint8 image (rows: head blocks shallow first, then final; columns: up to `max_columns` steps
    spread over the run) of one future frame of each layer's decoded x0 prediction. Returns the montage
    (H_total, W_total, 3); `preview_columns(report, max_columns)` gives the steps of its columns."""
    if not report.previews:
        raise ValueError("the report has no decoded previews: run velocity_discrepancy with decode_previews=True")
    keys = [head_key(b) for b in report.blocks] + [FINAL]
    cols = preview_columns(report, max_columns)
    tiles = [[report.previews[k][s, frame] for s in cols] for k in keys]
    h, w, _ = tiles[0][0].shape
    out = np.full((len(keys) * (h + gap) - gap, len(cols) * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            out[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = tile
    return out


def preview_columns(report: VelocityReport, max_columns: int = 8) -> list[int]:
    n = report.steps
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(n, max_columns))})


def preview_strip_figure(report: VelocityReport, frame: int = -1, max_columns: int = 8) -> go.Figure:
    """`preview_strip` as a figure, rows and columns labelled (layer, step and σ)."""
    gap = 2
    img = preview_strip(report, frame, max_columns, gap)
    cols = preview_columns(report, max_columns)
    keys = [head_key(b) for b in report.blocks] + [FINAL]
    h, w = report.previews[FINAL].shape[2:4]
    fig = go.Figure(go.Image(z=img, hoverinfo="skip"))
    fig.update_xaxes(tickvals=[j * (w + gap) + w / 2 for j in range(len(cols))],
                     ticktext=[f"step {s}<br>σ={report.sigmas[s]:.2f}" for s in cols], side="top")
    fig.update_yaxes(tickvals=[i * (h + gap) + h / 2 for i in range(len(keys))],
                     ticktext=[k.replace("_", " block ") if k != FINAL else "final" for k in keys])
    frame_name = "last" if frame == -1 else str(frame)
    fig.update_layout(title=f"Decoded x0 prediction per layer ({frame_name} future frame) — {_title_suffix(report)}",
                      height=120 + len(keys) * max(h, 60) * 1.2, margin=dict(t=110))
    return fig


def guidance_figure(cmp: GuidanceComparison) -> go.Figure:
    """Distance between the guided and unguided latents per step, and both paths in a joint 2-D PCA."""
    evr = cmp.explained_variance_ratio
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "RMS(x_guided − x_unguided) per step",
        f"latent paths, PCA (PC1 {evr[0]:.0%}, PC2 {evr[1]:.0%} of variance)"))
    x = np.arange(len(cmp.sigmas))
    fig.add_trace(go.Scatter(x=x, y=cmp.distance_rms, mode="lines+markers", name="distance", customdata=cmp.sigmas,
                             hovertemplate="step %{x} (σ = %{customdata:.3f}): %{y:.4f}<extra></extra>",
                             line=dict(color="#444444")), row=1, col=1)
    for path, name, color in ((cmp.unguided_pca, "unguided (w = 1)", "#1f77b4"),
                              (cmp.guided_pca, f"guided (w = {cmp.guidance:g})", "#d62728")):
        fig.add_trace(go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", name=name, customdata=cmp.sigmas,
                                 line=dict(color=color), marker=dict(size=6),
                                 hovertemplate=name + "<br>σ = %{customdata:.3f}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[cmp.guided_pca[0, 0]], y=[cmp.guided_pca[0, 1]], mode="markers+text",
                             text=["noise (σ = 1)"], textposition="top center", showlegend=False,
                             marker=dict(size=11, color="#000000", symbol="x")), row=1, col=2)
    fig.update_xaxes(title_text="step (last point: the sample, σ = 0)", row=1, col=1)
    fig.update_xaxes(title_text="PC1", row=1, col=2)
    fig.update_yaxes(title_text="PC2", row=1, col=2)
    fig.update_layout(title=f"Guided vs unguided sampling from the same seed (w = {cmp.guidance:g})", height=420)
    return fig
