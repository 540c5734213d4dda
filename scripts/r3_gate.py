"""R3's gate (docs/world4s.md, R3), read once when C2's five seeds are scored: from `study-convergence-noise`'s
document, per seed d_g = IG at w = 1.4 − vanilla and d_s = the stop-gradient arm − vanilla (the judge's mean position
error over the horizon at 2000 steps, paired by clip), and whether the mean over the seeds of d_g − d_s is above 0
(R3 trains) or not (R3 is recorded as not run). The t interval over the seeds is printed beside and decides nothing.

    python -m analysis study-convergence-noise --seeds 0 1 2 3 4 --json assets/ablation/convergence_noise.json
    python scripts/r3_gate.py assets/ablation/convergence_noise.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from analysis.study_convergence import R3_GATE_STEP, SEEDS, r3_gate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("noise", nargs="?", default="assets/ablation/convergence_noise.json",
                    help="study-convergence-noise's JSON (default: %(default)s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                    help="the seeds the gate is read on (registered: %(default)s)")
    ap.add_argument("--step", type=int, default=R3_GATE_STEP, help="checkpoint (registered: %(default)s)")
    args = ap.parse_args(argv)
    path = Path(args.noise)
    if not path.is_file():
        ap.error(f"{path}: no such file (write it with python -m analysis study-convergence-noise --json {path})")
    try:
        out = r3_gate(json.loads(path.read_text()), args.seeds, args.step)
    except (ValueError, json.JSONDecodeError) as e:
        ap.error(f"{path}: {e}")
    for s, v in out["seeds"].items():
        print(f"seed {s}: d_g {v['d_g']:+.3f} m, d_s {v['d_s']:+.3f} m, d_g − d_s {v['d_g_minus_d_s']:+.3f} m")
    lo, hi = out["t_interval"]
    if out["registered"]:
        reading = "R3 trains" if out["trains"] else "R3 is not run"
    else:
        reading = (f"{'above' if out['trains'] else 'not above'} 0: a preview, not the gate (the gate is read on seeds "
                   f"{' '.join(map(str, SEEDS))} at step {R3_GATE_STEP})")
    print(f"mean d_g − d_s over {len(out['seeds'])} seeds: {out['mean']:+.3f} m (t 95 % [{lo:+.3f}, {hi:+.3f}], "
          f"deciding nothing) → {reading}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
