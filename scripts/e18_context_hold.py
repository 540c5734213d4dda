"""E18's run: C2's vanilla arm with a held context on a share of the training samples (docs/world4s.md, E18).

    python scripts/e18_context_hold.py --seed 2 [--hold 0.25] [--study runs/study-c2] [--threads 1]

The run folder `<study>/e18-hold-s<seed>` gets C2's vanilla config for that seed (`arm_config(configs/study-c2.yaml,
"vanilla", seed)`: the same initial weights, batches, σ and ε as C2's vanilla run of the seed) with
`loss.context_hold` set, the study's VAE copy and shared latents, and is trained in C2's segments (`--resume
--max-steps` 250, 500, 1000, 2000), so a cut run resumes from its last segment. C2's study folder must exist (its
runner makes it); the ledger never reads this run. Its output goes to `<study>/logs/e18-hold-s<seed>.log`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEGMENTS = (250, 500, 1000, 2000)


def e18_config(base: Path, seed: int, hold: float) -> dict:
    """C2's vanilla config of `seed` with `loss.context_hold` = hold."""
    from analysis.study_convergence import arm_config

    doc = arm_config(base, "vanilla", seed)
    doc["loss"]["context_hold"] = float(hold)
    doc["name"] = f"{doc['name']}-e18-hold{hold:g}"
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--hold", type=float, default=0.25, help="loss.context_hold (E18: 0.25)")
    ap.add_argument("--study", type=Path, default=Path("runs/study-c2"))
    ap.add_argument("--base", type=Path, default=Path("configs/study-c2.yaml"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not 0 < args.hold <= 1:
        ap.error(f"--hold must be in (0, 1], got {args.hold}")
    if not (args.study / "vae" / "config.json").is_file() or not (args.study / "prepared").is_dir():
        print(f"e18_context_hold: {args.study} is not C2's study folder (no vae/ or prepared/); run C2's runner first",
              file=sys.stderr)
        return 2
    from analysis.study_convergence import train_command, trained_step
    from analysis.study_planner import make_run, run_logged

    name = f"e18-hold-s{args.seed}"
    run, cfg = make_run(args.study, name, e18_config(args.base, args.seed, args.hold))
    log = args.study / "logs" / f"{name}.log"
    for step in SEGMENTS:
        if trained_step(run) < step:
            print(f"[e18] {name}: stage video to step {step}", flush=True)
            run_logged(train_command(run, cfg, step), log, args.threads)
    print(f"[e18] {name}: trained to {trained_step(run)}; {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
