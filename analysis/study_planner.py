"""The claims study's planning part, C3 (docs/study.md §4): Action DiT arms × seeds on one frozen-then-fine-tuned Video
DiT, every val clip planned with several seeds and scored by NAVSIM's PDM score, paired intervals over clips, verdict.

    python -m analysis study-planner --out runs/study-c3 [--arms vanilla full +align +hn] [--seeds 0 1 2]
                                     [--parallel 2] [--samples 8] [--results assets/ablation]

A job (arm, seed) is a run folder `OUT/<arm>-s<seed>` that starts as the shipped Video DiT (`--checkpoint`, its
`video_dit/`, the VAE it points to copied once to `OUT/vae`), trained by the repository's own commands:
`python -m reworld prepare` (once per seed, under a lock: the per-clip files are shared through `OUT/prepared`),
`python -m reworld train --stage action` and `--stage joint` (each `--resume`d), then scored by
`python -m analysis plan-scores` (every val clip × `--samples` plans, seeds 0 … S−1) into `OUT/scores/`. A step whose
output exists is not run again, so a killed study picks up where it stopped. Jobs run `--parallel` at a time, each
process with cores ÷ parallel threads. After each job the summary is rewritten: `planner_study.csv` (arm, seed,
metric, value: means over clips and samples), `planner_study/clips.csv` (each clip's PDMS per arm and seed, mean
over samples: what the intervals are computed from) and `planner_study.json` (the registered comparisons; a verdict only
once every registered seed of both arms is in).

The results folder is also the study's ledger: the study outlives a machine (a 2-core session runs a few jobs; its run
folders and score files go with it), so a run the results already hold is kept in every later summary and is not run
again; only the results are committed. It also holds what its jobs were made under (`planner_study/config.json`: the
base config and the digests of the checkpoint's Video DiT and VAE), and a job under another is refused before it runs.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from reworld.evaluation.stats import paired_interval, t_interval

# the study's switches, on in every arm unless the arm says otherwise (docs/study.md §4 and amendment 2)
SWITCHES = {"action": {"feature_draws": 4}, "loss": {"hn_clip_z": 3.0}}
_FULL = {"lambda_align": 0.5, "lambda_hn": 0.2}
# docs/study.md §4: each arm's changes to the base config (the shipped config's loss weights) over the switches. The
# first four are the registered arms; then each switch turned off in full (amendment 2), then the exploratory arms
# (amendments 3 and 5)
ARMS = {
    "vanilla": {"loss": {"lambda_align": 0.0, "lambda_hn": 0.0}},
    "full": {"loss": _FULL},
    "+align": {"loss": {"lambda_align": 0.5, "lambda_hn": 0.0}},
    "+hn": {"loss": {"lambda_align": 0.0, "lambda_hn": 0.2}},
    "full-1draw": {"loss": _FULL, "action": {"feature_draws": 1}},
    "full-unclipped": {"loss": {**_FULL, "hn_clip_z": 0.0}},
    "full-frames": {"loss": _FULL, "action": {"align_target": "frames"}},
    "full+hinge": {"loss": {**_FULL, "hn_hinge_margin": 1.0, "lambda_hinge": 1.0}},
    "full-clean": {"loss": _FULL, "action": {"align_sigma": 0.0}},
    "full-sigma0.2": {"loss": _FULL, "action": {"align_sigma": 0.2}},
}
SEEDS = (0, 1, 2)
# (arm, reference): the first is the claim (C3's verdict), the others are reported beside it
COMPARISONS = (("full", "vanilla"), ("+align", "vanilla"), ("+hn", "vanilla"), ("full-1draw", "full"),
               ("full-unclipped", "full"), ("full-frames", "full"), ("full+hinge", "full"), ("full-clean", "full"),
               ("full-sigma0.2", "full"))
SMALLEST_EFFECT = 0.65  # [PDMS points]: half the paper's +1.3
PAPER = {"vanilla": 89.1, "full": 90.4}  # PDMS (NAVSIM navtest), the paper's table
METRICS = ("pdms", "nc", "dac", "ttc", "ep", "c", "l2_1s", "l2_2s", "l2_3s")
SCORE_COLUMNS = ("token", "sample", *METRICS)


def job_order(arms, seeds) -> list[tuple[str, int]]:
    """Vanilla and full first, seed by seed (the claim's verdict needs them), then the other arms."""
    first = [a for a in ("vanilla", "full") if a in arms]
    rest = [a for a in arms if a not in first]
    return [(a, s) for s in seeds for a in first] + [(a, s) for s in seeds for a in rest]


def check_arms(arms) -> list[str]:
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; the study's arms are {', '.join(ARMS)}")
    return list(dict.fromkeys(arms))


def arm_config(base: Path, arm: str, seed: int) -> dict:
    """The base config with the arm's losses, the study's switches and the seed."""
    doc = yaml.safe_load(Path(base).read_text()) or {}
    for changes in (SWITCHES, ARMS[arm]):
        for section, values in changes.items():
            doc.setdefault(section, {}).update(values)
    doc.setdefault("train", {})["seed"] = int(seed)
    doc["name"] = f"{doc.get('name', 'study')}-{arm}-s{seed}"
    return doc


def run_name(arm: str, seed: int) -> str:
    return f"{arm.replace('+', 'plus-')}-s{seed}"


def init_study(out: Path, checkpoint: Path) -> None:
    """The study folder: a copy of the checkpoint's VAE (every run points to it) and the shared per-clip files."""
    from reworld.pipelines.run_folder import component_dir

    if not (checkpoint / "video_dit" / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: no video_dit/ to start the study's runs from")
    vae = out / "vae"
    if not (vae / "config.json").is_file():
        tmp = out / ".vae.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(component_dir(checkpoint, "vae"), tmp)
        tmp.replace(vae)
    (out / "prepared").mkdir(parents=True, exist_ok=True)


def init_run(out: Path, checkpoint: Path, arm: str, seed: int, base: Path) -> tuple[Path, Path]:
    """The job's run folder (the shipped Video DiT, a pointer to the study's VAE copy, the shared per-clip files) and
    its config file (`init_study` first)."""
    return make_run(out, run_name(arm, seed), arm_config(base, arm, seed), checkpoint / "video_dit")


def make_run(out: Path, name: str, config: dict, video_dit: Path | None = None) -> tuple[Path, Path]:
    """A study's run folder `out/name`: a copy of `video_dit` when given, a pointer to the study's VAE copy, the
    shared per-clip files (`out/prepared`); and its config file `out/configs/name.yaml`."""
    run = out / name
    if not (run / "components.json").is_file() or (video_dit and not (run / "video_dit" / "config.json").is_file()):
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if video_dit:
            shutil.copytree(video_dit, tmp / "video_dit")
        (tmp / "components.json").write_text(json.dumps({"vae": "../vae"}))
        shutil.rmtree(run, ignore_errors=True)
        tmp.replace(run)
    if not (run / "prepared").exists():
        (run / "prepared").symlink_to(Path("..") / "prepared")
    cfg = out / "configs" / f"{name}.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return run, cfg


IN_PROCESS = False  # tests: run `python -m reworld|analysis …` commands in this process (no interpreter start-up)


def run_logged(cmd: list[str], log: Path, threads: int) -> None:
    """A command with its output appended to `log`, `threads` threads; a failure names the log."""
    if IN_PROCESS and cmd[1:2] == ["-m"] and cmd[2] in ("reworld", "analysis"):
        import contextlib
        import importlib

        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            rc = importlib.import_module(f"{cmd[2]}.cli").main(cmd[3:])
        if rc:
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {rc}); its output is in {log}")
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {rc}); its output is in {log}")


def done_marker(run: Path, step: str) -> Path:
    return run / f".study-{step}.done"


def run_job(out: Path, checkpoint: Path, base: Path, arm: str, seed: int, samples: int, threads: int,
            seed_locks: dict, max_steps: dict | None = None, log=print) -> Path:
    """One (arm, seed): prepare (once per seed, locked), stage action, stage joint, scores. Returns the scores CSV."""
    py = sys.executable
    scores = out / "scores" / f"{run_name(arm, seed)}.csv"
    if scores.is_file():
        return scores
    run, cfg = init_run(out, checkpoint, arm, seed, base)
    logfile = out / "logs" / f"{run.name}.log"
    with seed_locks[seed]:  # the seed's per-clip files (latents, features, negatives) are made once
        if not done_marker(run, "prepare").is_file():
            log(f"[study] {run.name}: prepare")
            run_logged([py, "-m", "reworld", "prepare", "--config", str(cfg), "--out", str(run)], logfile, threads)
            done_marker(run, "prepare").touch()
    for stage in ("action", "joint"):
        if done_marker(run, stage).is_file():
            continue
        log(f"[study] {run.name}: stage {stage}")
        t0 = time.time()
        cmd = [py, "-m", "reworld", "train", "--stage", stage, "--config", str(cfg), "--out", str(run), "--resume"]
        if max_steps and stage in max_steps:
            cmd += ["--max-steps", str(max_steps[stage])]
        run_logged(cmd, logfile, threads)
        done_marker(run, stage).write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
    log(f"[study] {run.name}: scores")
    run_logged([py, "-m", "analysis", "plan-scores", "--checkpoint", str(run), "--samples", str(samples),
          "--out", str(scores)], logfile, threads)
    return scores


# ------------------------------------------------------------------------------------------------- scoring
def plan_scores(pipe, ds, samples: int, batch: int = 16, scorer: str = "navsim", log=None) -> list[dict]:
    """Every clip of `ds` planned `samples` times (seeds 0 … samples − 1: `pipe.plan_seeds`, each sample the plan
    `eval` gives with that seed) and scored: one row per clip and sample (`SCORE_COLUMNS`)."""
    from reworld.planning.pdm import PDMScorerConfig, score_trajectories
    from reworld.planning.scene import PlanningScene

    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer ≥ 1, got {samples!r}")
    scoring = PDMScorerConfig(simulation=scorer)
    rows = []
    for start in range(0, len(ds), batch):
        clips = [ds[i] for i in range(start, min(start + batch, len(ds)))]
        plans = pipe.plan_seeds(clips, list(range(samples)))  # (B, S, 8, 3)
        for clip, poses in zip(clips, plans):
            results = score_trajectories(PlanningScene.from_clip(clip), poses, scoring)
            expert = clip.target.trajectory.numpy()
            l2 = np.linalg.norm(poses[:, :, :2] - expert[None, :, :2], axis=-1)  # (S, 8) at 0.5 … 4 s
            for j, r in enumerate(results):
                rows.append({"token": clip.sample_token, "sample": j,
                             **{k: float(getattr(r, k)) for k in ("pdms", "nc", "dac", "ttc", "ep", "c")},
                             "l2_1s": float(l2[j, 1]), "l2_2s": float(l2[j, 3]), "l2_3s": float(l2[j, 5])})
        if log:
            log(f"  {min(start + batch, len(ds))}/{len(ds)} clips")
    return rows


def write_scores(rows: list[dict], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SCORE_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)  # whole or absent: a job is done when its scores exist
    return path


def read_scores(path: Path) -> dict[str, np.ndarray]:
    """token → (samples, metrics) array in `METRICS` order."""
    by: dict[str, list] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or list(reader.fieldnames) != list(SCORE_COLUMNS):
            raise ValueError(f"{path}: expected the columns {', '.join(SCORE_COLUMNS)}")
        for row in reader:
            by.setdefault(row["token"], []).append([float(row[m]) for m in METRICS])
    return {t: np.asarray(v) for t, v in by.items()}


# ------------------------------------------------------------------------------------------------- summary
def verdict(boot: tuple[float, float], t_seeds: tuple[float, float] | None, smallest: float) -> str:
    """A claimed increase (docs/study.md §0, amendments 1–2): both intervals (clips' bootstrap, seeds' t) above 0:
    'reproduces' ('…, below the smallest effect' when both also lie below `smallest`); both below `smallest`:
    'does not'; else 'inconclusive'."""
    ivs = [boot] + ([t_seeds] if t_seeds is not None else [])
    if all(lo > 0 for lo, _ in ivs):
        return "reproduces, below the smallest effect" if all(hi < smallest for _, hi in ivs) else "reproduces"
    if all(hi < smallest for _, hi in ivs):
        return "does not"
    return "inconclusive"


def direction(boot: tuple[float, float], t_seeds: tuple[float, float]) -> str:
    """A comparison that is not the claim: which way both intervals put it, or neither."""
    if boot[0] > 0 and t_seeds[0] > 0:
        return "higher (both intervals above 0)"
    if boot[1] < 0 and t_seeds[1] < 0:
        return "lower (both intervals below 0)"
    return "no difference shown"


@dataclass
class RunResult:
    """What the summary needs of one (arm, seed): each clip's PDMS (mean over its samples) and every metric's mean over
    clips and samples. It is what the ledger (`planner_study/clips.csv` and `planner_study.csv`) keeps of a run."""

    clips: dict[str, float]
    means: dict[str, float]


def run_result(scores: dict[str, np.ndarray]) -> RunResult:
    """A run's per-sample scores (`read_scores`) reduced to what the summary needs."""
    allrows = np.concatenate(list(scores.values()))
    return RunResult({t: float(v[:, 0].mean()) for t, v in scores.items()},
                     {m: float(allrows[:, i].mean()) for i, m in enumerate(METRICS)})


def read_ledger(results: Path) -> dict[tuple[str, int], RunResult]:
    """The runs an earlier summary in `results` holds (its per-clip file and its means), so that a study spread over
    machines (whose run folders and score files are gone) goes on from its committed results. A run in one file but not
    the other is an error that names both."""
    clips_csv, means_csv = results / "planner_study" / "clips.csv", results / "planner_study.csv"
    if not clips_csv.is_file() and not means_csv.is_file():
        return {}
    clips: dict[tuple[str, int], dict[str, float]] = {}
    means: dict[tuple[str, int], dict[str, float]] = {}
    for path, columns, into, key in ((clips_csv, ["arm", "seed", "token", "pdms"], clips, "token"),
                                     (means_csv, ["arm", "seed", "metric", "value"], means, "metric")):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or list(reader.fieldnames) != columns:
                raise ValueError(f"{path}: expected the columns {', '.join(columns)}")
            for row in reader:
                value = row["pdms" if key == "token" else "value"]
                into.setdefault((row["arm"], int(row["seed"])), {})[row[key]] = float(value)
    if set(clips) != set(means):
        odd = sorted(set(clips) ^ set(means))
        raise ValueError(f"{clips_csv} and {means_csv} disagree on the runs they hold: {odd}")
    for run, m in means.items():
        if set(m) != set(METRICS):
            raise ValueError(f"{means_csv}: run {run_name(*run)} lacks metrics {sorted(set(METRICS) - set(m))}")
    return {run: RunResult(clips[run], means[run]) for run in clips}


def summarize(runs: dict[tuple[str, int], RunResult], seeds) -> dict:
    """Means per arm and seed, and each registered comparison over the clips both arms scored with every seed they
    share: per clip, the arm's PDMS minus the reference's (mean over those seeds and the samples), in points; the
    95 % bootstrap over clips and the Student-t interval over the seeds' effects; a verdict once every registered
    seed is in."""
    means = {}
    for (arm, seed), r in sorted(runs.items()):
        means.setdefault(arm, {})[str(seed)] = dict(r.means)
    comps = {}
    for arm, ref in COMPARISONS:
        shared = [s for s in seeds if (arm, s) in runs and (ref, s) in runs]
        if not shared:
            continue
        tokens = sorted(set.intersection(*(set(runs[k, s].clips) for s in shared for k in (arm, ref))))
        per_seed_clip = np.array([[runs[arm, s].clips[t] - runs[ref, s].clips[t] for t in tokens]
                                  for s in shared]) * 100  # (seeds, clips), points
        per_clip = per_seed_clip.mean(axis=0)
        iv = paired_interval(per_clip)
        per_seed = per_seed_clip.mean(axis=1)
        t_seeds = t_interval(per_seed)
        complete = len(shared) == len(seeds)
        claim = (arm, ref) == COMPARISONS[0]
        comps[f"{arm} − {ref}"] = {
            "unit": "PDMS points; bootstrap over clips (every seed's scores of a clip together), t over seeds",
            "seeds": shared, "clips": len(tokens), "per_seed": per_seed.tolist(), "mean": iv.mean,
            "boot_lo": iv.boot_lo, "boot_hi": iv.boot_hi, "t_lo": t_seeds[0], "t_hi": t_seeds[1],
            "t_clips_lo": iv.t_lo, "t_clips_hi": iv.t_hi, "smallest_effect": SMALLEST_EFFECT,
            "verdict": (f"pending ({len(shared)} of {len(seeds)} seeds)" if not complete
                        else verdict((iv.boot_lo, iv.boot_hi), t_seeds, SMALLEST_EFFECT) if claim
                        else direction((iv.boot_lo, iv.boot_hi), t_seeds)),
            "role": "the claim (C3)" if claim else "reported beside it, not used for C3's verdict",
        }
    return {"means": means, "comparisons": comps}


def write_means_csv(means: dict, path: Path) -> Path:
    """A study part's means in the app's results format: arm, seed, metric, value (one row each)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "metric", "value"])
        for arm, per_seed in means.items():
            for seed, values in per_seed.items():
                w.writerows([arm, seed, m, f"{v:.6g}"] for m, v in values.items())
    return path


def write_summary(out: Path, results: Path, arms, seeds, extra: dict) -> dict:
    """The runs of `arms` × `seeds` scored in `out/scores`, with every run the ledger in `results` already holds (a
    score file here wins over the ledger's copy of the same run), written back to `results` as the three result
    files."""
    runs = dict(read_ledger(results))
    sources = {run_name(*k): "ledger" for k in runs}
    for arm in arms:
        for seed in seeds:
            path = out / "scores" / f"{run_name(arm, seed)}.csv"
            if path.is_file():
                runs[arm, seed] = run_result(read_scores(path))
                sources[run_name(arm, seed)] = str(path)
    if not runs:
        return {}
    # a call for some seeds (e.g. `--seeds 0 1` on a machine that runs only those) still summarises the seeds the
    # ledger holds: a comparison is complete only with every seed of either
    seeds = sorted(set(seeds) | {s for _, s in runs})
    summary = summarize(runs, seeds)
    results.mkdir(parents=True, exist_ok=True)
    write_means_csv(summary["means"], results / "planner_study.csv")
    (results / "planner_study").mkdir(exist_ok=True)  # not a CSV of the app's ablation list: a folder of its own
    tmp = results / "planner_study" / ".clips.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "token", "pdms"])
        for (arm, seed), r in sorted(runs.items()):
            w.writerows([arm, seed, t, f"{v:.6g}"] for t, v in sorted(r.clips.items()))
    tmp.replace(results / "planner_study" / "clips.csv")
    from .output import write_json

    listed = list(dict.fromkeys([*arms, *(a for a, _ in sorted(runs))]))
    write_json({**extra, "arms": listed, "registered_seeds": list(seeds), "paper_pdms": PAPER,
                "run_sources": dict(sorted(sources.items())), **summary}, results / "planner_study.json")
    return summary


def summary_extra(out: Path, checkpoint: Path, base: Path, arms, seeds, samples: int, results: Path) -> dict:
    """What the summary JSON says about how it was made, with the command that makes it."""
    return {"checkpoint": str(checkpoint), "config": str(base), "samples": samples, "switches": SWITCHES,
            "arm_changes": {a: ARMS[a] for a in arms},
            "command": (f"python -m analysis study-planner --out {out} --arms {' '.join(arms)} --seeds "
                        f"{' '.join(map(str, seeds))} --samples {samples} --checkpoint {checkpoint} --config {base} "
                        f"--results {results}")}


def check_ledger(results: Path, base: Path, checkpoint: Path) -> None:
    """Jobs join the ledger only under the base config, Video DiT and VAE its jobs were made under (`analysis.ledger`,
    `RESULTS/planner_study/config.json`)."""
    from . import ledger

    ledger.check(results / "planner_study", ledger.identity(base, checkpoint, ("vae", "video_dit")),
                 "pass the --checkpoint and --config its jobs were made under, or another --results for a new study")


def run_study(out: Path, checkpoint: Path, base: Path, arms, seeds, samples: int, parallel: int, results: Path,
              max_steps: dict | None = None, log=print) -> dict:
    arms = check_arms(arms)
    check_ledger(results, base, checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, parallel))
    locks = {s: threading.Lock() for s in seeds}
    summary_lock = threading.Lock()
    extra = summary_extra(out, checkpoint, base, arms, seeds, samples, results)

    def job(arm_seed):
        arm, seed = arm_seed
        run_job(out, checkpoint, base, arm, seed, samples, threads, locks, max_steps, log)
        with summary_lock:
            write_summary(out, results, arms, seeds, extra)
        log(f"[study] {run_name(arm, seed)}: done")

    init_study(out, checkpoint)
    held = read_ledger(results)
    todo = [js for js in job_order(arms, seeds) if js not in held or (out / "scores" / f"{run_name(*js)}.csv").is_file()]
    for js in job_order(arms, seeds):
        if js not in todo:
            log(f"[study] {run_name(*js)}: in the ledger ({results}), not run again")
    failed = threading.Event()

    def guarded(arm_seed):
        if failed.is_set():  # a job failed: start no other
            return
        try:
            job(arm_seed)
        except BaseException as e:
            failed.set()
            log(f"[study] {run_name(*arm_seed)} failed: {e}")
            raise

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(guarded, js) for js in todo]
        for f in futures:
            f.result()  # the first failure is raised here, after the running jobs end
    return write_summary(out, results, arms, seeds, extra)
