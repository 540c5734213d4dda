"""`python -m reworld ablate …`: the ablation study, run by the project's own training commands.

`ablate video`: from-scratch Video DiT (stage `video`) with and without intermediate guidance
(`lambda_ig` 0.5 vs 0), same data, VAE, budget and validation, over several seeds; the validation flow
loss curves go to `assets/ablation/video_convergence.csv` (format: `analysis.ablation`), and the number
of steps each arm needs to reach the vanilla arm's final validation value, per seed, to
`video_convergence.json`.

`ablate planner`: the Action DiT (stage `action`) on one trained Video DiT, in four arms — vanilla
(flow matching only), +alignment, +hard negatives, full — same seed and budget; held-out PDMS curves to
`planner_variants.csv` and the final figures to `planner_variants_table.csv`.

Runs are subprocesses of `python -m reworld train`, `--jobs` at a time, one thread each.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from reworld.evaluation.curves import steps_to_reach

VIDEO_ARMS = {"vanilla": {"lambda_ig": 0.0}, "+IG": {"lambda_ig": 0.5}}
PLANNER_ARMS = {
    "vanilla": {"lambda_align": 0.0, "lambda_hn": 0.0},
    "+align": {"lambda_align": 0.5, "lambda_hn": 0.0},
    "+hard-neg": {"lambda_align": 0.0, "lambda_hn": 0.2},
    "full": {"lambda_align": 0.5, "lambda_hn": 0.2},
}


def _write_config(base: Path, out: Path, seed: int, steps: int, stage: str, val_every: int, loss: dict,
                  val_clips: int | None = None) -> Path:
    doc = yaml.safe_load(base.read_text())
    train = doc.setdefault("train", {})
    if val_clips is not None:
        train["val_clips"] = val_clips
    train["seed"] = seed
    train["val_every"] = val_every
    train["ckpt_every"] = max(val_every, steps // 4)
    max_steps = dict(train.get("max_steps", {}))
    max_steps[stage] = steps
    train["max_steps"] = max_steps
    doc.setdefault("loss", {}).update(loss)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ablation-config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run_all(commands: list[tuple[list[str], Path]], jobs: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[subprocess.Popen, Path, object]] = []
    pending = list(commands)
    while pending or running:
        while pending and len(running) < jobs:
            cmd, log = pending.pop(0)
            handle = open(log, "w")
            running.append((subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env), log, handle))
        proc, log, handle = running.pop(0)
        code = proc.wait()
        handle.close()
        if code != 0:
            raise RuntimeError(f"ablation run failed: see {log}")


def _val_rows(run_dir: Path, stage: str, run: str, seed: int, metrics: tuple[str, ...]) -> list[list]:
    rows = []
    with open(run_dir / "logs" / f"{stage}.csv") as f:
        for r in csv.DictReader(f):
            if r["kind"] == "val" and r["name"] in metrics:
                rows.append([int(r["step"]), run, seed, f"val/{r['name']}", float(r["value"])])
    return rows


def ablate_video(base_config: str, vae_dir: str, seeds: list[int], steps: int, val_every: int, out: str,
                 assets: str, jobs: int = 2) -> dict:
    out_root, assets_dir = Path(out), Path(assets)
    commands, runs = [], []
    for seed in seeds:
        for arm, loss in VIDEO_ARMS.items():
            run_dir = out_root / f"video-{arm.strip('+').lower()}-s{seed}"
            cfg = _write_config(Path(base_config), run_dir, seed, steps, "video", val_every, loss)
            if not (run_dir / "vae").is_dir():
                shutil.copytree(vae_dir, run_dir / "vae")
            commands.append(([sys.executable, "-m", "reworld", "train", "--stage", "video", "--config", str(cfg),
                              "--out", str(run_dir), "--resume"], run_dir / "train.log"))
            runs.append((arm, seed, run_dir))
    _run_all(commands, jobs)
    rows = []
    for arm, seed, run_dir in runs:
        rows += _val_rows(run_dir, "video", arm, seed, ("flow_loss", "psnr_sampled"))
    assets_dir.mkdir(parents=True, exist_ok=True)
    _write_rows(assets_dir / "video_convergence.csv", rows)
    summary = {"steps": steps, "val_every": val_every, "seeds": seeds, "per_seed": {}}
    for seed in seeds:
        curves = {arm: sorted((r[0], r[4]) for r in rows if r[1] == arm and r[2] == seed and r[3] == "val/flow_loss")
                  for arm in VIDEO_ARMS}
        target = curves["vanilla"][-1][1]
        reach = {arm: steps_to_reach(([s for s, _ in c], [v for _, v in c]), target) for arm, c in curves.items()}
        summary["per_seed"][str(seed)] = {"vanilla_final_flow_loss": target, "steps_to_reach": reach,
                                          "final": {arm: c[-1][1] for arm, c in curves.items()}}
    (assets_dir / "video_convergence.json").write_text(json.dumps(_finite(summary), indent=2))
    return summary


def ablate_planner(base_config: str, video_run: str, seed: int, steps: int, val_every: int, out: str, assets: str,
                   jobs: int = 2, val_clips: int | None = None) -> dict:
    out_root, assets_dir, src = Path(out), Path(assets), Path(video_run)
    commands, runs = [], []
    for arm, loss in PLANNER_ARMS.items():
        run_dir = out_root / f"planner-{arm.strip('+').lower()}"
        cfg = _write_config(Path(base_config), run_dir, seed, steps, "action", val_every, loss, val_clips)
        for part in ("vae", "video_dit", "cache"):
            if (src / part).is_dir() and not (run_dir / part).is_dir():
                shutil.copytree(src / part, run_dir / part)  # the same frozen Video DiT and its feature cache
        commands.append(([sys.executable, "-m", "reworld", "train", "--stage", "action", "--config", str(cfg),
                          "--out", str(run_dir), "--resume"], run_dir / "train.log"))
        runs.append((arm, run_dir))
    _run_all(commands, jobs)
    rows, table = [], []
    for arm, run_dir in runs:
        got = _val_rows(run_dir, "action", arm, seed, ("pdms", "nc", "dac", "c", "l2"))
        rows += got
        last = max(r[0] for r in got)
        table.append({"run": arm, "seed": seed, **{r[3].split("/")[1]: r[4] for r in got if r[0] == last}})
    assets_dir.mkdir(parents=True, exist_ok=True)
    _write_rows(assets_dir / "planner_variants.csv", rows)
    with open(assets_dir / "planner_variants_table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    return {"steps": steps, "seed": seed, "table": table}


def _finite(value):
    """Strict JSON: NaN (a target never reached) becomes null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def _write_rows(path: Path, rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "run", "seed", "metric", "value"])
        w.writerows(rows)
