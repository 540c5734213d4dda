"""Does a rerun of a C1 fine-tune (docs/study.md, amendment 9) give the model whose set is committed? Regenerates the
first `--clips` val clips × their futures from RUN at guidance w (seeded as `sampled_videos` over the whole split),
reads them with the run's judge and compares the embeddings with the committed score file's rows of those clips.

    PYTHONPATH=. python scripts/finetune_rerun_check.py --run runs/study-c1/lig0.5-s0 \
        --scores assets/ablation/finetune_study/scores/lig0.5-s0-w1.npz --guidance 1 [--clips 3]
"""
import argparse
from dataclasses import replace

import numpy as np
import torch

from analysis.cli import _pipeline
from analysis.study_finetune import read_npz
from reworld.data.loader import NuScenesClips
from reworld.evaluation.judge import judge_set_of, load_judge, read_videos
from reworld.paths import default_judge, resolve_dataroot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--scores", required=True)
    ap.add_argument("--guidance", type=float, required=True)
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    old = read_npz(args.scores)
    pipe = _pipeline(args.run, None)
    ds = NuScenesClips(replace(pipe.clip_spec, dataroot=resolve_dataroot(pipe.clip_spec.dataroot)), split="val",
                       geometry=False)
    judge = load_judge(default_judge(args.run)).to(pipe.device)
    n, clips = len(ds), list(range(args.clips))
    samples = int(np.sum(old["clip_of"] == 0))
    videos, of = [], []
    for j in clips:
        clip = ds[j]
        for k in range(samples):  # sample k of clip j is seeded k·N + j (sampled_videos, seed 0)
            gen = pipe.generate(clip, steps=args.steps, guidance=args.guidance, seed=k * n + j).frames
            videos.append(torch.cat([clip.observation.frames, gen]))
            of.append(j)
    emb = read_videos(judge, torch.stack(videos), times=judge_set_of(ds, clips).time[np.array(of)])["embedding"]
    ref = np.concatenate([old["embedding"][old["clip_of"] == j] for j in clips])
    rel = np.linalg.norm(emb - ref, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"{len(emb)} futures of {args.clips} clips: max |diff| {np.abs(emb - ref).max():.3g} "
          f"(largest entry {np.abs(ref).max():.3g}), largest relative difference per future {rel.max():.3g}")


if __name__ == "__main__":
    main()
