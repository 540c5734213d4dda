"""Does this code train and sample C2's arms as another checkout does (docs/study.md, amendment 19)?

    python scripts/c2_equivalence.py --reference <checkout of e1d6e6c> --out runs/c2-equivalence [--steps 4]

Under C2's frozen base config (`configs/study-c2.yaml`), each arm (vanilla, ig, ig-sg) at seed 1 is trained `--steps`
steps from scratch by both code trees, on one shared set of per-clip latents (the first tree encodes them), and the
IG model is sampled at w = 1 and 1.4 on three val clips (2 futures, 8 steps: C2's sampling) and read by the shipped
judge. Prints, per arm, how many saved tensors differ, and per w whether frames, judge embeddings and position errors
are identical; exits 1 if anything differs. Each tree runs in its own process with its own code on `sys.path`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ARMS = ("vanilla", "ig", "ig-sg")
CLIPS = (0, 40, 100)


def train(out: Path, steps: int, arm: str, base: Path) -> None:
    """In the current tree: C2's run folder for (arm, seed 1) and `steps` steps of its stage video."""
    from analysis.study_convergence import arm_config
    from analysis.study_planner import init_study, make_run

    init_study(out, Path("assets/checkpoints/vanilla"))
    run, cfg = make_run(out, f"{arm}-s1", arm_config(base, arm, 1))
    subprocess.run([sys.executable, "-m", "reworld", "train", "--stage", "video", "--config", str(cfg), "--out",
                    str(run), "--resume", "--max-steps", str(steps)], check=True, stdout=subprocess.DEVNULL)


def sample(run: Path, dest: Path) -> None:
    """In the current tree: C2's sampling of `run` on three val clips at w = 1 and 1.4, read by the shipped judge."""
    from dataclasses import replace

    import numpy as np

    from analysis.cli import _pipeline
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.evaluate import sampled_videos
    from reworld.evaluation.judge import judge_set_of, load_judge, position_errors, read_videos
    from reworld.paths import default_judge, resolve_dataroot

    pipe = _pipeline(str(run), "cpu")
    ds = NuScenesClips(replace(pipe.clip_spec, dataroot=resolve_dataroot(pipe.clip_spec.dataroot)), split="val",
                       geometry=False)
    judge = load_judge(default_judge(str(run)))
    arrays = {}
    for w in (1.0, 1.4):
        videos, clip_of = sampled_videos(pipe, ds, list(CLIPS), 2, 8, w, 0)
        data = judge_set_of(ds, list(CLIPS))
        read = read_videos(judge, videos, times=data.time[clip_of])
        arrays |= {f"frames w={w:g}": np.asarray(videos), f"embedding w={w:g}": read["embedding"],
                   f"position w={w:g}": position_errors(read, data.subset(clip_of))}
    np.savez(dest, **arrays)


def in_tree(tree: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", *args], cwd=tree, env=env, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, help="the other checkout (e.g. of e1d6e6c)")
    p.add_argument("--out", type=Path, help="working folder (two study folders and the samples)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        sys.path.insert(0, os.getcwd())
        if a.worker[0] == "train":
            train(Path(a.worker[1]), int(a.worker[2]), a.worker[3], Path(a.worker[4]))
        else:
            sample(Path(a.worker[1]), Path(a.worker[2]))
        return 0
    if a.reference is None or a.out is None:
        p.error("--reference and --out are required")
    import numpy as np
    import torch
    from safetensors.torch import load_file

    here = Path(__file__).resolve().parents[1]
    base = here / "configs" / "study-c2.yaml"
    trees = {"reference": a.reference.resolve(), "this": here}
    out = a.out.resolve()
    (out / "reference" / "prepared").mkdir(parents=True, exist_ok=True)
    (out / "this").mkdir(parents=True, exist_ok=True)
    if not (out / "this" / "prepared").exists():
        (out / "this" / "prepared").symlink_to(out / "reference" / "prepared")  # one set of latents for both
    same = True
    for arm in ARMS:
        for name, tree in trees.items():
            in_tree(tree, "train", str(out / name), str(a.steps), arm, str(base))
        ref, new = out / "reference" / f"{arm}-s1", out / "this" / f"{arm}-s1"
        n = differ = 0
        for f in sorted(ref.rglob("*.safetensors")):
            x, y = load_file(f), load_file(new / f.relative_to(ref))
            if set(x) != set(y):
                differ += 1
                continue
            n += len(x)
            differ += sum(not torch.equal(x[k], y[k]) for k in x)
        same &= differ == 0
        print(f"{arm}: {n} saved tensors after {a.steps} steps, {differ} differ")
    for name, tree in trees.items():
        in_tree(tree, "sample", str(out / name / "ig-s1"), str(out / f"samples-{name}.npz"))
    ref, new = np.load(out / "samples-reference.npz"), np.load(out / "samples-this.npz")
    for k in ref.files:
        equal = np.array_equal(ref[k], new[k])
        same &= equal
        print(f"ig, {k}: {'identical' if equal else f'differs by up to {np.abs(ref[k] - new[k]).max():.3g}'}")
    print("identical" if same else "NOT identical")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
