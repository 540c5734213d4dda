"""Screens of the world model with several training seeds per arm (docs/world4s.md, after E12: a retrain that changes
only its init moves the judged position error by about 0.2 m, the size of the effects a one-seed screen looks for).

    python -m analysis screen-video --out /work/runs/screen-e13 --vae assets/checkpoints/world4s_vae \\
        --arm A=configs/world4s.yaml --arm E13=/work/runs/cfg-e13.yaml --seeds 0 1 2

Arm `name=config` at seed s is that config with `train.seed: s`, so every arm of one seed starts from one init and
differs from the first arm (the control) only in what its config changes. Each (arm, seed) trains stage video from
scratch to its config's budget (`python -m reworld train --stage video`, resuming from its last checkpoint), then
`python -m reworld eval` judges it on the same validation clips, sampled futures and seeds as every other run
(`--every`, `--judge-samples`, the checkpoint's default w and 20 steps). Order: seed-major (every arm of seed 0, then
seed 1, …), so that a screen stopped part-way leaves whole pairs. Resumable: a judged run (its eval JSON) is not run
again, and the comparison is rewritten from the eval JSONs after every run.

Writes `<evals>/<arm>-s<seed>.json` (the eval reports; `--evals`, default `out/evals`: a folder in the repository
keeps them, committed as they land, across machines) and `out/screen.json`: for every other arm, B − A of the
mean position error over the horizon paired by clip within each seed and pooled over the seeds that both arms have
(`compare_evals`: the t interval over the seeds' means, which a decision over few seeds rests on, and a two-level
bootstrap), each arm's fd_judge, kid_judge and controllability per seed, and each arm's init spread. The runs share
one VAE (a copy of `--vae`'s) and one folder of prepared latents.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from .study_planner import make_run, run_logged


# ---------------------------------------------------------------------------------------------------- comparison
def read_judge(spec: str) -> dict:
    """The judge section of an eval JSON; `FILE:KEY` reads the document stored under KEY of a JSON holding several."""
    path, _, key = str(spec).partition(":")
    doc = json.loads(Path(path).read_text())
    if key:
        doc = doc[key]
    return doc.get("judge", doc)


def judge_summary(j: dict) -> dict:
    """fd_judge, kid_judge (and the all-pairs KID), the position error at each second and its mean over the future
    frames, controllability (with a 95 % Wilson interval of the rate and a bootstrap interval of the mean lateral gap
    where the gaps are kept)."""
    from reworld.evaluation.stats import paired_interval, wilson

    pos = np.asarray(j["errors"]["position_m"])
    per_second = int(round(len(pos) / j["video_horizon_s"]))
    c = j["controllability"]
    ctrl = {"clips": c["clips"], "rate": c["rate"], "gap_m": c["lateral_gap_m"]}
    if c.get("gaps_m"):  # documents from before 2026-12-02 kept only the rate and the mean gap; no turning clip: none
        gaps = np.asarray(c["gaps_m"])
        gap = paired_interval(gaps)
        turned = int(np.sum(gaps > 0))
        ctrl.update(turned=turned, rate_wilson=list(wilson(turned, len(gaps))), gap_boot=[gap.boot_lo, gap.boot_hi])
    return {"fd_judge": j["fd_judge"], "kid_judge": j["kid_judge"],
            # the all-pairs KID where the report has it (from K1 on, docs/world4s.md): the one every report has, so
            # arms evaluated before and after K1 compare on one estimate
            "kid_judge_all_pairs": j.get("kid_judge_all_pairs", j["kid_judge"]),
            "position_m_at_s": [float(pos[per_second * s - 1]) for s in range(1, int(j["video_horizon_s"]) + 1)],
            "position_m_mean": float(pos.mean()), "controllability": ctrl}


def seed_intervals(d: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict:
    """Pooled B − A over the (seeds, clips) differences `d`: the mean, the Student-t interval over the seeds' means
    (n − 1 degrees of freedom) and the two-level bootstrap (seeds with replacement, then clips; numpy seed `seed`)."""
    from reworld.evaluation.stats import t_interval

    d = np.asarray(d, dtype=float)
    n_seeds, n_clips = d.shape
    per_seed = d.mean(1)
    mean = float(per_seed.mean())
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    c_idx = rng.integers(0, n_clips, size=(resamples, n_clips))
    means = np.array([d[s][:, c].mean() for s, c in zip(s_idx, c_idx)])
    return {"mean": mean, "t_over_seeds": list(t_interval(per_seed)),
            "boot_seeds_clips": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))],
            "per_seed": per_seed.tolist(), "seeds": n_seeds, "clips": n_clips}


def compare_evals(specs_b: list[str], specs_a: list[str]) -> dict:
    """Arm B against arm A, one eval JSON of each per seed in the same seed order (B's seed i trained from A's seed-i
    init), all of the same clips and samples. One seed: the summaries and B − A paired by clip (95 % bootstrap and t).
    Several: each seed's as above, the pooled B − A (`seed_intervals`), each arm's mean over seeds and its init
    spread (the standard deviation of its seeds' mean position errors)."""
    from reworld.evaluation.stats import paired_interval

    if len(specs_b) != len(specs_a) or not specs_b:
        raise ValueError(f"B has {len(specs_b)} seeds and A {len(specs_a)}: give one eval of each arm per seed, "
                         "paired in the same order")
    rows, diffs, means = [], [], {"b": [], "a": []}
    for sb, sa in zip(specs_b, specs_a):
        jb, ja = read_judge(sb), read_judge(sa)
        pb, pa = np.asarray(jb["position_m_per_video"]), np.asarray(ja["position_m_per_video"])
        if pb.shape != pa.shape or (diffs and len(pb) != len(diffs[0])):
            raise ValueError(f"the runs read different clips or samples: {sb} {pb.shape} against {sa} {pa.shape}")
        d = pb.mean(1) - pa.mean(1)
        diff = paired_interval(d)
        diffs.append(d)
        means["b"].append(float(pb.mean()))
        means["a"].append(float(pa.mean()))
        rows.append({"b": judge_summary(jb), "a": judge_summary(ja),
                     "b_minus_a_position_mean_m": {"mean": diff.mean, "boot": [diff.boot_lo, diff.boot_hi],
                                                   "t": [diff.t_lo, diff.t_hi], "units": len(pb)}})
    if len(rows) == 1:
        return rows[0]
    return {"per_seed": rows, "b_minus_a_position_mean_m": seed_intervals(np.stack(diffs)),
            "position_m_mean": {k: float(np.mean(v)) for k, v in means.items()},
            "fd_judge": {k: float(np.mean([r[k]["fd_judge"] for r in rows])) for k in ("b", "a")},
            "init_spread_m": {k: float(np.std(v, ddof=1)) for k, v in means.items()}}


# ---------------------------------------------------------------------------------------------------- the runs
def parse_arms(specs: list[str]) -> dict[str, Path]:
    """`name=config.yaml` pairs, in order (the first is the control); names are unique folder names."""
    arms: dict[str, Path] = {}
    for spec in specs:
        name, sep, cfg = spec.partition("=")
        if not sep or not name or not cfg:
            raise ValueError(f"--arm {spec!r}: expected NAME=CONFIG.yaml")
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"--arm {spec!r}: the name may hold letters, digits, '-' and '_' only")
        if name in arms:
            raise ValueError(f"--arm {name} is named twice")
        if not Path(cfg).is_file():
            raise FileNotFoundError(f"--arm {name}: no config file {cfg}")
        arms[name] = Path(cfg)
    if len(arms) < 2:
        raise ValueError("a screen needs at least two arms (the first is the control)")
    return arms


def arm_config(cfg: Path, seed: int) -> dict:
    doc = yaml.safe_load(Path(cfg).read_text()) or {}
    doc.setdefault("train", {})["seed"] = int(seed)
    return doc


def eval_path(evals: Path, arm: str, seed: int) -> Path:
    """Where (arm, seed)'s eval report is kept: `evals` is the screen's ledger (default `out/evals`; a folder in the
    repository keeps it across machines, and a run whose report is there is not run again)."""
    return Path(evals) / f"{arm}-s{seed}.json"


def _is_vae_folder(path: Path) -> bool:
    """A diffusers folder of the LTX-Video VAE class (its config.json names it)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("_class_name") == "AutoencoderKLLTXVideo"
    except (json.JSONDecodeError, AttributeError):
        return False


def init_vae(out: Path, vae: Path) -> None:
    """The screen's copy of the VAE every run points to (`out/vae`). `vae` is a VAE's own diffusers folder (e.g.
    `assets/checkpoints/world4s_vae`) or a run / checkpoint with a `vae` component."""
    from reworld.pipelines.run_folder import component_dir

    if (out / "vae" / "config.json").is_file():
        return
    vae = Path(vae)
    if _is_vae_folder(vae):
        src = vae
    else:
        src = Path(component_dir(vae, "vae"))
        if not _is_vae_folder(src):
            raise FileNotFoundError(f"{vae}: neither a VAE folder nor a run with a trained VAE (vae/config.json)")
    tmp = out / ".vae.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.replace(out / "vae")


def run_one(out: Path, arm: str, cfg: Path, seed: int, judge: str | None, every: int, samples: int,
            evals: Path, log=print) -> Path:
    """Train (arm, seed)'s stage video (resuming) and judge it; returns its eval JSON."""
    path = eval_path(evals, arm, seed)
    if path.is_file():
        return path
    name = f"{arm}-s{seed}"
    run, cfg_path = make_run(out, name, arm_config(cfg, seed))
    logfile = out / "logs" / f"{name}.log"
    threads = os.cpu_count() or 1
    if not (run / ".screen-trained").is_file():
        log(f"[screen] {name}: stage video")
        t0 = time.time()
        run_logged([sys.executable, "-m", "reworld", "train", "--stage", "video", "--config", str(cfg_path),
                    "--out", str(run), "--resume"], logfile, threads)
        (run / ".screen-trained").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
    log(f"[screen] {name}: judging")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "reworld", "eval", "--checkpoint", str(run), "--video-clips", "0", "--every",
           str(every), "--judge-samples", str(samples), "--json", str(tmp)]
    run_logged(cmd + (["--judge", str(judge)] if judge else []), logfile, threads)
    tmp.replace(path)
    log(f"[screen] {name}: judged ({path})")
    return path


def write_screen(out: Path, arms: dict[str, Path], seeds, evals: Path) -> dict:
    """`out/screen.json`: every other arm against the first over the seeds both have judged."""
    control = next(iter(arms))
    doc = {"arms": {a: str(c) for a, c in arms.items()}, "control": control, "seeds": list(seeds), "compared": {}}
    for arm in list(arms)[1:]:
        both = [s for s in seeds if eval_path(evals, arm, s).is_file() and eval_path(evals, control, s).is_file()]
        if both:
            doc["compared"][arm] = {"seeds": both, **compare_evals([str(eval_path(evals, arm, s)) for s in both],
                                                                  [str(eval_path(evals, control, s)) for s in both])}
    tmp = out / ".screen.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out / "screen.json")
    return doc


def run_screen(out: Path, arms: dict[str, Path], seeds, vae: Path, judge: str | None = None, every: int = 3,
               samples: int = 1, log=print, evals: Path | None = None) -> dict:
    out = Path(out)
    evals = Path(evals) if evals is not None else out / "evals"
    out.mkdir(parents=True, exist_ok=True)
    init_vae(out, vae)
    (out / "prepared").mkdir(exist_ok=True)
    for seed in seeds:
        for arm, cfg in arms.items():
            run_one(out, arm, cfg, seed, judge, every, samples, evals, log)
            write_screen(out, arms, seeds, evals)
    return write_screen(out, arms, seeds, evals)
