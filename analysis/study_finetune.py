"""The claims study's fine-tuning part, C1 (docs/study.md §3): the shipped vanilla Video DiT fine-tuned with and
without the intermediate-guidance loss, sampled on every val clip, read by the video judge, paired intervals, verdict.

    python -m analysis study-finetune --out runs/study-c1 [--seeds 0 1 2] [--samples 4] [--results assets/ablation]

A job (arm, seed) is a run folder `OUT/<arm>-s<seed>` whose stage video starts from `--checkpoint`'s `video_dit/`
(`video.init_from`; its head, all zeros after a vanilla run, starts as a new one), trained by
`python -m reworld train --stage video` for the registered 1000 steps (constant lr 1e-4 after 50 warm-up steps, EMA
restarted), then sampled at each of its arm's guidance values by `python -m analysis judge-scores` (every val clip ×
`--samples` futures, 20 steps, seeds as `eval`'s) into `RESULTS/finetune_study/scores/<arm>-s<seed>-w<w>.npz`: the
judge's embedding and position error of every future (≈ 0.25 MB each, compressed), and the real clips' embeddings, kept
once for every file that shares them in `real-<digest>.npy` beside them (`write_npz`). Those files
are committed: they are the study's ledger, so a study spread over machines (whose run folders go with them) goes on
where it stopped. Jobs run one at a time on every core (a Video DiT step wants both); a step whose output exists is
not run again, and a job whose score files all exist is not run at all. After each job the summary is rewritten:
`finetune_study.csv` (arm, seed, metric, value) and `finetune_study.json` (the registered comparisons: the relative
change of `fd_judge`, its bootstrap over clips with the seeds kept, the per-seed effects and their t interval).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from reworld.evaluation.stats import t_interval

from .study_planner import done_marker, init_study, make_run, run_logged, write_means_csv

# docs/study.md §3: λ_ig of each arm, and the guidance values each is sampled at
ARMS = {"lig0": 0.0, "lig0.5": 0.5}
GUIDANCE = {"lig0": (1.0,), "lig0.5": (1.0, 1.4)}
SEEDS = (0, 1, 2)
FINETUNE = {"lr": 1.0e-4, "lr_schedule": "constant_with_warmup", "lr_warmup_steps": 50}
STEPS = 1000
# (arm, w) against (reference, w); the first is the paper's comparison (C1's verdict)
COMPARISONS = ((("lig0.5", 1.4), ("lig0", 1.0)), (("lig0.5", 1.0), ("lig0", 1.0)))
SMALLEST_EFFECT = -0.10  # relative change of fd_judge (the paper: −23.9 % FVD)
PAPER = {"fvd_vanilla": 81.3, "fvd_reworld": 61.9, "relative": -0.239}
BOOTSTRAP = 10_000  # docs/study.md §0


def label(arm: str, w: float) -> str:
    return f"{arm} w={w:g}"


def score_name(arm: str, seed: int, w: float) -> str:
    return f"{arm}-s{seed}-w{w:g}"


def arm_config(base: Path, arm: str, seed: int, init_from: Path) -> dict:
    doc = yaml.safe_load(Path(base).read_text()) or {}
    doc.setdefault("video", {})["init_from"] = str(Path(init_from).resolve())
    doc.setdefault("loss", {})["lambda_ig"] = ARMS[arm]
    train = doc.setdefault("train", {})
    train.update(FINETUNE, seed=int(seed))
    train["max_steps"] = {**(train.get("max_steps") or {}), "video": STEPS}
    doc["name"] = f"{doc.get('name', 'study')}-ft-{arm}-s{seed}"
    return doc


def score_path(results: Path, arm: str, seed: int, w: float) -> Path:
    return results / "finetune_study" / "scores" / f"{score_name(arm, seed, w)}.npz"


def run_job(out: Path, checkpoint: Path, base: Path, arm: str, seed: int, samples: int, max_steps: int | None,
            results: Path, judge: str | None = None, sample_steps: int = 20, log=print) -> list[Path]:
    py = sys.executable
    name = f"{arm}-s{seed}"
    paths = [score_path(results, arm, seed, w) for w in GUIDANCE[arm]]
    if all(p.is_file() for p in paths):  # in the ledger: nothing to run
        return paths
    run, cfg = make_run(out, name, arm_config(base, arm, seed, checkpoint / "video_dit"))
    logfile = out / "logs" / f"{name}.log"
    threads = os.cpu_count() or 1
    if not done_marker(run, "video").is_file():
        log(f"[study] {name}: stage video (fine-tuning)")
        t0 = time.time()
        cmd = [py, "-m", "reworld", "train", "--stage", "video", "--config", str(cfg), "--out", str(run), "--resume"]
        if max_steps:
            cmd += ["--max-steps", str(max_steps)]
        run_logged(cmd, logfile, threads)
        done_marker(run, "video").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
    judge_missing(run, zip(GUIDANCE[arm], paths), samples, sample_steps, judge, logfile, threads,
                  lambda w: log(f"[study] {name}: judge scores at w = {w:g}"))
    return paths


def judge_command(run: Path, w: float, path: Path, samples: int, sample_steps: int, judge: str | None) -> list[str]:
    """The `python -m analysis judge-scores` command that writes the score file `path` of the run folder at w."""
    return ([sys.executable, "-m", "analysis", "judge-scores", "--checkpoint", str(run), "--guidance", f"{w:g}",
             "--samples", str(samples), "--steps", str(sample_steps), "--out", str(path)]
            + (["--judge", str(judge)] if judge else []))


def judge_missing(run: Path, wanted, samples: int, sample_steps: int, judge: str | None, logfile: Path, threads: int,
                  announce) -> None:
    """`judge_command` of the run folder at each (w, score file) of `wanted` whose file is not there yet
    (`announce(w)` before each)."""
    for w, path in wanted:
        if not path.is_file():
            announce(w)
            run_logged(judge_command(run, w, path, samples, sample_steps, judge), logfile, threads)


# ------------------------------------------------------------------------------------------------- scoring
def judge_scores(pipe, ds, judge, samples: int, guidance: float, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Every clip of `ds` × `samples` sampled futures at guidance w (seeded as `eval`'s: `sampled_videos`), read by
    the judge: `embedding` (M, D), `clip_of` (M,), `position_m` (M, F) against the world's truth; `real_embedding`
    (N, D) of the true clips."""
    from reworld.evaluation.evaluate import sampled_videos
    from reworld.evaluation.judge import check_judge_reads, judge_set_of, position_errors, read_videos

    check_judge_reads(judge, ds.cfg)
    indices = list(range(len(ds)))
    data = judge_set_of(ds, indices)
    videos, clip_of = sampled_videos(pipe, ds, indices, samples, steps, guidance, seed)
    readings = read_videos(judge, videos, times=data.time[clip_of])
    real = read_videos(judge, data.video(slice(None)), times=data.time)["embedding"]
    return {"embedding": readings["embedding"], "clip_of": clip_of,
            "position_m": position_errors(readings, data.subset(clip_of)), "real_embedding": real,
            "guidance": np.array(guidance), "samples": np.array(samples), "frame_rate": np.array(ds.cfg.frame_rate)}


REAL_FILE = re.compile(r"real-[0-9a-f]{16}\.npy")


def _real_digest(real: np.ndarray) -> str:
    real = np.ascontiguousarray(real)
    h = hashlib.sha256(f"{real.dtype.str}{real.shape}".encode())
    h.update(real.tobytes())
    return h.hexdigest()[:16]


def write_npz(arrays: dict, path: Path) -> Path:
    """A judge-scores file, compressed and written whole or not at all. The real clips' embeddings (the same in
    every file of a study, up to the threads' rounding) go once into a sibling `real-<digest>.npy`, named in the file
    by `real_embedding_file`, which keeps a study's ledger within `assets/`'s budget (issue 16)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(arrays)
    if "real_embedding" in arrays:
        real = np.ascontiguousarray(arrays.pop("real_embedding"))
        name = f"real-{_real_digest(real)}.npy"
        shared = path.parent / name
        if not shared.is_file() or _real_digest(np.load(shared, allow_pickle=False)) != name[5:-4]:
            tmp = shared.with_name(f".{shared.stem}.tmp.npy")
            np.save(tmp, real, allow_pickle=False)
            tmp.replace(shared)
        arrays["real_embedding_file"] = np.array(name)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)  # whole or absent
    return path


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """A judge-scores file (`write_npz`'s, or one holding its real embeddings inline) as arrays."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in ("embedding", "clip_of", "position_m", "frame_rate")}
            if "real_embedding" in f.files:
                out["real_embedding"] = f["real_embedding"]
            else:
                name = str(f["real_embedding_file"])
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a judge-scores file ({e}); delete it to score again") from None
    if "real_embedding" not in out:
        shared = path.parent / name
        if not REAL_FILE.fullmatch(name):
            raise ValueError(f"{path}: its real embeddings' file {name!r} is not a real-<digest>.npy name")
        try:
            real = np.load(shared, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{shared}: the real embeddings {path.name} reads are missing or unreadable ({e})") from None
        if _real_digest(real) != name[5:-4]:
            raise ValueError(f"{shared}: its contents do not match their digest (a corrupt or edited file)")
        out["real_embedding"] = real
    return out


# ------------------------------------------------------------------------------------------------- summary
def fd_of_clips(s: dict, clips: np.ndarray) -> float:
    """`fd_judge` of the futures of `clips` (with their multiplicity) against those clips' real embeddings."""
    from reworld.evaluation.video import frechet_distance

    rows = np.concatenate([np.flatnonzero(s["clip_of"] == c) for c in clips])
    return frechet_distance(s["real_embedding"][clips], s["embedding"][rows])


def verdict(boot: tuple[float, float], t_seeds: tuple[float, float], smallest: float) -> str:
    """A claimed decrease (relative change < 0): docs/study.md §0 with amendment 1."""
    ivs = [boot, t_seeds]
    if all(hi < 0 for _, hi in ivs):
        return "reproduces, below the smallest effect" if all(lo > smallest for lo, _ in ivs) else "reproduces"
    if all(lo > smallest for lo, _ in ivs):
        return "does not"
    return "inconclusive"


def summarize(scores: dict[tuple[str, int, float], dict], seeds, resamples: int = BOOTSTRAP) -> dict:
    from reworld.evaluation.judge import judge_kid

    means: dict = {}
    for (arm, seed, w), s in sorted(scores.items()):
        n = len(s["real_embedding"])
        means.setdefault(label(arm, w), {})[str(seed)] = {
            "fd_judge": fd_of_clips(s, np.arange(n)), "kid_judge": judge_kid(s["real_embedding"], s["embedding"]),
            "position_m": float(s["position_m"].mean()),
            **{f"position_m_{k}s": float(s["position_m"][:, round(float(s["frame_rate"]) * k) - 1].mean())
               for k in (1, 2, 3, 4) if s["position_m"].shape[1] >= round(float(s["frame_rate"]) * k)}}
    comps = {}
    for (arm, wa), (ref, wr) in COMPARISONS:
        shared = [sd for sd in seeds if (arm, sd, wa) in scores and (ref, sd, wr) in scores]
        if not shared:
            continue
        n = len(scores[arm, shared[0], wa]["real_embedding"])
        per_seed = np.array([fd_of_clips(scores[arm, sd, wa], np.arange(n)) / fd_of_clips(scores[ref, sd, wr],
                                                                                            np.arange(n)) - 1
                             for sd in shared])
        rng = np.random.default_rng(0)
        boots = np.empty(resamples)
        for b in range(resamples):  # one resample of clips for every seed and both arms (seeds kept)
            clips = rng.integers(0, n, n)
            boots[b] = np.mean([fd_of_clips(scores[arm, sd, wa], clips) / fd_of_clips(scores[ref, sd, wr], clips) - 1
                                for sd in shared])
        boot = (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)))
        t_seeds = t_interval(per_seed)
        claim = ((arm, wa), (ref, wr)) == COMPARISONS[0]
        complete = len(shared) == len(seeds)
        comps[f"{label(arm, wa)} − {label(ref, wr)}"] = {
            "unit": "relative change of fd_judge; bootstrap over clips (seeds kept), t over seeds",
            "seeds": shared, "clips": n, "per_seed": per_seed.tolist(), "mean": float(per_seed.mean()),
            "boot_lo": boot[0], "boot_hi": boot[1], "t_lo": t_seeds[0], "t_hi": t_seeds[1],
            "smallest_effect": SMALLEST_EFFECT,
            "verdict": (f"pending ({len(shared)} of {len(seeds)} seeds)" if not complete
                        else verdict(boot, t_seeds, SMALLEST_EFFECT) if claim
                        else "the loss alone: " + verdict(boot, t_seeds, SMALLEST_EFFECT)),
            "role": "the claim (C1)" if claim else "reported beside it, not used for C1's verdict",
            "position": position_change(scores, arm, wa, ref, wr, shared, resamples)}
    return {"means": means, "comparisons": comps}


def clip_position(s: dict) -> np.ndarray:
    """Each clip's position error [m] per future frame, the mean over its samples: (clips, frames)."""
    from reworld.evaluation.stats import per_clip_mean

    return per_clip_mean(s["position_m"], s["clip_of"], len(s["real_embedding"]))


def position_change(scores: dict, arm: str, wa: float, ref: str, wr: float, shared, resamples: int) -> dict:
    """§3's secondary metric, the judge's position error, as arm − reference in metres: over the horizon (every
    future frame) and at 1–4 s; per seed, the mean over seeds, the bootstrap over clips with one resample of clips
    for every seed (seeds kept, as the fd_judge effect's) and the t interval over the seeds. No verdict reads it."""
    d = np.stack([clip_position(scores[arm, sd, wa]) - clip_position(scores[ref, sd, wr]) for sd in shared])
    rate = float(scores[arm, shared[0], wa]["frame_rate"])
    cols = {"horizon": slice(None)}
    cols.update({f"{k}s": round(rate * k) - 1 for k in (1, 2, 3, 4) if round(rate * k) <= d.shape[2]})
    rng = np.random.default_rng(0)
    idx = rng.integers(0, d.shape[1], (resamples, d.shape[1]))
    out = {"unit": "metres, arm − reference (mean over clips, each clip the mean over its samples); bootstrap over "
                   "clips (seeds kept), t over seeds; the secondary metric of docs/study.md §3, no verdict"}
    for name, col in cols.items():
        per_clip = d[:, :, col].mean(2) if name == "horizon" else d[:, :, col]  # (seeds, clips)
        per_seed = per_clip.mean(1)
        boots = np.stack([per_clip[s][idx].mean(1) for s in range(len(shared))]).mean(0)
        t_iv = t_interval(per_seed)
        out[name] = {"per_seed": per_seed.tolist(), "mean": float(per_seed.mean()),
                     "boot_lo": float(np.quantile(boots, 0.025)), "boot_hi": float(np.quantile(boots, 0.975)),
                     "t_lo": t_iv[0], "t_hi": t_iv[1]}
    return out


def write_summary(results: Path, seeds, extra: dict, resamples: int = BOOTSTRAP) -> dict:
    """The summary of every score file in the ledger (`RESULTS/finetune_study/scores/`)."""
    scores = {}
    for arm, ws in GUIDANCE.items():
        for seed in seeds:
            for w in ws:
                path = score_path(results, arm, seed, w)
                if path.is_file():
                    scores[arm, seed, w] = read_npz(path)
    if not scores:
        return {}
    summary = summarize(scores, seeds, resamples)
    write_means_csv(summary["means"], results / "finetune_study.csv")
    from .output import write_json

    write_json({**extra, "registered_seeds": list(seeds), "paper": PAPER, **summary}, results / "finetune_study.json")
    return summary


def rewrite_summary(results: Path, seeds, resamples: int = BOOTSTRAP) -> dict:
    """The summary written again from the ledger alone (no run, no checkpoint read), keeping what the last one
    recorded of how the runs were made (checkpoint, config, samples, command, …): for a summary that gains a figure."""
    path = results / "finetune_study.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    keep = ("checkpoint", "config", "samples", "steps", "finetune", "arms", "command")
    return write_summary(results, seeds, {k: old[k] for k in keep if k in old}, resamples)


def check_ledger(results: Path, base: Path, checkpoint: Path) -> None:
    """Seeds join the ledger only under the base config, Video DiT and VAE its seeds were made under
    (`analysis.ledger`, `RESULTS/finetune_study/config.json`)."""
    from . import ledger

    ledger.check(results / "finetune_study", ledger.identity(base, checkpoint, ("vae", "video_dit")),
                 "pass the --checkpoint and --config its seeds were made under, or another --results for a new study")


def run_study(out: Path, checkpoint: Path, base: Path, seeds, samples: int, results: Path,
              max_steps: int | None = None, resamples: int = BOOTSTRAP, judge: str | None = None,
              sample_steps: int = 20, log=print) -> dict:
    check_ledger(results, base, checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    init_study(out, checkpoint)
    extra = {"checkpoint": str(checkpoint), "config": str(base), "samples": samples, "steps": STEPS,
             "finetune": FINETUNE, "arms": {a: {"lambda_ig": ARMS[a], "guidance": GUIDANCE[a]} for a in ARMS},
             "command": (f"python -m analysis study-finetune --out {out} --seeds {' '.join(map(str, seeds))} "
                         f"--samples {samples} --checkpoint {checkpoint} --config {base} --results {results}")}
    for seed in seeds:  # both arms of a seed before the next seed: the comparison is paired by seed
        for arm in ARMS:
            if all(score_path(results, arm, seed, w).is_file() for w in GUIDANCE[arm]):
                continue  # in the ledger: its summary is the final one's (a rewrite costs minutes of bootstrap)
            run_job(out, checkpoint, base, arm, seed, samples, max_steps, results, judge, sample_steps, log)
            write_summary(results, seeds, extra, resamples)
    return write_summary(results, seeds, extra, resamples)
