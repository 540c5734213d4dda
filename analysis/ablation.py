"""Ablation results: training curves and metric tables from CSV, overlays, steps to reach a target.

Two CSV formats (header row required, extra columns ignored):

**Training curves** (long / tidy: one row per logged value)::

    step,run,seed,metric,value
    0,vanilla,0,val/loss_fm,0.91
    500,vanilla,0,val/loss_fm,0.42
    0,reworld,0,val/loss_fm,0.90
    ...

`step`: integer optimiser step (≥ 0); `run`: ablation arm (e.g. vanilla, +IG, +align, +hn, full);
`seed`: integer training seed (curves of one run over several seeds are averaged); `metric`: any name
(loss terms, val PDMS, …); `value`: a finite number. `curves_from_run_logs` converts the run folders that
`python -m reworld train` writes (`logs/<stage>.csv`: step, kind, time, name, value) into this format.

**Metric tables** (wide: one row per run and seed)::

    run,seed,pdms,nc,dac,l2_3s
    vanilla,0,0.81,0.97,0.92,1.21
    reworld,0,0.86,0.98,0.95,1.02

`run` is required, `seed` optional; every other column is a numeric metric.

`read_ablation_csv` tells the two apart (curves have step, metric and value columns).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reworld.evaluation.curves import steps_to_reach

CURVE_COLUMNS = ("step", "run", "seed", "metric", "value")
RUN_COLORS = ("#7f7f7f", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


class AblationFormatError(ValueError):
    """A CSV that does not follow the documented format; the message names the file and the problem."""


# --------------------------------------------------------------------------- reading


def _read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV not found: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise AblationFormatError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if df.empty:
        raise AblationFormatError(f"{path}: no rows")
    return df


def _numeric(df: pd.DataFrame, column: str, where: str, integer: bool = False) -> pd.Series:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.astype(float))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise AblationFormatError(f"{where}: column {column!r} row {row + 1}: expected a finite number, "
                                  f"got {df[column].iloc[row]!r}")
    if integer:
        if (values != values.round()).any():
            raise AblationFormatError(f"{where}: column {column!r} must hold integers")
        return values.astype(np.int64)
    return values.astype(np.float64)


def validate_curves(df: pd.DataFrame, where: str = "curves") -> pd.DataFrame:
    """A clean copy (typed, sorted by run, metric, seed, step) of a long-format curves frame."""
    missing = [c for c in CURVE_COLUMNS if c not in df.columns]
    if missing:
        raise AblationFormatError(f"{where}: missing column(s) {missing}; training curves need columns "
                                  f"{list(CURVE_COLUMNS)}")
    out = pd.DataFrame({
        "step": _numeric(df, "step", where, integer=True), "run": df["run"].astype(str),
        "seed": _numeric(df, "seed", where, integer=True), "metric": df["metric"].astype(str),
        "value": _numeric(df, "value", where),
    })
    if (out["step"] < 0).any():
        raise AblationFormatError(f"{where}: steps must be ≥ 0")
    dup = out.duplicated(["run", "seed", "metric", "step"])
    if dup.any():
        r = out[dup].iloc[0]
        raise AblationFormatError(f"{where}: duplicate rows for run {r.run!r}, seed {r.seed}, metric {r.metric!r}, "
                                  f"step {r.step}")
    return out.sort_values(["run", "metric", "seed", "step"], kind="stable").reset_index(drop=True)


def read_curves(path: str | Path) -> pd.DataFrame:
    return validate_curves(_read_csv(path), str(path))


def validate_metric_table(df: pd.DataFrame, where: str = "table") -> pd.DataFrame:
    if "run" not in df.columns:
        raise AblationFormatError(f"{where}: missing column 'run'; metric tables need run[, seed], metric columns")
    metrics = [c for c in df.columns if c not in ("run", "seed")]
    if not metrics:
        raise AblationFormatError(f"{where}: no metric columns besides run/seed")
    out = pd.DataFrame({"run": df["run"].astype(str)})
    out["seed"] = _numeric(df, "seed", where, integer=True) if "seed" in df.columns else 0
    for m in metrics:
        out[m] = _numeric(df, m, where)
    return out


def read_metric_table(path: str | Path) -> pd.DataFrame:
    return validate_metric_table(_read_csv(path), str(path))


RESULT_COLUMNS = ("arm", "seed", "metric", "value")  # the claims study's per-seed results (docs/study.md §5)


def validate_results(df: pd.DataFrame, where: str = "results") -> pd.DataFrame:
    """A typed copy of a long-format results frame: one final value per arm, seed and metric."""
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise AblationFormatError(f"{where}: missing column(s) {missing}; results need columns {list(RESULT_COLUMNS)}")
    out = pd.DataFrame({"arm": df["arm"].astype(str), "seed": _numeric(df, "seed", where, integer=True),
                        "metric": df["metric"].astype(str), "value": _numeric(df, "value", where)})
    dup = out.duplicated(["arm", "seed", "metric"])
    if dup.any():
        r = out[dup].iloc[0]
        raise AblationFormatError(f"{where}: duplicate rows for arm {r.arm!r}, seed {r.seed}, metric {r.metric!r}")
    return out


def read_ablation_csv(path: str | Path) -> tuple[str, pd.DataFrame]:
    """("curves", frame), ("results", frame) or ("table", frame), by the columns present."""
    df = _read_csv(path)
    if {"step", "metric", "value"} <= set(df.columns):
        return "curves", validate_curves(df, str(path))
    if set(RESULT_COLUMNS) <= set(df.columns):
        return "results", validate_results(df, str(path))
    if "run" in df.columns:
        return "table", validate_metric_table(df, str(path))
    raise AblationFormatError(f"{path}: neither training curves (columns {list(CURVE_COLUMNS)}) nor a metric table "
                              f"(a 'run' column and metric columns); got columns {list(df.columns)}")


def curves_from_run_logs(run_dir: str | Path, run: str, seed: int = 0, kinds: tuple[str, ...] = ("train", "val"),
                         ) -> pd.DataFrame:
    """Training curves of one run folder (`logs/<stage>.csv` as written by `reworld train`): metric names
    become `<stage>/<kind>/<name>`."""
    logs = sorted((Path(run_dir) / "logs").glob("*.csv"))
    if not logs:
        raise FileNotFoundError(f"no training logs in {Path(run_dir) / 'logs'}")
    frames = []
    for path in logs:
        df = _read_csv(path)
        missing = [c for c in ("step", "kind", "name", "value") if c not in df.columns]
        if missing:
            raise AblationFormatError(f"{path}: missing column(s) {missing} of a training log")
        df = df[df["kind"].astype(str).isin(kinds)]
        frames.append(pd.DataFrame({"step": df["step"], "run": run, "seed": seed,
                                    "metric": path.stem + "/" + df["kind"].astype(str) + "/" + df["name"].astype(str),
                                    "value": df["value"]}))
    out = pd.concat(frames, ignore_index=True)
    # a resumed run may log a step twice; the later row is the one that counts
    out = out.drop_duplicates(["run", "seed", "metric", "step"], keep="last")
    return validate_curves(out, str(run_dir))


# --------------------------------------------------------------------------- numbers


def parse_target(text: str) -> tuple[str, float, str]:
    """'val/loss<=0.2' → ('val/loss', 0.2, 'min'); 'pdms>=0.8' → ('pdms', 0.8, 'max'); 'x=0.1' means ≤."""
    for op, mode in (("<=", "min"), (">=", "max"), ("=", "min")):
        if op in text:
            name, _, value = text.rpartition(op)
            try:
                return name.strip(), float(value), mode
            except ValueError:
                break
    raise ValueError(f"target {text!r}: expected METRIC<=VALUE, METRIC>=VALUE or METRIC=VALUE (meaning ≤)")


def curve_stats(df: pd.DataFrame, targets: dict[str, tuple[float, str]] | None = None, smooth: int = 1) -> dict:
    """Per run and metric: seeds, last step, final value (mean, std over seeds), best value, and for the
    metrics in `targets` ({metric: (target, mode)}) the steps to reach it per seed and their mean over the
    seeds that reached it."""
    targets = targets or {}
    unknown = sorted(set(targets) - set(df["metric"]))
    if unknown:
        raise ValueError(f"target metric(s) {unknown} not in the curves; metrics: {sorted(df['metric'].unique())}")
    out: dict = {}
    for (run, metric), g in df.groupby(["run", "metric"], sort=True):
        finals, bests, reach = [], [], {}
        mode = targets.get(metric, (None, "min"))[1]
        for seed, s in g.groupby("seed"):
            finals.append(s["value"].iloc[-1])
            bests.append(s["value"].min() if mode == "min" else s["value"].max())
            if metric in targets:
                reach[str(seed)] = steps_to_reach(s, targets[metric][0], mode, smooth)
        entry = {"seeds": int(g["seed"].nunique()), "last_step": int(g["step"].max()),
                 "final_mean": float(np.mean(finals)), "final_std": float(np.std(finals)),
                 "best_mean": float(np.mean(bests))}
        if metric in targets:
            reached = [v for v in reach.values() if np.isfinite(v)]
            entry.update(target=targets[metric][0], mode=mode, steps_to_reach=reach,
                         steps_to_reach_mean=float(np.mean(reached)) if reached else math.nan,
                         reached=f"{len(reached)}/{len(reach)}")
        out.setdefault(run, {})[metric] = entry
    return out


def table_summary(df: pd.DataFrame) -> dict:
    """Per run and metric of a metric table: mean, std (over seeds, ddof 0) and n."""
    metrics = [c for c in df.columns if c not in ("run", "seed")]
    out: dict = {}
    for run, g in df.groupby("run", sort=False):
        out[run] = {m: {"mean": float(g[m].mean()), "std": float(g[m].std(ddof=0)), "n": int(len(g))}
                    for m in metrics}
    return out


# --------------------------------------------------------------------------- figures


def _mean_over_seeds(g: pd.DataFrame, smooth: int) -> pd.DataFrame:
    if smooth > 1:
        g = g.assign(value=g.groupby("seed")["value"].transform(lambda v: v.rolling(smooth, min_periods=1).mean()))
    return g.groupby("step")["value"].agg(["mean", "std", "count"]).reset_index().fillna({"std": 0.0})


def curves_figure(df: pd.DataFrame, metrics: list[str] | None = None, smooth: int = 1,
                  targets: dict[str, tuple[float, str]] | None = None, log_y: bool = False) -> go.Figure:
    """One panel per metric, one colour per run: mean over seeds with a ±std band where there are ≥ 2
    seeds; dotted lines at the targets."""
    metrics = list(metrics) if metrics else sorted(df["metric"].unique())
    unknown = sorted(set(metrics) - set(df["metric"]))
    if unknown:
        raise ValueError(f"metric(s) {unknown} not in the curves; metrics: {sorted(df['metric'].unique())}")
    runs = list(dict.fromkeys(df["run"]))
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=metrics, shared_xaxes=True,
                        vertical_spacing=min(0.08, 0.3 / max(len(metrics), 1)))
    for row, metric in enumerate(metrics, start=1):
        for i, run in enumerate(runs):
            g = df[(df["run"] == run) & (df["metric"] == metric)]
            if g.empty:
                continue
            m = _mean_over_seeds(g, smooth)
            color = RUN_COLORS[i % len(RUN_COLORS)]
            seeds = g["seed"].nunique()
            if seeds > 1:
                x = m["step"].to_numpy()
                fig.add_trace(go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([m["mean"] + m["std"], (m["mean"] - m["std"])[::-1]]),
                    fill="toself", fillcolor=color, opacity=0.2, line=dict(width=0), hoverinfo="skip",
                    showlegend=False, legendgroup=run), row=row, col=1)
            fig.add_trace(go.Scatter(x=m["step"], y=m["mean"], mode="lines", line=dict(color=color),
                                     name=f"{run} ({seeds} seed{'s' if seeds > 1 else ''})", legendgroup=run,
                                     showlegend=row == 1,
                                     hovertemplate=f"{run}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"), row=row, col=1)
        if targets and metric in targets:
            fig.add_hline(y=targets[metric][0], line_dash="dot", line_color="#444444", row=row, col=1,
                          annotation_text=f"target {targets[metric][0]:g}")
    fig.update_xaxes(title_text="step", row=len(metrics), col=1)
    if log_y:
        fig.update_yaxes(type="log")
    fig.update_layout(title="Training curves" + (f" (moving average over {smooth})" if smooth > 1 else ""),
                      height=max(360, 260 * len(metrics)))
    return fig


def results_summary(df: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per arm and metric of a results frame: n seeds, mean, std (ddof 1) and the Student-t interval of the mean."""
    from scipy import stats

    rows = []
    for (arm, metric), g in df.groupby(["arm", "metric"], sort=False):
        v = g["value"].to_numpy(float)
        n, mean = len(v), float(v.mean())
        sd = float(v.std(ddof=1)) if n > 1 else float("nan")
        half = float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)) if n > 1 else float("nan")
        rows.append({"arm": arm, "metric": metric, "n": n, "mean": mean, "std": sd, "lo": mean - half,
                     "hi": mean + half})
    return pd.DataFrame(rows)


def results_figure(df: pd.DataFrame, metrics: list[str] | None = None) -> go.Figure:
    """One panel per metric: every seed's value (dots, hover names the seed) and each arm's mean with its 95 %
    Student-t interval over seeds, so that a difference smaller than the seed spread is seen as one."""
    available = list(dict.fromkeys(df["metric"]))
    metrics = list(metrics) if metrics else available
    unknown = sorted(set(metrics) - set(available))
    if unknown:
        raise ValueError(f"metric(s) {unknown} not in the results; metrics: {available}")
    summary = results_summary(df)
    arms = list(dict.fromkeys(df["arm"]))
    cols = min(2, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=metrics, vertical_spacing=0.16, horizontal_spacing=0.1)
    for k, metric in enumerate(metrics):
        r, c = k // cols + 1, k % cols + 1
        for i, arm in enumerate(arms):
            color = RUN_COLORS[i % len(RUN_COLORS)]
            g = df[(df["arm"] == arm) & (df["metric"] == metric)]
            if g.empty:
                continue
            fig.add_trace(go.Scatter(x=[arm] * len(g), y=g["value"], mode="markers", name=arm, legendgroup=arm,
                                     showlegend=False, marker=dict(color=color, size=6, opacity=0.45),
                                     customdata=g["seed"], hovertemplate=arm + ", seed %{customdata}: %{y:.4g}"
                                                                         "<extra></extra>"), row=r, col=c)
            m = summary[(summary["arm"] == arm) & (summary["metric"] == metric)].iloc[0]
            fig.add_trace(go.Scatter(
                x=[arm], y=[m["mean"]], mode="markers", name=arm, legendgroup=arm, showlegend=k == 0,
                marker=dict(color=color, size=11, symbol="diamond"),
                error_y=dict(type="data", symmetric=False, array=[m["hi"] - m["mean"]],
                             arrayminus=[m["mean"] - m["lo"]], thickness=2, width=8),
                hovertemplate=f"{arm}: mean %{{y:.4g}}, 95 % t-interval [{m['lo']:.4g}, {m['hi']:.4g}] over "
                              f"{int(m['n'])} seeds<extra></extra>"), row=r, col=c)
    fig.update_layout(title="Results per arm: seeds (dots) and mean with its 95 % t-interval over seeds",
                      height=260 * rows + 120, legend=dict(orientation="h", yanchor="top", y=-0.08, x=0),
                      margin=dict(t=80, b=80))
    return fig


def table_figure(df: pd.DataFrame, metrics: list[str] | None = None) -> go.Figure:
    """Grouped bars: metrics on the x axis, one colour per run, ±std over seeds."""
    summary = table_summary(df)
    available = [c for c in df.columns if c not in ("run", "seed")]
    metrics = list(metrics) if metrics else available
    unknown = sorted(set(metrics) - set(available))
    if unknown:
        raise ValueError(f"metric(s) {unknown} not in the table; metrics: {available}")
    fig = go.Figure()
    for i, (run, values) in enumerate(summary.items()):
        fig.add_trace(go.Bar(x=metrics, y=[values[m]["mean"] for m in metrics], name=run,
                             marker_color=RUN_COLORS[i % len(RUN_COLORS)],
                             error_y=dict(type="data", array=[values[m]["std"] for m in metrics]),
                             text=[f"{values[m]['mean']:.3g}" for m in metrics], textposition="outside"))
    fig.update_layout(barmode="group", title="Ablation metrics (mean ± std over seeds)", height=450)
    return fig
