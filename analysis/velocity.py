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
# Okabe & Ito's colour-blind-safe palette for the heads; a sequential one (viridis) for the lens, shallow to deep
BLOCK_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
LENS_COLORS = ("#440154", "#482878", "#3E4A89", "#31688E", "#26828E", "#1F9E89", "#35B779", "#6DCD59", "#B4DE2C",
               "#FDE725")


def head_key(block: int) -> str:
    """Name of a head's decoded preview in `StepRecord.decoded` and `VelocityReport.previews`."""
    return f"head_{block}"


def lens_key(block: int) -> str:
    """Name of a block's lens (the output layer on its hidden state) in `VelocityReport.x0_latents`."""
    return f"block_{block}"


def layer_label(key: str, num_blocks: int | None = None) -> str:
    """A person's name for a layer key: "final output", "head on block 2 (trained)", "block 3 (lens)"."""
    if key == FINAL:
        return "final output"
    kind, block = key.split("_")
    if kind == "head":
        return f"head on block {block} (trained)"
    last = num_blocks is not None and int(block) == num_blocks - 1
    return f"block {block} (= output)" if last else f"block {block} (lens)"


def _layer_keys(lens_blocks, head_blocks) -> list[str]:
    keys = []
    for b in sorted(set(lens_blocks) | set(head_blocks)):
        if b in lens_blocks:
            keys.append(lens_key(b))
        if b in head_blocks:
            keys.append(head_key(b))
    return keys


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
    # the lens (records with `v_lens`): the output layer on every block, L = all blocks, the last is the output
    lens_blocks: tuple[int, ...] = ()
    lens_cosine: np.ndarray | None = None  # (S, L) cos(lens_k, v_f), mean over the batch
    lens_diff_rms: np.ndarray | None = None  # (S, L) RMS of v_f − lens_k [latent units]
    # x0 predictions of the first sample, for decoding on demand: "final" / "head_k" / "block_k" → (S, C, T_fut, h, w)
    x0_latents: dict[str, np.ndarray] = field(default_factory=dict)
    context_latents: np.ndarray | None = None  # (C, n_ctx, h, w) of the first sample, which the decoder reads first

    def layers(self) -> list[str]:
        """The keys of `x0_latents` in display order: each block's lens, shallow first, a trained head after the
        block it reads, the final output last."""
        return _layer_keys(self.lens_blocks, self.blocks) + ([FINAL] if FINAL in self.x0_latents else [])

    def to_dict(self) -> dict:
        """The numbers (no frames, no latents), for JSON."""
        return {
            "scene_name": self.scene_name, "sample_token": self.sample_token, "steps": self.steps,
            "guidance": self.guidance, "seed": self.seed, "sigma": self.sigmas, "guided": self.guided,
            "blocks": list(self.blocks),
            "per_block": {str(b): {"cosine": self.cosine[:, j], "diff_rms": self.diff_rms[:, j],
                                   "head_rms": self.head_rms[:, j]} for j, b in enumerate(self.blocks)},
            "final_rms": self.final_rms,
            "lens": {str(b): {"cosine": self.lens_cosine[:, j], "diff_rms": self.lens_diff_rms[:, j]}
                     for j, b in enumerate(self.lens_blocks)},
        }


def report_from_records(records, final_latents, *, scene_name: str = "", sample_token: str = "",
                        guidance: float = 1.0, seed: int = 0, heads=None) -> VelocityReport:
    """A `VelocityReport` from the sampler's `StepRecord`s and the sampled latents (…, C, T, h, w) whose
    last T_fut latent frames are the sampled future. heads: the head blocks to report (None: every head in the
    records; pass a pipeline's `trained_heads`, so that a head its run never trained is not shown as one). The
    lens rows come from records made with `record_lens`."""
    if not records:
        raise ValueError("no step records: sample with record=True")
    blocks = tuple(sorted(records[0].v_heads if heads is None else heads))
    missing = set(blocks) - set(records[0].v_heads)
    if missing:
        raise ValueError(f"heads {sorted(missing)} are not in the records (heads there: {sorted(records[0].v_heads)})")
    lens_blocks = tuple(sorted(records[0].v_lens))
    if not blocks and not lens_blocks:
        raise ValueError("no trained intermediate velocity head and no lens in the records: there is nothing to "
                         "compare v_f with (sample with the lens: record_lens / generate(lens=True))")
    cos, diff, head, final, path, guided, sigmas = [], [], [], [], [], [], []
    lens_cos, lens_diff = [], []
    x0: dict[str, list] = {}
    previews: dict[str, list] = {}
    for r in records:
        v_f = r.v_final
        v_f64 = _numpy(v_f).astype(np.float64)
        cos.append([cosine_similarity(r.v_heads[b], v_f).mean() for b in blocks])
        diff.append([rms(v_f64 - _numpy(r.v_heads[b])).mean() for b in blocks])
        head.append([rms(r.v_heads[b]).mean() for b in blocks])
        lens_cos.append([cosine_similarity(r.v_lens[b], v_f).mean() for b in lens_blocks])
        lens_diff.append([rms(v_f64 - _numpy(r.v_lens[b])).mean() for b in lens_blocks])
        final.append(rms(v_f).mean())
        x_t = _numpy(r.x0_final + r.sigma * v_f)[0]  # (C, T_fut, h, w), first sample
        path.append(x_t.reshape(-1))
        guided.append(r.guided)
        sigmas.append(r.sigma)
        x0.setdefault(FINAL, []).append(_numpy(r.x0_final)[0])
        for b in blocks:
            x0.setdefault(head_key(b), []).append(_numpy(r.x0_heads[b])[0])
        for b in lens_blocks:
            x0.setdefault(lens_key(b), []).append(x_t - r.sigma * _numpy(r.v_lens[b])[0])
        for key, frames in r.decoded.items():
            if key == FINAL or key in {head_key(b) for b in blocks}:
                previews.setdefault(key, []).append(_frames_uint8(frames))
    t_fut = records[0].v_final.shape[2]
    end = _numpy(final_latents)
    first = end.reshape(-1, *end.shape[-4:])[0]  # (C, T, h, w) of the first sample
    end = first[:, -t_fut:]  # (C, T_fut, h, w)
    path.append(end.reshape(-1))
    s = len(records)
    return VelocityReport(
        scene_name=scene_name, sample_token=sample_token, steps=s, guidance=float(guidance), seed=seed,
        sigmas=np.array(sigmas), guided=np.array(guided, dtype=bool), blocks=blocks,
        cosine=np.array(cos).reshape(s, len(blocks)), diff_rms=np.array(diff).reshape(s, len(blocks)),
        head_rms=np.array(head).reshape(s, len(blocks)), final_rms=np.array(final),
        latent_path=np.stack(path).astype(np.float32),
        previews={k: np.stack(v) for k, v in previews.items()},
        lens_blocks=lens_blocks,
        lens_cosine=np.array(lens_cos).reshape(s, len(lens_blocks)) if lens_blocks else None,
        lens_diff_rms=np.array(lens_diff).reshape(s, len(lens_blocks)) if lens_blocks else None,
        x0_latents={k: np.stack(v).astype(np.float32) for k, v in x0.items()},
        context_latents=first[:, :-t_fut].astype(np.float32),
    )


def velocity_discrepancy(pipe, clip, steps: int = 20, guidance: float = 1.0, seed: int = 0, *,
                         command: str | None = None, guidance_interval: tuple[float, float] | None = None,
                         decode_previews: bool = True, lens: bool = True) -> VelocityReport:
    """Sample the future of `clip` with `pipe.generate` (record=True) and measure v_i against v_f at every
    step for every trained head block and, with `lens`, the output layer's reading of every block; with
    `decode_previews` each head's and the final x0 prediction is decoded to frames."""
    result = pipe.generate(clip, steps=steps, guidance=guidance, seed=seed, command=command,
                           guidance_interval=guidance_interval, record=True, decode_previews=decode_previews,
                           lens=lens)
    return report_from_records(result.record, result.latents, scene_name=clip.scene_name,
                               sample_token=clip.sample_token, guidance=guidance, seed=seed,
                               heads=pipe.trained_heads)


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
    lens_blocks: tuple[int, ...] = ()
    lens_cosine_mean: np.ndarray | None = None  # (S, L)
    lens_cosine_std: np.ndarray | None = None
    lens_diff_rms_mean: np.ndarray | None = None  # (S, L)
    lens_diff_rms_std: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {
            "n_clips": self.n_clips, "steps": self.steps, "guidance": self.guidance, "sigma": self.sigmas,
            "blocks": list(self.blocks),
            "per_block": {str(b): {name: getattr(self, name)[:, j] for name in (
                "cosine_mean", "cosine_std", "diff_rms_mean", "diff_rms_std", "head_rms_mean", "head_rms_std")}
                for j, b in enumerate(self.blocks)},
            "final_rms_mean": self.final_rms_mean, "final_rms_std": self.final_rms_std,
            "lens": {str(b): {name: getattr(self, f"lens_{name}")[:, j] for name in (
                "cosine_mean", "cosine_std", "diff_rms_mean", "diff_rms_std")} for j, b in enumerate(self.lens_blocks)},
        }


def summarize(reports: list[VelocityReport]) -> VelocitySummary:
    if not reports:
        raise ValueError("summarize: no reports (no clips?)")
    first = reports[0]
    for r in reports[1:]:
        if (r.blocks != first.blocks or r.lens_blocks != first.lens_blocks
                or not np.allclose(r.sigmas, first.sigmas)):
            raise ValueError("summarize: reports differ in head blocks, lens or σ schedule; use the same steps and "
                             "model")
    stack = {name: np.stack([getattr(r, name) for r in reports]) for name in
             ("cosine", "diff_rms", "head_rms", "final_rms")}
    if first.lens_blocks:
        stack.update({name: np.stack([getattr(r, name) for r in reports]) for name in ("lens_cosine", "lens_diff_rms")})
    return VelocitySummary(
        n_clips=len(reports), steps=first.steps, guidance=first.guidance, sigmas=first.sigmas, blocks=first.blocks,
        lens_blocks=first.lens_blocks,
        **{f"{name}_{stat}": getattr(np, stat)(values, axis=0) for name, values in stack.items()
           for stat in ("mean", "std")},
    )


def mean_curves(pipe, clips, steps: int = 20, guidance: float = 1.0, seed: int = 0, *,
                command: str | None = None, callback=None, lens: bool = True) -> VelocitySummary:
    """`velocity_discrepancy` over every clip (no previews), summarised per step and block.
    `callback(i, n)` after each clip (progress bars)."""
    clips = list(clips)
    reports = []
    for i, clip in enumerate(clips):
        reports.append(velocity_discrepancy(pipe, clip, steps, guidance, seed, command=command,
                                            decode_previews=False, lens=lens))
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
    # (the lens rows are not needed here, but a model without a trained head has only them to report)
    return guidance_comparison(guided, plain)


# --------------------------------------------------------------------------- figures


def _block_names(blocks) -> list[str]:
    return [f"head block {b}" for b in blocks]


def _rows(data, value: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Heatmap rows of a report or summary: each block's lens (shallow first) with a trained head after the block
    it reads. value "cosine" or "diff_rms" → (labels, mean (S, R), std (S, R))."""
    head_mean, head_std = _get(data, value)
    lens_blocks = tuple(getattr(data, "lens_blocks", ()))
    if lens_blocks:
        lens_mean, lens_std = _get(data, f"lens_{value}")
    n_blocks = max(lens_blocks) + 1 if lens_blocks else None
    labels, means, stds = [], [], []
    for key in _layer_keys(lens_blocks, data.blocks):
        kind, b = key.split("_")
        j = (data.blocks if kind == "head" else lens_blocks).index(int(b))
        m, sd = (head_mean, head_std) if kind == "head" else (lens_mean, lens_std)
        labels.append(("★ " if kind == "head" else "") + layer_label(key, n_blocks))
        means.append(m[:, j])
        stds.append(sd[:, j])
    s = len(data.sigmas)
    return labels, np.array(means).T.reshape(s, len(labels)), np.array(stds).T.reshape(s, len(labels))


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
    """Step × layer heatmap of the cosine to v_f (`value="cosine"`) or the RMS of the difference ("diff_rms"): one
    row per block (the output layer read on that block: the lens) and per trained head (★), shallow at the top."""
    if value not in ("cosine", "diff_rms"):
        raise ValueError(f"value must be 'cosine' or 'diff_rms', got {value!r}")
    labels, z, _ = _rows(data, value)
    steps = np.arange(len(data.sigmas))
    sigma = np.broadcast_to(data.sigmas[None, :], z.T.shape)
    kwargs = dict(zmin=-1.0, zmax=1.0, colorscale="RdBu", zmid=0.0) if value == "cosine" else dict(colorscale="Viridis")
    label = "cos(v_layer, v_f)" if value == "cosine" else "RMS(v_f − v_layer)"
    fig = go.Figure(go.Heatmap(
        z=z.T, x=steps, y=labels, customdata=sigma,
        colorbar=dict(title=dict(text="cos" if value == "cosine" else "RMS", side="top"), thickness=14, len=0.9),
        hovertemplate="step %{x} (σ = %{customdata:.3f})<br>%{y}<br>" + label + " = %{z:.4f}<extra></extra>",
        **kwargs))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=dict(text=f"{label} per denoising step and layer<br><sup>{_title_suffix(data)}; "
                                      "★ a trained head</sup>"),
                      xaxis_title="denoising step (σ: 1 → 0)", yaxis_title="",
                      height=200 + 28 * len(labels), margin=dict(l=10, r=10, t=80, b=50))
    return fig


def _band(fig, x, mean, std, color, name, row, col, show_legend, dash: str | None = None):
    if np.any(std > 0):
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                 fill="toself", fillcolor=color, opacity=0.2, line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=name), row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=name, legendgroup=name, showlegend=show_legend,
                             line=dict(color=color, dash=dash),
                             hovertemplate=name + "<br>step %{x}: %{y:.4f}<extra></extra>"), row=row, col=col)


def discrepancy_curves(data: VelocityReport | VelocitySummary) -> go.Figure:
    """Per-step curves (mean ± std band over clips for a summary): the cosine to v_f and the RMS of the difference
    for each trained head (solid) and each block's lens (dotted; the last block, which is the output, left out),
    and the RMS of v_f and of each head's v_i."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("cosine to v_f", "RMS(v_f − v_layer)", "RMS of v_f and v_i"))
    x = np.arange(len(data.sigmas))
    for j, (b, name) in enumerate(zip(data.blocks, _block_names(data.blocks))):
        color = BLOCK_COLORS[j % len(BLOCK_COLORS)]
        for col, field_ in ((1, "cosine"), (2, "diff_rms"), (3, "head_rms")):
            mean, std = _get(data, field_)
            _band(fig, x, mean[:, j], std[:, j], color, name, 1, col, show_legend=col == 1)
    lens_blocks = tuple(getattr(data, "lens_blocks", ()))
    shown = lens_blocks[:-1]
    for j, b in enumerate(shown):
        color = LENS_COLORS[round(j * (len(LENS_COLORS) - 1) / max(len(shown) - 1, 1))]
        for col, field_ in ((1, "lens_cosine"), (2, "lens_diff_rms")):
            mean, std = _get(data, field_)
            _band(fig, x, mean[:, j], std[:, j], color, f"lens block {b}", 1, col, show_legend=col == 1, dash="dot")
    mean, std = _get(data, "final_rms")
    _band(fig, x, mean, std, "#000000", "final v_f", 1, 3, show_legend=True)
    fig.update_xaxes(title_text="denoising step (σ: 1 → 0)")
    fig.update_layout(title=dict(text=f"Intermediate vs final velocity<br><sup>{_title_suffix(data)}</sup>"),
                      height=430, legend=dict(orientation="h", yanchor="top", y=-0.22, x=0),
                      margin=dict(t=80, b=110))
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


@dataclass
class LayerPreview:
    """One layer's decoded x0 prediction at one step beside the final output's, and their difference."""

    key: str
    step: int
    sigma: float
    layer: np.ndarray  # (T_fut, H, W, 3) uint8
    final: np.ndarray  # (T_fut, H, W, 3) uint8
    difference: np.ndarray  # (T_fut, H, W, 3) uint8: |layer − final| × gain, grey
    gain: float  # the amplification of `difference`
    max_levels: float  # the largest per-pixel difference [grey levels of 255]
    mean_levels: float  # the mean per-pixel difference [grey levels of 255]


def layer_preview(report: VelocityReport, decode, step: int, key: str) -> LayerPreview:
    """Decode the x0 prediction of layer `key` (`report.layers()`) and of the final output at `step` with
    `decode(context_latents, future_latents) → frames (T_fut, 3, H, W) in [-1, 1]` (a pipeline's `decode_future`),
    and their absolute difference amplified so that its 99th percentile is white (gain between 1 and 64)."""
    import torch

    if key not in report.x0_latents:
        raise ValueError(f"layer {key!r} is not in this report; its layers: {report.layers()}")
    if not 0 <= step < report.steps:
        raise ValueError(f"step must be in [0, {report.steps - 1}], got {step}")
    ctx = torch.from_numpy(report.context_latents)
    frames = {k: _frames_uint8(decode(ctx, torch.from_numpy(report.x0_latents[k][step]))) for k in {key, FINAL}}
    d = np.abs(frames[key].astype(np.float64) - frames[FINAL].astype(np.float64)).mean(axis=-1)  # (T, H, W)
    p99 = float(np.percentile(d, 99)) if d.size else 0.0
    gain = float(np.clip(255.0 / p99, 1.0, 64.0)) if p99 > 0 else 64.0
    diff = np.repeat(np.clip(d * gain, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return LayerPreview(key=key, step=int(step), sigma=float(report.sigmas[step]), layer=frames[key],
                        final=frames[FINAL], difference=diff, gain=gain, max_levels=float(d.max()),
                        mean_levels=float(d.mean()))


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
