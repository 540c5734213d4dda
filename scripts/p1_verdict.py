"""P1's verdict from `eval --json` reports (docs/world4s.md, P1): which of the 2 × 6 comparisons hold.

    python scripts/p1_verdict.py docs/p1-reworld-r2.json [docs/p1-vanilla-r2.json ...]

For each report (an `eval --video-clips 0 --judge-samples 4` run with the video judge): a model beats a baseline
(repeat-last, copy-context) at a second when the paired interval of generated − baseline position error (95 %
bootstrap over clips, `judge.paired_position_m`) lies wholly below 0; on the distances when its `fd_judge` and
`kid_judge` are each below the baseline's (point values). The must-show is met when all 12 hold. Printed as a
markdown table per report, with the position errors per second of the generated futures and of each baseline, and
the controllability rate; the verdicts as JSON on the last line.

`kid_judge` is what the report holds under that name: from 2026-12-06 (docs/world4s.md, K1) the KID without the pairs
of videos that share frames, with the all-pairs estimate beside it as `kid_judge_all_pairs` (earlier reports hold
only the all-pairs one, as `kid_judge`). Where a report has both, the table shows both and the line under it says
whether the all-pairs KID would have given another verdict.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BASELINES = ("repeat_last", "copy_context")


def below(x, y) -> bool:
    """x < y; False where either is None (a KID with no pair of videos that share no frame)."""
    return x is not None and y is not None and bool(x < y)


def k(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def verdict(report: dict) -> dict:
    """The 12 comparisons of one eval report: {baseline: {"1s": bool, …, "fd": bool, "kid": bool}}, `met`."""
    judge = report.get("judge")
    if not judge or "paired_position_m" not in judge:
        raise ValueError("the report has no judge section with paired_position_m (run eval with --judge-samples ≥ 1)")
    out: dict = {}
    for name in BASELINES:
        paired, base = judge["paired_position_m"][name], judge["baselines"][name]
        row = {f"{s:g}s": bool(hi < 0) for s, (_, hi) in zip(paired["seconds"], paired["boot"])}
        row["fd"] = bool(judge["fd_judge"] < base["fd_judge"])
        row["kid"] = below(judge["kid_judge"], base["kid_judge"])
        out[name] = row
    out["met"] = all(all(row.values()) for row in out.values())
    out["held"] = sum(sum(row.values()) for k, row in out.items() if k in BASELINES)
    return out


def position_per_second(errors: dict, frame_rate: float, seconds) -> list[float]:
    per_frame = errors["position_m"]
    return [per_frame[int(round(s * frame_rate)) - 1] for s in seconds]


def table(report: dict) -> str:
    judge = report["judge"]
    seconds = judge["paired_position_m"]["repeat_last"]["seconds"]
    rate = len(judge["errors"]["position_m"]) / judge["video_horizon_s"]
    v = verdict(report)
    lines = ["| futures | position @" + " / ".join(f"{s:g}" for s in seconds) + " s [m] | fd_judge | kid_judge |",
             "|---|---|---|---|",
             f"| generated | {' / '.join(f'{x:.2f}' for x in position_per_second(judge['errors'], rate, seconds))} "
             f"| {judge['fd_judge']:.2f} | {k(judge['kid_judge'])} |"]
    for name, base in judge["baselines"].items():
        if "errors" in base and "fd_judge" in base:
            lines.append(f"| {name} | {' / '.join(f'{x:.2f}' for x in position_per_second(base['errors'], rate, seconds))}"
                         f" | {base['fd_judge']:.2f} | {k(base.get('kid_judge'))} |")
    lines.append("")
    for name in BASELINES:
        p = judge["paired_position_m"][name]
        cells = [f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]{' ✓' if hi < 0 else ''}" for m, (lo, hi) in zip(p["mean"], p["boot"])]
        lines.append(f"- − {name}: " + ", ".join(cells) + f"; fd {'✓' if v[name]['fd'] else '✗'}, "
                     f"kid {'✓' if v[name]['kid'] else '✗'}")
    c = judge.get("controllability") or {}
    if c.get("clips"):
        lines.append(f"- controllability: {c['rate']:.0%} of {c['clips']} turning clips "
                     f"(mean gap {c['lateral_gap_m']:+.2f} m)")
    lines.append(f"- {v['held']} of 12 comparisons hold; must-show {'met' if v['met'] else 'not met'}")
    if "kid_judge_all_pairs" in judge:
        old = {name: below(judge["kid_judge_all_pairs"], judge["baselines"][name]["kid_judge_all_pairs"])
               for name in BASELINES}
        lines.append("- kid_judge without the pairs that share frames (K1): " + ", ".join(
            f"{k(judge['kid_judge'])} against {name} {k(judge['baselines'][name]['kid_judge'])}"
            for name in BASELINES)
            + "; all pairs: " + ", ".join(
            f"{k(judge['kid_judge_all_pairs'])} against {k(judge['baselines'][name]['kid_judge_all_pairs'])} "
            f"{'✓' if old[name] else '✗'}" for name in BASELINES)
            + (" (the same kid verdicts)" if all(old[n] == v[n]["kid"] for n in BASELINES) else
               " (the all-pairs KID gives other kid verdicts)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+")
    args = ap.parse_args(argv)
    verdicts = {}
    for path in args.reports:
        report = json.loads(Path(path).read_text())
        print(f"## {path} ({report['judge']['clips']} clips × {report['judge']['samples_per_clip']} samples)\n")
        print(table(report) + "\n")
        verdicts[path] = verdict(report)
    print(json.dumps(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
