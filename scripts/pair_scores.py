"""Two judge-scores files of the same val clips, compared paired by clip (prints JSON; docs/world4s.md, E18).

    python scripts/pair_scores.py A.npz B.npz [--resamples 2000] [--json OUT]

For each file: fd_judge (its futures against their clips' real embeddings) and the judge's mean position error over
the future frames (each clip the mean over its futures, then over frames), each with a 95 % percentile bootstrap over
clips; and A − B of both, on one set of resamples of the clips (so paired by clip).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESAMPLES = 2000


def pair(a: dict, b: dict, resamples: int = RESAMPLES) -> dict:
    from analysis.study_finetune import clip_position, fd_of_clips

    n = len(a["real_embedding"])
    if len(b["real_embedding"]) != n or not np.allclose(a["real_embedding"], b["real_embedding"], atol=1e-4):
        raise ValueError("the two files are not of the same clips (their real embeddings differ)")
    idx = np.random.default_rng(0).integers(0, n, (resamples, n))

    def iv(v: np.ndarray) -> list[float]:
        return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]

    fd = {k: (fd_of_clips(s, np.arange(n)), np.array([fd_of_clips(s, c) for c in idx])) for k, s in (("a", a), ("b", b))}
    pos = {k: clip_position(s).mean(1) for k, s in (("a", a), ("b", b))}
    out = {k: {"fd_judge": fd[k][0], "fd_interval": iv(fd[k][1]), "position_m": float(pos[k].mean()),
               "position_interval": iv(pos[k][idx].mean(1))} for k in ("a", "b")}
    d = pos["a"] - pos["b"]
    out["a_minus_b"] = {"fd_judge": fd["a"][0] - fd["b"][0], "fd_interval": iv(fd["a"][1] - fd["b"][1]),
                        "position_m": float(d.mean()), "position_interval": iv(d[idx].mean(1))}
    out["clips"], out["resamples"] = n, resamples
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.resamples < 100:
        ap.error("--resamples must be ≥ 100")
    from analysis.study_finetune import read_npz

    try:
        out = {"file_a": str(args.a), "file_b": str(args.b), **pair(read_npz(args.a), read_npz(args.b), args.resamples)}
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"pair_scores: {e}", file=sys.stderr)
        return 2
    from analysis.output import emit_json

    return emit_json(out, args.json)


if __name__ == "__main__":
    sys.exit(main())
