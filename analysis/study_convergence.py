"""The claims study's convergence part, C2 (docs/study.md §2 with amendment 8): stage 1 trained from scratch with and
without the intermediate-guidance loss, sampled at checkpoints on a log scale, read by the video judge; speed-up per
seed where each arm's curve reaches vanilla's final value; median over seeds with intervals; verdict.

    python -m analysis study-convergence --out runs/study-c2 [--seeds 0 1 2 3 4] [--results assets/ablation]

A job (arm, seed) is a run folder `OUT/<arm>-s<seed>` whose stage video trains from scratch under `--config` (the
world4s vanilla config, λ_ig and ω from the arm, a constant learning rate after the config's warm-up) in segments:
`python -m reworld train --stage video --resume --max-steps S` for each checkpoint S in turn (a resumed run replays
exactly the batches and noise of an uninterrupted one, and a constant rate does not depend on the run's length), its
EMA weights exported at S and sampled at each of the arm's guidance values by `python -m analysis judge-scores`
(every val clip × `--samples` futures, `--sample-steps` Euler steps, seeds as `eval`'s) into
`RESULTS/convergence_study/scores/<arm>-s<seed>-k<S>-w<w>.npz`. Those files are committed as they land: they are the
study's ledger, so the study goes on from any clone; a checkpoint whose files are all there is not trained for or
scored again.

Vanilla's final step S_v is decided once, on seed 0's vanilla curve (run first): the first checkpoint at which its
fd_judge improved by less than 5 % over the previous one (a doubling earlier), at most the last registered checkpoint.
Every arm and seed then trains to S_v. When the registered seeds 0–4 are all judged and the claim's verdict over
them is inconclusive with intervals spanning more than 1.0, §2's power rule adds seeds 5–7 once, every arm, in the
same run (`with_power_seeds`; another `--seeds` list is run as given). After each checkpoint the summary is
rewritten: `convergence_study.csv` (step, run, seed, metric, value: the curves with their seeds, as the app's
ablation tab reads them) and `convergence_study.json` (S_v, each arm's steps to reach vanilla's value and speed-up
per seed, the median with a bootstrap interval over seeds and a t interval over log₂ speed-ups, the verdict). The
sanity curve (amendment 13) is each run's validation flow loss at each checkpoint, read from its training log into
the ledger `RESULTS/convergence_study/flow_loss.csv` after each segment (`collect_flow_loss`).

The ledger also holds what its runs were made under (`RESULTS/convergence_study/config.json`: the parsed base config
and the VAE's digest, written by the first run): a later run under another base config or VAE is refused before it
trains (`check_ledger`), so that no seed joins the study under another model. C2's base config is
`configs/study-c2.yaml` (amendment 19).
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from reworld.evaluation.stats import t_interval

from .study_finetune import clip_position, fd_of_clips, judge_missing, read_npz
from .study_planner import init_study, make_run, run_logged

# docs/study.md §2 with amendment 8
ARMS = {"vanilla": {"lambda_ig": 0.0, "ig_target_shift": 0.0},
        "ig": {"lambda_ig": 0.5, "ig_target_shift": 0.0},
        "ig-sg": {"lambda_ig": 0.5, "ig_target_shift": 1.0 - 1.0 / 1.4}}  # ω = 1 − 1/w*: guidance w* baked in
GUIDANCE = {"vanilla": (1.0,), "ig": (1.0, 1.4), "ig-sg": (1.0,)}
CHECKPOINTS = (250, 500, 1000, 2000, 4000)  # EMA checkpoints, doublings; the last is the cap on S_v
FLAT = 0.05  # vanilla's curve has flattened when a doubling improves fd_judge by less than this share
SEEDS = (0, 1, 2, 3, 4)
POWER_SEEDS = (5, 6, 7)  # added once if the verdict is inconclusive with an interval wider than 1.0 (§2)
SAMPLES, SAMPLE_STEPS = 2, 8  # futures per val clip, Euler steps (amendment 8)
SCHEDULE = {"lr_schedule": "constant_with_warmup"}  # the config's lr and warm-up; no decay toward an unknown end
CLAIM = ("ig", 1.4)  # IG's convergence curves are of guided samples
# amendment 14: seed 0's first vanilla run (it encoded the shared latents, which moved its init) is kept under this
# name; S_v stays the one decided on it, and seed 0's speed-ups use the vanilla run trained again with its arms' init
UNPAIRED = "vanilla-unpaired"
SMALLEST_EFFECT = 1.5  # speed-up; the paper claims ≈ 2×
PAPER = {"speed_up": 2.0}
BOOTSTRAP = 10_000  # docs/study.md §0
BASE_CONFIG = "configs/study-c2.yaml"  # amendment 19: e1d6e6c's world4s-vanilla config (width 128), frozen


def label(arm: str, w: float) -> str:
    return f"{arm} w={w:g}"


def score_path(results: Path, arm: str, seed: int, step: int, w: float) -> Path:
    return results / "convergence_study" / "scores" / f"{arm}-s{seed}-k{step}-w{w:g}.npz"


def arm_config(base: Path, arm: str, seed: int) -> dict:
    doc = yaml.safe_load(Path(base).read_text()) or {}
    doc.setdefault("loss", {}).update(ARMS[arm])
    video = doc.setdefault("video", {})
    video.pop("init_from", None)  # from scratch
    train = doc.setdefault("train", {})
    train.update(SCHEDULE, seed=int(seed))
    train["max_steps"] = {**(train.get("max_steps") or {}), "video": max(CHECKPOINTS)}
    # the trainer validates (and writes a checkpoint) at the end of every segment: nothing in between
    every = max(CHECKPOINTS) * 10
    train.update(val_every=every, ckpt_every=every)
    doc["name"] = f"{doc.get('name', 'study')}-conv-{arm}-s{seed}"
    return doc


def check_ledger(results: Path, base: Path, checkpoint: Path) -> None:
    """Runs join the ledger only under the base config and VAE its runs were made under (`analysis.ledger`,
    `RESULTS/convergence_study/config.json`)."""
    from . import ledger

    ledger.check(results / "convergence_study", ledger.identity(base, checkpoint, ("vae",)),
                 f"C2's base config is {BASE_CONFIG}, or pass another --results for a new study")


def trained_step(run: Path) -> int:
    """The step of the run's last complete stage-video checkpoint (0 without one)."""
    from reworld.training.checkpoint import META, latest_checkpoint

    ckpt = latest_checkpoint(run, "video")
    return 0 if ckpt is None else int(json.loads((ckpt / META).read_text())["step"])


def train_command(run: Path, cfg: Path, step: int) -> list[str]:
    """The segment that trains the run's stage video on to `step` (resuming from its last checkpoint)."""
    return [sys.executable, "-m", "reworld", "train", "--stage", "video", "--config", str(cfg), "--out", str(run),
            "--resume", "--max-steps", str(step)]


def run_checkpoint(out: Path, checkpoint: Path, base: Path, arm: str, seed: int, step: int, results: Path,
                   samples: int, sample_steps: int, judge: str | None, log=print) -> list[Path]:
    """Train (arm, seed) to `step` (resuming) and score it at each of the arm's w; returns the score files."""
    paths = [score_path(results, arm, seed, step, w) for w in GUIDANCE[arm]]
    if all(p.is_file() for p in paths):  # in the ledger: nothing to run
        return paths
    name = f"{arm}-s{seed}"
    run, cfg = make_run(out, name, arm_config(base, arm, seed))
    logfile = out / "logs" / f"{name}.log"
    threads = os.cpu_count() or 1
    done = trained_step(run)
    if done > step:
        raise RuntimeError(f"{run} is trained to step {done}, past checkpoint {step} whose scores are missing; "
                           f"delete {run} to train it again from scratch")
    if done < step:
        log(f"[study] {name}: stage video to step {step}")
        t0 = time.time()
        run_logged(train_command(run, cfg, step), logfile, threads)
        (run / f".study-k{step}.done").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
        collect_flow_loss(out, results)
    judge_missing(run, zip(GUIDANCE[arm], paths), samples, sample_steps, judge, logfile, threads,
                  lambda w: log(f"[study] {name}: judge scores at step {step}, w = {w:g}"))
    return paths


def flow_loss_path(results: Path) -> Path:
    return results / "convergence_study" / "flow_loss.csv"


def collect_flow_loss(out: Path, results: Path, checkpoints=None) -> Path:
    """The sanity curve (amendment 13): each run's validation flow loss at each checkpoint, as its trainer logged it at
    the end of the segment (`OUT/<arm>-s<seed>/logs/video.csv`, every validation row or those at `checkpoints`: 16
    val clips, σ and noise drawn from seed 1234, the same draws at every checkpoint and arm), merged into the ledger
    `RESULTS/convergence_study/flow_loss.csv` (arm, seed, step, flow_loss). Rows already there stay (their run
    folders may be gone); a step logged twice (a segment run again) keeps its last value. For `ig-sg` the logged term
    is its own objective (the ω-shifted target), not the plain flow loss of the other arms."""
    path = flow_loss_path(results)
    rows: dict[tuple[str, int, int], str] = {}
    if path.is_file():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                rows[r["arm"], int(r["seed"]), int(r["step"])] = r["flow_loss"]
    for arm in (*ARMS, UNPAIRED):
        for log in sorted(Path(out).glob(f"{arm}-s*/logs/video.csv")):
            seed = log.parent.parent.name[len(arm) + 2:]
            if not seed.isdigit():
                continue  # another arm's folder whose name starts with this one's (ig / ig-sg)
            with open(log, newline="") as f:
                for r in csv.DictReader(f):
                    if r["kind"] == "val" and r["name"] == "flow_loss" and (checkpoints is None
                                                                             or int(r["step"]) in checkpoints):
                        rows[arm, int(seed), int(r["step"])] = r["value"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["arm", "seed", "step", "flow_loss"])
        order = [*ARMS, UNPAIRED]
        for (arm, seed, step), v in sorted(rows.items(), key=lambda kv: (order.index(kv[0][0]), *kv[0][1:])):
            wr.writerow([arm, seed, step, v])
    tmp.replace(path)
    return path


def flow_loss_curves(results: Path, seeds) -> dict[str, dict[str, dict[str, float]]]:
    """{arm: {seed: {step: flow loss}}} from the ledger (the sanity curve; no verdict reads it)."""
    path = flow_loss_path(results)
    out: dict = {}
    if path.is_file():
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if int(r["seed"]) in seeds:
                    out.setdefault(r["arm"], {}).setdefault(r["seed"], {})[r["step"]] = float(r["flow_loss"])
    return out


# ------------------------------------------------------------------------------------------------- summary
def fd_curve(results: Path, arm: str, seed: int, w: float, checkpoints=CHECKPOINTS) -> dict[int, float]:
    """fd_judge at every checkpoint of (arm, seed, w) that the ledger holds."""
    out = {}
    for k in checkpoints:
        path = score_path(results, arm, seed, k, w)
        if path.is_file():
            s = read_npz(path)
            out[k] = fd_of_clips(s, np.arange(len(s["real_embedding"])))
    return out


def final_step(curve: dict[int, float], checkpoints=CHECKPOINTS, flat: float = FLAT) -> int | None:
    """S_v from vanilla's curve: the first checkpoint whose fd_judge improved by less than `flat` (a share) over the
    previous checkpoint's, or the last checkpoint; None while the curve has not decided it yet."""
    for prev, k in zip(checkpoints, checkpoints[1:]):
        if prev not in curve or k not in curve:
            return None
        if curve[prev] - curve[k] < flat * curve[prev]:
            return k
    return checkpoints[-1] if checkpoints[-1] in curve else None


def log_steps_to_reach(curve: dict[int, float], target: float, final: int) -> tuple[float, str]:
    """The first step at which `curve` (fd_judge against steps; lower is better) reaches `target`, interpolated
    linearly in log₂ steps between the checkpoints around the crossing, and how it is bounded: "reached",
    "at or before" (already at the first checkpoint: the step is an upper bound) or "not reached" (by `final`: the
    step is reported as `final`, a lower bound). C2's registered reading (docs/study.md §2); not
    `reworld.evaluation.curves.steps_to_reach`, which takes the first logged step at or past a target, uninterpolated.
    """
    ks = sorted(k for k in curve if k <= final)
    if not ks:
        raise ValueError("no checkpoint to read the curve at")
    if curve[ks[0]] <= target:
        return float(ks[0]), "at or before"
    for a, b in zip(ks, ks[1:]):
        if curve[b] <= target:
            frac = (curve[a] - target) / (curve[a] - curve[b])
            return float(2 ** (math.log2(a) + frac * (math.log2(b) - math.log2(a)))), "reached"
    return float(final), "not reached"


def verdict(boot: tuple[float, float], t_seeds: tuple[float, float], median: float,
            smallest: float = SMALLEST_EFFECT) -> str:
    """A claimed speed-up (> 1): docs/study.md §2, both intervals agreeing (§0), amendment 1's wording."""
    ivs = [boot, t_seeds]
    if all(lo > 1 for lo, _ in ivs):
        return "reproduces" if median >= smallest else "reproduces, below the smallest effect"
    if all(hi < smallest for _, hi in ivs):
        return "does not"
    return "inconclusive"


def fixed_final(results: Path, seeds, checkpoints=CHECKPOINTS) -> tuple[int | None, str | None]:
    """S_v as decided on seed 0's first vanilla curve when the ledger holds it (amendment 14: kept as `UNPAIRED`),
    and what it was decided on; (None, the vanilla seed it will be decided on) otherwise."""
    final = final_step(fd_curve(results, UNPAIRED, 0, 1.0, checkpoints), checkpoints)
    if final is not None:
        return final, "vanilla, seed 0, its first (unpaired) run (amendment 14)"
    return None, (f"vanilla, seed {seeds[0]}" if seeds else None)


def speed_up_stats(sp: np.ndarray, resamples: int = BOOTSTRAP) -> dict:
    """Per-seed speed-ups → their median with §2's bootstrap interval over seeds (of the median; numpy seed 0), the
    geometric mean and §0's Student-t interval over the seeds' log₂ speed-ups (exponentiated; (0, ∞) with one seed)."""
    rng = np.random.default_rng(0)
    boots = np.median(sp[rng.integers(0, len(sp), (resamples, len(sp)))], axis=1)
    logs = np.log2(sp)
    lo, hi = t_interval(logs)
    return {"median": float(np.median(sp)), "geometric_mean": float(2 ** logs.mean()),
            "boot_lo": float(np.quantile(boots, 0.025)), "boot_hi": float(np.quantile(boots, 0.975)),
            "t_lo": float(2 ** lo), "t_hi": float(2 ** hi)}


def summarize(results: Path, seeds, checkpoints=CHECKPOINTS, resamples: int = BOOTSTRAP) -> dict:
    """Curves, S_v, speed-ups and verdicts of everything the ledger holds."""
    curves = {(arm, seed, w): fd_curve(results, arm, seed, w, checkpoints)
              for arm, ws in GUIDANCE.items() for seed in seeds for w in ws}
    unpaired = fd_curve(results, UNPAIRED, 0, 1.0, checkpoints)
    final, decided_on = fixed_final(results, seeds, checkpoints)
    if final is None and seeds:
        final = final_step(curves.get(("vanilla", seeds[0], 1.0), {}), checkpoints)
    out: dict = {"final_step": final, "decided_on": decided_on,
                 "curves": {label(a, w): {str(s): {str(k): v for k, v in c.items()} for (a2, s, w2), c in curves.items()
                                          if (a2, w2) == (a, w) and c}
                            for a, ws in GUIDANCE.items() for w in ws},
                 "unpaired": {"what": "seed 0's first vanilla run, whose init differed from its arms' (amendment "
                                      "14); S_v was decided on it; reported beside, not used for speed-ups",
                              "curve": {str(k): v for k, v in unpaired.items()}},
                 "speed_ups": {},
                 "flow_loss_val": {"what": "sanity curve (amendment 13): the trainer's validation flow loss at each "
                                           "checkpoint; ig-sg's is its own objective; no verdict reads it",
                                   "curves": flow_loss_curves(results, seeds)}}
    if final is None:
        return out
    for arm, ws in GUIDANCE.items():
        for w in ws:
            if arm == "vanilla":
                continue
            rows = {}
            for seed in seeds:
                van, cur = curves["vanilla", seed, 1.0], curves[arm, seed, w]
                if final not in van or not all(k in cur for k in checkpoints if k <= final):
                    continue
                target = van[final]
                # amendment 20: the numerator is where vanilla itself first reaches its value at S_v (the issue's
                # definition); S_v ÷ S_arm, as §2 registered it, is kept beside and read by no verdict
                v_step, v_bound = log_steps_to_reach(van, target, final)
                step, bound = log_steps_to_reach(cur, target, final)
                rows[seed] = {"target_fd": target, "vanilla_steps": v_step, "vanilla_bound": v_bound, "steps": step,
                              "bound": bound, "speed_up": v_step / step, "speed_up_registered": final / step}
            entry = {"per_seed": {str(s): r for s, r in rows.items()}, "seeds": sorted(rows),
                     "role": "the claim (C2)" if (arm, w) == CLAIM else "reported beside it, not used for C2's verdict"}
            if rows:
                stats = speed_up_stats(np.array([r["speed_up"] for r in rows.values()]), resamples)
                complete = len(rows) == len(seeds)
                boot, t_iv = (stats["boot_lo"], stats["boot_hi"]), (stats["t_lo"], stats["t_hi"])
                v = verdict(boot, t_iv, stats["median"])
                entry.update(stats, smallest_effect=SMALLEST_EFFECT,
                             verdict=(f"pending ({len(rows)} of {len(seeds)} seeds)" if not complete
                                      else v if (arm, w) == CLAIM else "beside the claim: " + v),
                             power_rule=bool(complete and (arm, w) == CLAIM and v == "inconclusive"
                                             and sorted(seeds) == list(SEEDS)  # once: over the registered five
                                             and max(boot[1], t_iv[1]) - min(boot[0], t_iv[0]) > 1.0))
                entry["registered_form"] = {
                    "what": "S_v ÷ S_arm as §2 registered it: on a vanilla curve that reaches its value at S_v before "
                            "S_v, vanilla's own twin reads above 1 (amendment 20); no verdict reads it",
                    **speed_up_stats(np.array([r["speed_up_registered"] for r in rows.values()]), resamples)}
            out["speed_ups"][label(arm, w)] = entry
    # the app's table of registered comparisons (the ablation tab): the median speed-up with its intervals
    out["comparisons"] = {f"{name} against vanilla w=1: speed-up (median, ×)": {
        k: e[k] for k in ("median", "boot_lo", "boot_hi", "t_lo", "t_hi", "smallest_effect", "verdict")}
        for name, e in out["speed_ups"].items() if "median" in e}
    return out


def write_curves_csv(results: Path, seeds, checkpoints=CHECKPOINTS) -> Path:
    """Every score file's figures as curves (step, run, seed, metric, value): fd_judge, kid_judge, mean position
    error."""
    from reworld.evaluation.judge import judge_kid

    path = results / "convergence_study.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["step", "run", "seed", "metric", "value"])
        # every (arm, w, seed), and beside them seed 0's first vanilla run (amendment 14)
        runs = [(arm, w, seed) for arm, ws in GUIDANCE.items() for w in ws for seed in seeds] + [(UNPAIRED, 1.0, 0)]
        for arm, w, seed in runs:
            for k in checkpoints:
                p = score_path(results, arm, seed, k, w)
                if not p.is_file():
                    continue
                s = read_npz(p)
                n = len(s["real_embedding"])
                for metric, value in (("fd_judge", fd_of_clips(s, np.arange(n))),
                                      ("kid_judge", judge_kid(s["real_embedding"], s["embedding"])),
                                      ("position_m", float(s["position_m"].mean()))):
                    wr.writerow([k, label(arm, w), seed, metric, f"{value:.6g}"])
        for arm, by_seed in flow_loss_curves(results, seeds).items():  # the model's, so under the arm's first w
            for seed, curve in by_seed.items():
                for k, value in curve.items():
                    wr.writerow([k, label(arm, GUIDANCE.get(arm, (1.0,))[0]), seed, "flow_loss_val", f"{value:.6g}"])
    return path


def write_summary(results: Path, seeds, extra: dict, checkpoints=CHECKPOINTS, resamples: int = BOOTSTRAP) -> dict:
    from .output import write_json

    summary = summarize(results, seeds, checkpoints, resamples)
    write_curves_csv(results, seeds, checkpoints)
    write_json({**extra, "registered_seeds": list(seeds), "paper": PAPER, **summary},
               results / "convergence_study.json")
    return summary


def with_power_seeds(results: Path, seeds, checkpoints=CHECKPOINTS, resamples: int = BOOTSTRAP) -> list[int]:
    """§2's power rule, applied once: when `seeds` are the registered five, all judged, and the claim's verdict over
    them is inconclusive with its intervals spanning more than 1.0 in speed-up, seeds 5–7 join for every arm.
    Any other seed list is run as given."""
    seeds = list(seeds)
    if sorted(seeds) != list(SEEDS):
        return seeds
    claim = summarize(results, seeds, checkpoints, resamples)["speed_ups"].get(label(*CLAIM), {})
    return seeds + list(POWER_SEEDS) if claim.get("power_rule") else seeds


def run_study(out: Path, checkpoint: Path, base: Path, seeds, results: Path, samples: int = SAMPLES,
              sample_steps: int = SAMPLE_STEPS, checkpoints=CHECKPOINTS, resamples: int = BOOTSTRAP,
              judge: str | None = None, log=print, summary_only: bool = False) -> dict:
    """Seed-major: seed `seeds[0]`'s vanilla first, checkpoint by checkpoint until S_v is decided; then every arm of
    every seed to S_v (vanilla of each seed first); then, if §2's power rule fires on the registered seeds, seeds 5–7
    the same way (`with_power_seeds`). `summary_only`: train and judge nothing, only rewrite the summary files from
    the ledger (after a change to how it is summarised: amendment 20)."""
    seeds = list(seeds)
    checkpoints = tuple(sorted(checkpoints))
    check_ledger(results, base, checkpoint)
    if not summary_only:
        out.mkdir(parents=True, exist_ok=True)
        init_study(out, checkpoint)
        collect_flow_loss(out, results)  # runs trained before the sanity curve was collected (amendment 13)
    extra = {"vae_of": str(checkpoint), "config": str(base), "samples": samples, "sample_steps": sample_steps,
             "checkpoints": list(checkpoints), "flat": FLAT, "schedule": SCHEDULE,
             "arms": {a: {**ARMS[a], "guidance": GUIDANCE[a]} for a in ARMS},
             "command": (f"python -m analysis study-convergence --out {out} --seeds {' '.join(map(str, seeds))} "
                         f"--checkpoint {checkpoint} --config {base} --results {results}")}
    if summary_only:
        return write_summary(results, with_power_seeds(results, seeds, checkpoints, resamples), extra, checkpoints,
                             resamples)
    args = dict(samples=samples, sample_steps=sample_steps, judge=judge, log=log)
    first = seeds[0]
    final, _ = fixed_final(results, seeds, checkpoints)
    for k in (checkpoints if final is None else ()):  # S_v from the first seed's vanilla curve
        run_checkpoint(out, checkpoint, base, "vanilla", first, k, results, **args)
        final = final_step(fd_curve(results, "vanilla", first, 1.0, checkpoints), checkpoints)
        write_summary(results, seeds, extra, checkpoints, resamples)
        if final is not None:
            break
    log(f"[study] vanilla's final step S_v = {final} (seed {first})")
    done: list[int] = []
    every = with_power_seeds(results, seeds, checkpoints, resamples)
    while len(done) < len(every):
        if len(every) > len(seeds):
            log(f"[study] §2's power rule: the claim is inconclusive over seeds {' '.join(map(str, seeds))} with "
                f"intervals wider than 1.0; seeds {' '.join(map(str, every[len(seeds):]))} join once, every arm")
        for seed in every[len(done):]:
            for arm in ARMS:
                for k in (c for c in checkpoints if c <= final):
                    run_checkpoint(out, checkpoint, base, arm, seed, k, results, **args)
                write_summary(results, every, extra, checkpoints, resamples)
        done, every = every, with_power_seeds(results, seeds, checkpoints, resamples)
    return write_summary(results, every, extra, checkpoints, resamples)


# ------------------------------------------------------------------------------------------ clip-sampling noise
NOISE_RESAMPLES = 1000


def speed_reader(judge_path) -> Callable[[np.ndarray], np.ndarray]:
    """The judge's speed reading of a video from its clip embedding alone: (N, 2D) → (N,) [m/s], the mean of the
    judge's per-step speed readings over the video's future steps. Exact, not a fit: the speed head is linear on the
    per-step features, and the embedding's second half is their mean over the future steps (`WorldJudge.embed`).
    So the score files, which keep embeddings and not readings, still say how fast the judge sees each future go."""
    from reworld.evaluation.judge import load_judge

    judge = load_judge(judge_path)
    d, scale = int(judge.config.feature_dim), float(judge.config.speed_scale)
    weight = judge.speed_head.weight.detach().double().cpu().numpy()[0]
    bias = float(judge.speed_head.bias.detach().double())

    def read(embedding: np.ndarray) -> np.ndarray:
        e = np.asarray(embedding, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != 2 * d:
            raise ValueError(f"{judge_path}: this judge's clip embeddings are 2 × {d} wide; the score files' are "
                             f"{e.shape[-1]} (scored by another judge)")
        return (e[:, d:] @ weight + bias) * scale

    return read


def mean_term(s: dict, clips: np.ndarray) -> float:
    """fd_judge's means' term ‖μ_real − μ_generated‖² over `clips` (with their multiplicity, as `fd_of_clips`): what
    every future shifted alike adds. The rest of fd_judge is the covariances' term (spread and shape)."""
    rows = np.concatenate([np.flatnonzero(s["clip_of"] == c) for c in clips])
    return float(np.sum((s["real_embedding"][clips].astype(np.float64).mean(0)
                         - s["embedding"][rows].astype(np.float64).mean(0)) ** 2))


def per_clip_mean(values: np.ndarray, clip_of: np.ndarray, n: int) -> np.ndarray:
    """(M,) values of the futures → (n,) each clip's mean over its futures."""
    return np.bincount(clip_of, values, minlength=n) / np.bincount(clip_of, minlength=n)


def clip_speed(s: dict, read) -> np.ndarray:
    """A score file and a `speed_reader` → (clips,) each clip's futures' speed reading minus its real clip's [m/s]."""
    n = len(s["real_embedding"])
    return per_clip_mean(read(s["embedding"]) - read(s["real_embedding"])[s["clip_of"]], s["clip_of"], n)


def clip_readings(s: dict, read) -> tuple[np.ndarray, np.ndarray]:
    """A score file and a `speed_reader` → (real, generated), each (clips,): each real clip's speed reading and the
    mean of its futures' [m/s]."""
    n = len(s["real_embedding"])
    return read(s["real_embedding"]), per_clip_mean(read(s["embedding"]), s["clip_of"], n)


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares y ≈ slope · x + intercept along the last axis (any leading axes, e.g. bootstrap resamples):
    (slope, intercept)."""
    xc = x - x.mean(-1, keepdims=True)
    slope = (xc * (y - y.mean(-1, keepdims=True))).sum(-1) / (xc**2).sum(-1)
    return slope, y.mean(-1) - slope * x.mean(-1)


def clip_noise(results: Path, seeds, checkpoints=CHECKPOINTS, resamples: int = NOISE_RESAMPLES,
               judge: str | Path | None = None) -> dict:
    """How much of a curve's movement the validation clips alone explain (a diagnostic beside C2; no verdict reads
    it). Per seed, one set of bootstrap resamples of the val clips (each clip with its futures and its real clip) is
    shared by every score file of that seed, so every difference below is paired by clip: each point's fd_judge with
    its 95 % interval, its change from the previous checkpoint, and each arm minus vanilla at the same checkpoint; and
    §2's secondary reading, the judge's mean position error over the horizon (each clip the mean over its futures), with
    its interval and each arm minus vanilla, on the same resamples.

    What moves fd_judge, on the same resamples (docs/study.md amendment 21): its two terms (`mean_term`: every future
    shifted alike, against spread and shape), the paired distance (each future's embedding from its own clip's real
    one, each clip the mean over its futures: a model can come nearer each clip while its futures drift together),
    the two sets' spread (trace of the covariance), and, with the `judge` that scored the ledger, its speed reading of
    the futures minus that of their real clips [m/s] (`speed_reader`)."""
    results = Path(results)
    read_speed = speed_reader(judge) if judge is not None else None
    runs = [(arm, w) for arm, ws in GUIDANCE.items() for w in ws] + [(UNPAIRED, 1.0)]
    out: dict = {"what": "fd_judge's clip-sampling noise: paired bootstrap over the val clips within a seed "
                         "(percentile 95 % intervals); a diagnostic, no verdict reads it; position_m: the judge's "
                         "mean position error over the horizon [m] on the same resamples; terms: fd_judge's means' "
                         "term and covariances' term, the paired distance of each future to its own clip's real "
                         "embedding, the traces of both covariances; speed_bias_mps: the judge's speed reading of "
                         "the futures minus their real clips' (amendment 21)",
                 "resamples": resamples, "judge": None if judge is None else str(judge), "seeds": {}}
    for seed in seeds:
        scores = {(arm, w, k): read_npz(p) for arm, w in runs for k in checkpoints
                  if (p := score_path(results, arm, seed, k, w)).is_file()}
        if not scores:
            continue
        n = len(next(iter(scores.values()))["real_embedding"])
        if any(len(s["real_embedding"]) != n for s in scores.values()):
            raise ValueError(f"seed {seed}: score files of different val sets cannot be paired by clip")
        idx = np.random.default_rng(seed).integers(0, n, (resamples, n))
        point = {key: fd_of_clips(s, np.arange(n)) for key, s in scores.items()}
        boot = {key: np.array([fd_of_clips(s, c) for c in idx]) for key, s in scores.items()}
        per_clip = {key: clip_position(s).mean(1) for key, s in scores.items()}
        pos = {key: float(v.mean()) for key, v in per_clip.items()}
        pos_boot = {key: v[idx].mean(1) for key, v in per_clip.items()}
        # what moves fd_judge (amendment 21): the means' term, the paired distance and the speed reading per clip
        mean_t = {key: mean_term(s, np.arange(n)) for key, s in scores.items()}
        mean_boot = {key: np.array([mean_term(s, c) for c in idx]) for key, s in scores.items()}
        paired = {key: per_clip_mean(np.linalg.norm(s["embedding"].astype(np.float64)
                                                    - s["real_embedding"][s["clip_of"]].astype(np.float64), axis=1),
                                     s["clip_of"], n) for key, s in scores.items()}
        speed = {} if read_speed is None else {key: clip_speed(s, read_speed) for key, s in scores.items()}

        def iv(b: np.ndarray) -> list[float]:
            return [float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))]

        def terms(key) -> dict:
            s, fd = scores[key], point[key]
            return {"mean": {"value": mean_t[key], "interval": iv(mean_boot[key])},
                   "covariance": {"value": fd - mean_t[key], "interval": iv(boot[key] - mean_boot[key])},
                   "paired_distance": {"value": float(paired[key].mean()), "interval": iv(paired[key][idx].mean(1))},
                   "spread": {"generated": float(np.trace(np.cov(s["embedding"].astype(np.float64), rowvar=False))),
                              "real": float(np.trace(np.cov(s["real_embedding"].astype(np.float64),
                                                            rowvar=False)))}}

        def term_change(key, prev) -> dict:
            cov_b = (boot[key] - mean_boot[key]) - (boot[prev] - mean_boot[prev])
            return {"mean": {"value": mean_t[key] - mean_t[prev], "interval": iv(mean_boot[key] - mean_boot[prev])},
                    "covariance": {"value": (point[key] - mean_t[key]) - (point[prev] - mean_t[prev]),
                                   "interval": iv(cov_b)},
                    "paired_distance": {"value": float((paired[key] - paired[prev]).mean()),
                                        "interval": iv((paired[key] - paired[prev])[idx].mean(1))}}

        def diff(a: dict, key, ref) -> dict:
            d = a[key] - a[ref]
            return {"value": float(d.mean()), "interval": iv(d[idx].mean(1))}

        rows = {}
        for arm, w in runs:
            ks = [k for k in checkpoints if (arm, w, k) in scores]
            if not ks:
                continue
            curve = {}
            for i, k in enumerate(ks):
                key = (arm, w, k)
                row = {"fd_judge": point[key], "interval": iv(boot[key]),
                       "position_m": {"value": pos[key], "interval": iv(pos_boot[key])}, "terms": terms(key)}
                if speed:
                    row["speed_bias_mps"] = {"value": float(speed[key].mean()), "interval": iv(speed[key][idx].mean(1))}
                if i:
                    prev = (arm, w, ks[i - 1])
                    row["change_from_previous"] = {"from": ks[i - 1], "value": point[key] - point[prev],
                                                   "interval": iv(boot[key] - boot[prev]),
                                                   "terms": term_change(key, prev)}
                    if speed:
                        row["change_from_previous"]["speed_bias_mps"] = diff(speed, key, prev)
                ref = ("vanilla", 1.0, k)
                if arm != "vanilla" and ref in scores:
                    row["minus_vanilla"] = {"value": point[key] - point[ref], "interval": iv(boot[key] - boot[ref])}
                    row["position_minus_vanilla"] = {"value": pos[key] - pos[ref],
                                                     "interval": iv(pos_boot[key] - pos_boot[ref])}
                    if speed:
                        row["speed_minus_vanilla"] = diff(speed, key, ref)
                curve[str(k)] = row
            rows[label(arm, w)] = curve
        out["seeds"][str(seed)] = {"clips": n, "curves": rows}
    return out


# ------------------------------------------------------------------------------------------ R3's gate
R3_GATE_STEP = 2000


def r3_gate(noise: dict, seeds=SEEDS, step: int = R3_GATE_STEP) -> dict:
    """R3's gate (docs/world4s.md, R3; fixed 2026-12-07 13:11, before C2's seeds 3–4 were read), from
    `study-convergence-noise`'s document: per seed, d_g = IG at w = 1.4 − vanilla and d_s = the stop-gradient arm −
    vanilla, the judge's mean position error over the horizon at `step`, paired by clip (`position_minus_vanilla`).
    R3 trains if the mean over the seeds of d_g − d_s is above 0 (the point value). The t interval over the seeds is
    reported beside and decides nothing. Every seed asked for must be in the document (else a short error); a reading
    on other seeds or another step than the registered ones is returned with `registered` false (a preview)."""
    from scipy import stats

    seeds = [str(s) for s in seeds]
    guided, stopped = label("ig", CLAIM[1]), label("ig-sg", 1.0)
    per_seed = {}
    for s in seeds:
        curves = noise.get("seeds", {}).get(s, {}).get("curves", {})
        d = {}
        for name, key in (("d_g", guided), ("d_s", stopped)):
            row = curves.get(key, {}).get(str(step), {})
            if "position_minus_vanilla" not in row:
                raise ValueError(f"seed {s}: no {key} − vanilla position at step {step} in the noise document "
                                 f"(run study-convergence-noise with --seeds {' '.join(seeds)} once they are scored)")
            d[name] = float(row["position_minus_vanilla"]["value"])
        per_seed[s] = {**d, "d_g_minus_d_s": d["d_g"] - d["d_s"]}
    diffs = np.array([v["d_g_minus_d_s"] for v in per_seed.values()])
    mean = float(diffs.mean())
    n = len(diffs)
    half = float(stats.t.ppf(0.975, n - 1) * diffs.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"what": "R3's gate (docs/world4s.md): the mean over C2's seeds of (IG at w = 1.4 − vanilla) − "
                    "(stop-gradient − vanilla), the judge's mean position error over the horizon [m] at "
                    f"step {step}, paired by clip; R3 trains if it is above 0 (the t interval decides nothing)",
            "step": step, "seeds": per_seed, "mean": mean, "t_interval": [mean - half, mean + half],
            "trains": bool(mean > 0),
            "registered": [int(s) for s in seeds] == list(SEEDS) and step == R3_GATE_STEP}
