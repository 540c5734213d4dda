"""Run every `benchmarks/bench_*.py` and write `benchmarks/results.json` and `benchmarks/results.md`.

    .venv/bin/python -m benchmarks.run_all [--only video training] [--skip app] [--timeout 1800] [--quick]

Each benchmark runs as its own subprocess (`python -m benchmarks.bench_<name>`, from the repo root, one
after another, so that they do not compete for the cores) under a per-benchmark timeout, and prints one
JSON object at the end of its stdout (on one line or indented). A benchmark that fails or times out is
recorded as such, with the tail of its stderr, and the others still run. Ratios come from within one
benchmark's run (interleaved timings), so they are comparable across machines; absolute times are not.
`--quick` runs each with small settings, to check that they all work, not to measure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Small settings for --quick (a check that every benchmark still runs end to end).
QUICK_ARGS = {
    "allocator": ["--steps", "1", "--rounds", "1"],
    "app": ["--untrained-default", "--runs", "1"],
    "loader": ["--repeats", "2"],
    "pdm": ["--batch", "64", "--single", "10", "--repeats", "1"],
    "training": ["--repeats", "2", "--clips", "32"],
    "umap": ["--points", "300", "--repeats", "1"],
    "video": ["--repeats", "2", "--steps", "2"],
    "world": ["--repeats", "1", "--judge-batches", "1"],
}

# The figures shown in the Markdown table (dotted paths into each benchmark's JSON); every key whose name
# says it is a ratio (`_over_`, `speedup`, `mfu`) is shown as well.
KEY_FIGURES = {
    "allocator": ["glibc.judge.step_s", "glibc.judge.faults", "tcmalloc.judge.step_s", "tcmalloc.judge.faults",
                  "glibc.video_dit.step_s", "tcmalloc.video_dit.step_s"],
    "app": ["ready_s", "pick_to_results_s", "parts_median_s.generate_s", "parts_median_s.plan_s", "app_peak_rss_MB",
            "checkpoints"],
    "loader": ["clips_per_s", "clips_per_s_with_geometry", "clips_per_s_a_step_consumes", "step_s", "train_clips"],
    "pdm": ["single_traj_per_s", "batched_traj_per_s", "hard_negative_scenes_per_s"],
    "synth": ["render_and_write_s", "ms_per_frame", "generate_world_one_scene_s"],
    "training": ["stage2.step_cached_s", "stage2.step_uncached_s", "stage2.step_hn_s", "stage2.step_no_hn_s",
                 "stage1_memory.peak_rss_MB", "stage1_memory.step_added_MB", "stage1_memory.params_M"],
    "umap": ["median_fit_s", "target_s", "ok"],
    "video": ["sample_guided_s", "sample_unguided_s", "train_step_heads_s", "train_step_vanilla_s",
              "achieved_gflops", "matmul_peak_gflops", "params_M"],
    "world": ["default.vae_encode_ms_per_frame", "default.vae_decode_ms_per_frame", "default.generate_s_per_future_s",
              "world4s.vae_encode_ms_per_frame", "world4s.vae_decode_ms_per_frame", "world4s.generate_s",
              "world4s.generate_s_per_future_s", "judge.clips_per_s", "judge.frames_per_s"],
}
RATIO_WORDS = ("_over_", "speedup", "mfu")


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def last_json(stdout: str) -> dict:
    """The JSON object that ends stdout: the last line, or an indented object starting at a line `{`."""
    lines = stdout.rstrip().splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].lstrip().startswith("{"):
            try:
                value = json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError("no JSON object at the end of stdout")


def run_one(name: str, extra: list[str], timeout: float) -> dict:
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", *extra]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    t0 = time.perf_counter()
    record = {"name": name, "command": " ".join(["python", "-m", f"benchmarks.bench_{name}", *extra])}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**record, "status": "timeout", "seconds": round(time.perf_counter() - t0, 1),
                "error": f"no result within {timeout:g} s"}
    record["seconds"] = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        return {**record, "status": "failed", "error": f"exit code {proc.returncode}: {proc.stderr[-1500:].strip()}"}
    try:
        return {**record, "status": "ok", "result": last_json(proc.stdout)}
    except ValueError as e:
        return {**record, "status": "failed", "error": f"{e}; stdout ends {proc.stdout[-300:]!r}"}


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value[:6]) + (", …" if len(value) > 6 else "") + "]"
    return str(value)


def markdown(doc: dict) -> str:
    head = doc["machine"]
    lines = [
        f"Benchmarks, {doc['started']} on {head['cpu_count']} CPU(s) ({head['platform']}, load average "
        f"{head['load_average_1min']:.2f} at the start), with `{doc['command']}`.",
        "",
        "| benchmark | status | time [s] | key figures | ratios |",
        "|---|---|---|---|---|",
    ]
    for r in doc["benchmarks"]:
        if r["status"] != "ok":
            error = r["error"].splitlines()[-1] if r["error"].strip() else r["error"]
            lines.append(f"| {r['name']} | {r['status']} | {r['seconds']} | {error[:120].replace('|', '/')} | |")
            continue
        flat = flatten(r["result"])
        keys = [k for k in KEY_FIGURES.get(r["name"], list(flat)[:6]) if k in flat]
        ratios = {k: v for k, v in flat.items() if any(w in k for w in RATIO_WORDS)}
        figures = "<br>".join(f"{k} = {fmt(flat[k])}" for k in keys)
        ratio_text = "<br>".join(f"{k} = {fmt(v)}" for k, v in ratios.items())
        lines.append(f"| {r['name']} | ok | {r['seconds']} | {figures} | {ratio_text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", help="benchmark names (e.g. video training); default: all")
    p.add_argument("--skip", nargs="+", default=[], help="benchmark names to leave out")
    p.add_argument("--timeout", type=float, default=1800, help="[s] per benchmark")
    p.add_argument("--quick", action="store_true", help="small settings: check that each runs, do not measure")
    p.add_argument("--out", help="writes OUT.json and OUT.md (default benchmarks/results, "
                                  "benchmarks/results-quick with --quick)")
    args = p.parse_args(argv)
    names = discover()
    unknown = sorted(set(args.only or []) - set(names)) + sorted(set(args.skip) - set(names))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; found {names}")
    names = [n for n in (args.only or names) if n not in args.skip]
    doc = {
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.run_all " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(terse=True),
                    "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]},
        "benchmarks": [],
    }
    for name in names:
        print(f"[run_all] {name} …", file=sys.stderr, flush=True)
        record = run_one(name, QUICK_ARGS.get(name, []) if args.quick else [], args.timeout)
        doc["benchmarks"].append(record)
        print(f"[run_all] {name}: {record['status']} in {record['seconds']} s", file=sys.stderr, flush=True)
    out = Path(args.out or HERE / ("results-quick" if args.quick else "results"))
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0 if all(r["status"] == "ok" for r in doc["benchmarks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
