"""C2's jobs (docs/study.md §2, amendments 8 and 12) as many processes at once, for a machine with more than two cores
(the device's GPU): every (arm, seed) chain trains its stage video segment by segment with exactly the commands of
`analysis.study_convergence.run_checkpoint` (`reworld train --stage video --resume --max-steps k`), and each
checkpoint's exported EMA pipeline is copied to `OUT/<arm>-s<seed>-k<k>` and scored there by `analysis judge-scores`
(the study's arguments) while the chain trains on, so scoring is off the chain's critical path. Tasks run in the order
seed, then training before scoring: the first seeds finish first. Score files land in `RESULTS/convergence_study/
scores/` (the study's ledger names); with `--bundle`, the ledger folder is re-archived to that tar file after every set
and a status JSON is written beside it, so what finished comes back even if the call is cut.

    NVIDIA_TF32_OVERRIDE=0 python scripts/study_c2_parallel.py --out runs/c2-gpu --results runs/c2-gpu/results \
        --seeds 1 2 3 4 --workers 14 --deadline <unix time> --bundle $OUT/c2_scores.tar

S_v is not decided here: it is the one decided on seed 0 (2000); `--final` passes it. A chain whose checkpoints are
not all scored by the deadline is reported as incomplete; amendment 12 discards its sets.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.study_convergence import (ARMS, BASE_CONFIG, CHECKPOINTS, GUIDANCE, SAMPLE_STEPS,  # noqa: E402
                                        SAMPLES, arm_config, check_ledger, collect_flow_loss, score_path,
                                        train_command, trained_step)
from analysis.study_finetune import judge_command  # noqa: E402
from analysis.study_planner import init_study, make_run  # noqa: E402

SNAPSHOT_SKIP = ("checkpoints", "tensorboard", "logs", "prepared")


def snapshot(run: Path, step: int) -> Path:
    """The run folder's exported pipeline at `step` (no training state), beside the run so `../vae` still resolves."""
    dst = run.parent / f"{run.name}-k{step}"
    tmp = run.parent / f".{run.name}-k{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run, tmp, ignore=lambda d, names: [n for n in names if Path(d) == run and n in SNAPSHOT_SKIP]
                    + [n for n in names if n.startswith(".study-")])
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)
    return dst


class Task:
    def __init__(self, kind: str, arm: str, seed: int, step: int, cmd: list[str], log: Path, w: float | None = None):
        self.kind, self.arm, self.seed, self.step, self.cmd, self.log, self.w = kind, arm, seed, step, cmd, log, w
        self.proc: subprocess.Popen | None = None
        self.t0 = self.t1 = None
        self.rc = None

    @property
    def key(self):  # seed first; within a seed, training (the critical path) before scoring
        return (self.seed, 0 if self.kind == "train" else 1, self.step, list(ARMS).index(self.arm))

    def start(self, threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.log, "a")
        f.write(f"\n$ {' '.join(self.cmd)}  # {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        self._f = f

    def poll(self):
        if self.proc is None or self.rc is not None:
            return self.rc
        rc = self.proc.poll()
        if rc is not None:
            self.rc, self.t1 = rc, time.time()
            self._f.close()
        return rc

    def row(self):
        return {"kind": self.kind, "arm": self.arm, "seed": self.seed, "step": self.step, "w": self.w, "rc": self.rc,
                "seconds": None if self.t0 is None or self.t1 is None else round(self.t1 - self.t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--checkpoint", type=Path, default=Path("assets/checkpoints/vanilla"))
    p.add_argument("--config", type=Path, default=Path(BASE_CONFIG))
    p.add_argument("--final", type=int, default=2000, help="S_v, decided on seed 0 (the study's checkpoints ≤ it)")
    p.add_argument("--checkpoints", type=int, nargs="+", default=list(CHECKPOINTS))
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--sample-steps", type=int, default=SAMPLE_STEPS)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--threads", type=int, default=1, help="threads per process")
    p.add_argument("--deadline", type=float, default=None, help="unix time: launch nothing after it minus --margin")
    p.add_argument("--margin", type=float, default=60.0, help="s before the deadline after which nothing starts")
    p.add_argument("--bundle", type=Path, default=None, help="tar of the ledger, rewritten after every set")
    p.add_argument("--judge", default=None, help="video judge folder (default: the shipped one)")
    a = p.parse_args(argv)

    py = sys.executable
    steps = [k for k in sorted(a.checkpoints) if k <= a.final]
    check_ledger(a.results, a.config, a.checkpoint)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.bundle:
        a.bundle.parent.mkdir(parents=True, exist_ok=True)
    init_study(a.out, a.checkpoint)
    chains = {}
    for seed in a.seeds:
        for arm in ARMS:
            run, cfg = make_run(a.out, f"{arm}-s{seed}", arm_config(a.config, arm, seed))
            chains[(arm, seed)] = {"run": run, "cfg": cfg, "next": 0}
    pending: list[Task] = []
    running: list[Task] = []
    done: list[Task] = []
    status_path = a.bundle.with_suffix(".json") if a.bundle else a.out / "parallel_status.json"

    def train_task(arm, seed):
        c = chains[(arm, seed)]
        k = steps[c["next"]]
        return Task("train", arm, seed, k, train_command(c["run"], c["cfg"], k), a.out / "logs" / f"{arm}-s{seed}.log")

    def score_tasks(arm, seed, k, snap):
        out = []
        for w in GUIDANCE[arm]:
            path = score_path(a.results, arm, seed, k, w)
            if path.is_file():
                continue
            cmd = judge_command(snap, w, path, a.samples, a.sample_steps, a.judge)
            out.append(Task("score", arm, seed, k, cmd, a.out / "logs" / f"{arm}-s{seed}-k{k}-w{w:g}.log", w))
        return out

    # the shared per-clip latents once, before the chains (each would otherwise encode them at once)
    first = next(iter(chains.values()))
    t0 = time.time()
    if not any((a.out / "prepared").glob("latents-*")):
        subprocess.run([py, "-m", "reworld", "prepare", "--config", str(first["cfg"]), "--out", str(first["run"])],
                       check=True, stdout=subprocess.DEVNULL)
    print(f"prepared {sorted(x.name for x in (a.out / 'prepared').iterdir())} in {time.time() - t0:.0f} s", flush=True)
    for (arm, seed), c in chains.items():  # a second call goes on where the first stopped
        done_to = trained_step(c["run"])
        for k in (k for k in steps if k <= done_to):
            snap = c["run"].parent / f"{c['run'].name}-k{k}"
            todo = score_tasks(arm, seed, k, snap)
            if todo and not (snap / "model_index.json").is_file():
                raise SystemExit(f"{c['run']} is trained past {k} without its snapshot; its sets cannot be scored")
            pending.extend(todo)
        c["next"] = sum(k <= done_to for k in steps)
        if c["next"] < len(steps):
            pending.append(train_task(arm, seed))

    def bundle():
        if a.bundle:
            tmp = a.bundle.with_name(f".{a.bundle.name}.tmp")
            with tarfile.open(tmp, "w") as tar:
                scores = a.results / "convergence_study" / "scores"
                if scores.is_dir():
                    tar.add(scores, arcname="scores")
                flow = a.results / "convergence_study" / "flow_loss.csv"
                if flow.is_file():
                    tar.add(flow, arcname="flow_loss.csv")
            tmp.replace(a.bundle)

    def write_status(final=False):
        complete = {f"{arm}-s{seed}": all(score_path(a.results, arm, seed, k, w).is_file() for k in steps
                                          for w in GUIDANCE[arm]) for (arm, seed) in chains}
        doc = {"time": time.time(), "final": final, "steps": steps, "complete": complete,
               "tasks": [t.row() for t in done + running], "pending": len(pending)}
        tmp = status_path.with_name(f".{status_path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(status_path)

    t_start = time.time()
    while pending or running:
        for t in list(running):
            rc = t.poll()
            if rc is None:
                continue
            running.remove(t)
            done.append(t)
            print(f"[{time.time() - t_start:6.0f}s] {t.kind} {t.arm}-s{t.seed} k{t.step} w={t.w} rc={rc} "
                  f"{t.row()['seconds']}s", flush=True)
            if rc != 0:
                continue  # a failed training stops its chain; the log says why
            if t.kind == "train":
                c = chains[(t.arm, t.seed)]
                snap = snapshot(c["run"], t.step)
                collect_flow_loss(a.out, a.results, steps)
                pending.extend(score_tasks(t.arm, t.seed, t.step, snap))
                c["next"] += 1
                if c["next"] < len(steps):
                    pending.append(train_task(t.arm, t.seed))
            else:
                bundle()
            write_status()
        late = a.deadline is not None and time.time() > a.deadline - a.margin
        if late:
            pending.clear()
        pending.sort(key=lambda t: t.key)
        while pending and len(running) < a.workers:
            t = pending.pop(0)
            t.start(a.threads)
            running.append(t)
        if a.deadline is not None and time.time() > a.deadline:
            for t in running:
                t.proc.kill()
            for t in running:
                t.proc.wait()
                t.poll()
            done.extend(running)
            running.clear()
            print(f"[{time.time() - t_start:6.0f}s] deadline: stopped", flush=True)
            break
        time.sleep(0.5)
    bundle()
    write_status(final=True)
    failed = [t.row() for t in done if t.rc]
    print(json.dumps({"seconds": round(time.time() - t_start, 1), "failed": failed}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
