"""How the judge's KID reads two real sets of one world, with and without the pairs of clips that share frames
(docs/world4s.md, K1): the validation's split (within scenes, blocks of `--block` clips) at each rotation of the
scenes' clips, and splits by scene (independent sets: no clip of one shares a frame with the other).

    python scripts/kid_floor.py --judge assets/checkpoints/judge --dataroot data/synth-judgeval [--blocks 4 8 16]

Two real sets of one world should read 0 within noise; an estimate that moves with how the sets were dealt, by more
than its spread across scene splits, counts something besides the distributions."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default="assets/checkpoints/judge")
    ap.add_argument("--config", default="configs/world4s.yaml")
    ap.add_argument("--dataroot", default="data/synth-judgeval")
    ap.add_argument("--split", default="all")
    ap.add_argument("--blocks", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--scene-splits", type=int, default=6)
    ap.add_argument("--out", default=None, help="JSON of every row")
    args = ap.parse_args(argv)

    from reworld.config import load_config, replace
    from reworld.evaluation.judge import (clip_windows, judge_kid, load_judge, load_judge_set, read_videos,
                                          shared_frames, split_within_scenes)
    from reworld.evaluation.video import frechet_distance

    data_cfg = replace(load_config(args.config), data={"dataroot": args.dataroot}).data
    data = load_judge_set(data_cfg, args.split)
    emb = read_videos(load_judge(args.judge), data.video(slice(None)), 16, data.time)["embedding"]
    everything = clip_windows(data)
    neighbours = float(shared_frames(everything, everything).sum(1).mean() - 1)
    print(f"{len(data)} clips of {len(set(data.scenes))} scenes; each shares frames with {neighbours:.1f} others")

    def row(kind, a, b, **extra):
        r = {"split": kind, **extra, "clips": [len(a), len(b)],
             "kid_judge": judge_kid(emb[a], emb[b], clip_windows(data, a), clip_windows(data, b)),
             "kid_judge_all_pairs": judge_kid(emb[a], emb[b]), "fd_judge": frechet_distance(emb[a], emb[b])}
        k1 = "—" if r["kid_judge"] is None else f"{r['kid_judge']:+.3f}"
        print(f"| {kind} {extra} | {k1} | {r['kid_judge_all_pairs']:+.3f} | {r['fd_judge']:.2f} |")
        return r

    print("| split | KID without shared frames (K1) | KID all pairs | FD |\n|---|---|---|---|")
    rows = []
    names = list(dict.fromkeys(data.scenes))
    for block in args.blocks:
        for phase in range(4):
            order = []  # each scene's clips rotated by `phase` before they are dealt
            for name in names:
                r = [i for i, s in enumerate(data.scenes) if s == name]
                order += r[phase:] + r[:phase]
            a, b = split_within_scenes([data.scenes[i] for i in order], block)
            rows.append(row("within scenes", np.array(order)[a], np.array(order)[b], block=block, phase=phase))
    rng = np.random.default_rng(0)
    for t in range(args.scene_splits):
        pick = set(rng.permutation(names)[:len(names) // 2])
        a = np.array([i for i, s in enumerate(data.scenes) if s in pick])
        b = np.array([i for i, s in enumerate(data.scenes) if s not in pick])
        rows.append(row("by scene", a, b, draw=t))
    if args.out:
        Path(args.out).write_text(json.dumps({"clips": len(data), "neighbours_sharing_frames": neighbours,
                                              "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
