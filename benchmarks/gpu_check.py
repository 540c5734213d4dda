"""One command for a CUDA machine (about 11 minutes on an H200): what only a GPU can tell, written as JSON + Markdown.

    .venv/bin/python -m benchmarks.gpu_check [--out outputs/gpu_check]          # on the GPU machine
    .venv/bin/python -m benchmarks.gpu_check --dry-run --out /tmp/gpu_check      # on the CPU, tiny configs

1. `env`: device, torch and CUDA versions, memory, bf16 support.
2. `seed_parity`: the same seed samples the same future on the CPU and on the device (noise is drawn on the
   CPU generator); the largest latent difference is reported, TF32 off and on.
3. `stage1_step`: one stage-1 training step (Video DiT, flow matching + heads, AdamW) at the default config in
   fp32, under bf16 autocast, and bf16 with `train.compile` (regional compilation; first step timed apart): median
   time, peak memory, FLOPs of forward + backward, achieved FLOP/s and MFU against the matmul peak measured in
   the same run and dtype.
4. `paper_cut`: the same step at paper width (configs/paper.yaml: 2048 wide, 128 latent channels, its clip
   shape) with 4 of the 28 blocks, bf16 autocast: whether it fits, time, memory, MFU. `paper_full`: all 28
   blocks with gradient checkpointing, batch 1.
5. `stages`: `reworld train` of every stage (vae, video, action, joint) for a few steps on a small world at the
   default model size, fp32 and bf16 (one process each: accelerate fixes the precision once per process), each
   stage from the run folder the earlier ones wrote: exit status, seconds per step, peak memory.
6. `generate_plan`: the shipped `reworld` checkpoint on the device, fp32 and bf16: generate + plan seconds, and
   how far bf16 lands from fp32 (PSNR of the frames, metres of the plans).
7. `cuda_tests`: the test files whose code runs on the default device (`CUDA_TESTS`), on CUDA.

`--dry-run` runs every section on the CPU with the tiny config and two steps, so the script itself is tested
(tests/test_gpu_check.py); its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from reworld.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _median_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _median_time(lambda: a @ b, device, repeats)


# ---------------------------------------------------------------------------------------------- sections
def env(device: torch.device) -> dict:
    out = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    return out


def seed_parity(cfg: Config, device: torch.device) -> dict:
    from benchmarks.bench_video import stage1_inputs
    from reworld.sampling import sample_future

    model, latents, cond, n_ctx, n_fut, _ = stage1_inputs(cfg)
    model.eval()

    def sample(dev):
        c = type(cond)(cond.command.to(dev), cond.ego_status.to(dev))
        return sample_future(model.to(dev), latents[:, :, :n_ctx].to(dev), c, n_fut, 4,
                             generator=torch.Generator().manual_seed(0)).latents.cpu()

    cpu = sample(torch.device("cpu"))
    out = {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        out[f"max_abs_diff_tf32_{'on' if tf32 else 'off'}"] = float((sample(device) - cpu).abs().max())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    out["latent_std"] = float(cpu.std())
    return out


def train_step_costs(cfg: Config, inputs, device: torch.device, dtype: torch.dtype | None, repeats: int,
                     peak_n: int, compile: bool = False, flops: float | None = None) -> dict:
    """One stage-1 step (flow matching + heads, AdamW) of `inputs` = (model, latents, cond, n_ctx) on `device`;
    with `compile`, the Video DiT's blocks compiled as `train.compile` does (the first step, compilation included,
    is timed apart; FLOPs are those of the same step uncompiled, `flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.bench_video import ATTENTION_FLOPS
    from reworld.losses.flow import video_training_losses

    model, latents, cond, n_ctx = inputs
    model, latents = model.to(device).train(), latents.to(device)
    cond = type(cond)(cond.command.to(device), cond.ego_status.to(device))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    g = torch.Generator().manual_seed(0)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            losses = video_training_losses(model, latents, n_ctx, cond, cfg.loss, g)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()

    extra = {}
    if compile:
        model.transformer.compile_repeated_blocks()
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        extra["first_step_with_compile_s"] = round(time.perf_counter() - t0, 2)
    _peak_reset(device)
    seconds = _median_time(step, device, repeats)
    peak_mb = _peak_mb(device)
    if flops is None:
        counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS)
        with counter, torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            video_training_losses(model, latents, n_ctx, cond, cfg.loss, g)["total"].backward()
        opt.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()
    peak = matmul_peak(device, dtype or torch.float32, peak_n, repeats)
    return {"dtype": str(dtype or torch.float32), "compiled": compile, **extra, "latent_shape": list(latents.shape),
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "step_s": round(seconds, 4),
            "peak_memory_mb": peak_mb, "step_gflop": round(flops / 1e9, 2),
            "achieved_tflops": round(flops / seconds / 1e12, 3), "matmul_peak_tflops": round(peak / 1e12, 3),
            "mfu": round(flops / seconds / peak, 3)}


def stage1_step(cfg: Config, device: torch.device, repeats: int, peak_n: int, compile: bool = True) -> dict:
    from benchmarks.bench_video import stage1_inputs

    def inputs():
        model, latents, cond, n_ctx, _, _ = stage1_inputs(cfg)
        return model, latents, cond, n_ctx

    out = {"fp32": train_step_costs(cfg, inputs(), device, None, repeats, peak_n)}
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        out["bf16"] = train_step_costs(cfg, inputs(), device, torch.bfloat16, repeats, peak_n)
        out["bf16_speedup"] = round(out["fp32"]["step_s"] / out["bf16"]["step_s"], 2)
        if compile:
            try:
                out["bf16_compiled"] = train_step_costs(cfg, inputs(), device, torch.bfloat16, repeats, peak_n,
                                                        compile=True, flops=out["bf16"]["step_gflop"] * 1e9)
                out["compile_speedup"] = round(out["bf16"]["step_s"] / out["bf16_compiled"]["step_s"], 2)
            except Exception as e:  # a compiler failure is a finding about train.compile, not a crash
                out["bf16_compiled"] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
    return out


LTX_VAE = {"channels": 128, "spatial": 32, "temporal": 8}  # LTX-Video's VAE, which configs/paper.yaml loads


def paper_cut(device: torch.device, repeats: int, peak_n: int, dry_run: bool, layers: int = 4,
              checkpointing: bool = False) -> dict:
    """configs/paper.yaml's Video DiT (2048 wide) with `layers` of its 28 blocks, on its clips through LTX's VAE
    shapes (25 frames at 256×512 → 4 × 8 × 16 latents of 128 channels), batch 1, bf16 autocast, fp32 master
    weights and AdamW state (as `train.mixed_precision: bf16` trains), blocks recomputed in backward with
    `checkpointing`. The model is built on the device (a 2B-parameter init on the CPU takes minutes)."""
    from reworld.models.video_dit import VideoCond, ltx_rope_scale, video_dit_from_config

    cfg = load_config(ROOT / "configs" / "paper.yaml")
    video = dataclasses.replace(cfg.video, num_layers=layers, head_blocks=(1,), pretrained=None)
    channels, s, r = LTX_VAE["channels"], LTX_VAE["spatial"], LTX_VAE["temporal"]
    if dry_run:  # paper widths do not fit a CPU test: the same clip shape at a tiny width
        video = dataclasses.replace(video, num_attention_heads=2, attention_head_dim=16, num_cond_tokens=2)
        channels = 8
    d = cfg.data
    shape = (1, channels, 1 + (d.context_frames + d.future_frames - 1) // r, d.image_height // s, d.image_width // s)
    torch.manual_seed(0)
    try:
        with device:
            model = video_dit_from_config(video, channels, rope_scale=ltx_rope_scale(d.frame_rate, r, s))
    except torch.cuda.OutOfMemoryError as e:
        return {"num_layers": layers, "error": f"out of memory building the model: {str(e).splitlines()[0]}"}
    if checkpointing:
        model.enable_gradient_checkpointing()
    g = torch.Generator().manual_seed(0)
    inputs = (model, torch.randn(shape, generator=g), VideoCond(torch.tensor([1]), torch.randn(1, 3, generator=g)),
              1 + (d.context_frames - 1) // r)
    try:
        return {"num_layers": layers, "gradient_checkpointing": checkpointing,
                **train_step_costs(cfg, inputs, device, torch.bfloat16, repeats, peak_n)}
    except torch.cuda.OutOfMemoryError as e:  # a finding, not a crash
        return {"num_layers": layers, "error": f"out of memory: {str(e).splitlines()[0]}"}
    finally:
        del model, inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()


def stages(device: torch.device, out: Path, dry_run: bool, steps: int,
           names: tuple[str, ...] = ("vae", "video", "action", "joint")) -> dict:
    """`reworld train` of the stages in order, one fresh process per precision (accelerate fixes the precision once
    per process)."""
    import yaml

    from reworld.data.synth import generate_world

    world = out / "world"
    size = (64, 128) if dry_run else (128, 256)
    if not (world / "v1.0-synth" / "scene.json").is_file():
        generate_world(world, num_scenes=3 if dry_run else 6, seed=0, image_size=size,
                       scene_seconds=10.0 if dry_run else 20.0)
    base = yaml.safe_load((ROOT / "configs" / ("tiny.yaml" if dry_run else "default.yaml")).read_text())
    base["data"]["dataroot"] = str(world)
    results = {}
    for precision in ("no", "bf16"):
        doc = json.loads(json.dumps(base))
        doc.setdefault("train", {}).update(mixed_precision=precision, val_every=10_000, ckpt_every=10_000,
                                           val_clips=2)
        config = out / f"stages-{precision}.yaml"
        config.write_text(yaml.safe_dump(doc))
        run = out / f"run-{precision}"
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--child-stages", ",".join(names), str(config), str(run),
               str(steps)]
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device.type == "cpu" else {})}
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        rows = {}
        for line in done.stdout.splitlines():  # one row per stage, as each ends
            if line.startswith(STAGE_ROW):
                row = json.loads(line[len(STAGE_ROW):])
                rows[row.pop("stage")] = row
        for k, stage in enumerate(names[len(rows):]):  # the stage that failed, and those it left undone
            rows[stage] = ({"exit": done.returncode or 1, "stderr_tail": done.stderr[-1500:]} if k == 0
                           else {"exit": None, "skipped": "an earlier stage failed"})
        if done.returncode and len(rows) == len(names) and all(r["exit"] == 0 for r in rows.values()):
            rows[names[-1]].update(exit=done.returncode, stderr_tail=done.stderr[-1500:])  # failed after its row
        results["fp32" if precision == "no" else "bf16"] = rows
    return results


STAGE_ROW = "gpu_check stage: "


def child_stages(names: list[str], config: str, run: str, steps: int) -> None:
    """The stages in order in this process, one `STAGE_ROW` line each as it ends (peak memory since its start)."""
    from reworld.training import run_stage

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for stage in names:
        _peak_reset(device)
        t0 = time.perf_counter()
        result = run_stage(stage, config, run, max_steps=steps)
        row = {"stage": stage, "exit": 0, "wall_s": round(time.perf_counter() - t0, 1), "finite": result["finite"],
               "s_per_step": round(result["seconds"] / steps, 4), "peak_memory_mb": _peak_mb(device)}
        print(STAGE_ROW + json.dumps(row), flush=True)


def generate_plan(device: torch.device, out: Path, dry_run: bool) -> dict:
    from reworld import WorldActionPipeline
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.video import psnr
    from reworld.paths import CHECKPOINTS

    path = CHECKPOINTS / "reworld"
    pipes = {"fp32": WorldActionPipeline.from_pretrained(path, device=device)}
    pipes["bf16"] = WorldActionPipeline.from_pretrained(path, device=device, torch_dtype=torch.bfloat16)
    world = out / "world-default"
    if not (world / "v1.0-synth" / "scene.json").is_file():
        from reworld.data.synth import generate_world

        generate_world(world, num_scenes=1, seed=0, scene_seconds=10.0 if dry_run else 20.0)
    clip = NuScenesClips(pipes["fp32"].clip_spec, split="all", dataroot=str(world))[0]
    res, rows = {}, {}
    for name, pipe in pipes.items():
        steps = 2 if dry_run else pipe.default_steps
        gen = lambda: pipe.generate(clip, steps=steps, guidance=pipe.default_guidance, seed=0)  # noqa: E731
        plan = lambda: pipe.plan(clip, steps=pipe.plan_steps, num_samples=16, seed=0)  # noqa: E731
        rows[name] = {"generate_s": round(_median_time(gen, device, 1 if dry_run else 5), 4),
                      "plan16_s": round(_median_time(plan, device, 1 if dry_run else 5), 4)}
        res[name] = (gen().frames, plan().trajectories)
    rows["bf16_vs_fp32_psnr_db"] = round(float(psnr(res["bf16"][0][None], res["fp32"][0][None])), 2)
    rows["bf16_vs_fp32_plan_max_m"] = round(float(abs(res["bf16"][1] - res["fp32"][1])[..., :2].max()), 4)
    return rows


CUDA_TESTS = ("tests/test_video_dit.py", "tests/test_action_dit.py", "tests/test_sampling.py", "tests/test_training.py",
              "tests/test_ltx_folders.py", "tests/test_prepare.py", "tests/test_eval.py", "tests/test_memory.py")


def cuda_tests(timeout_s: int = 540) -> dict:
    """The test files whose code takes the default device (CUDA here): training stages through accelerate,
    pipelines, prepare, eval. The pytest summary line and, on failure, the failures' tail."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", *CUDA_TESTS]  # -q is in pyproject
    try:
        import xdist  # noqa: F401  (pytest-xdist: the files in parallel where it is installed)

        # 95 tests: 303 s on 14 workers of an H200 machine's 16 cores
        cmd += ["-n", str(max(1, min(14, (os.cpu_count() or 2) - 2)))]
    except ImportError:
        pass
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-1500:] if isinstance(e.stdout, bytes) else (e.stdout or "")[-1500:]
        return {"error": f"timed out after {timeout_s} s", "tail": str(tail)}
    lines = [x for x in done.stdout.splitlines() if " in " in x and ("passed" in x or "failed" in x)]
    out = {"files": list(CUDA_TESTS), "exit": done.returncode, "wall_s": round(time.perf_counter() - t0, 1),
           "summary": lines[-1] if lines else ""}
    if done.returncode != 0:
        out["tail"] = (done.stdout + done.stderr)[-3000:]
    return out


# ---------------------------------------------------------------------------------------------- report
def markdown(doc: dict) -> str:
    lines = [f"# GPU check ({'dry run, CPU: numbers mean nothing' if doc['dry_run'] else doc['env'].get('name', '')})",
             ""]
    for section, value in doc.items():
        if section in ("dry_run",):
            continue
        lines += [f"## {section}", "", "```json", json.dumps(value, indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny configs, two steps (tests the script)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"),
                        help="the config of `seed_parity` and `stage1_step` (e.g. configs/world4s.yaml, the shipped "
                             "models' world); the dry run uses configs/tiny.yaml")
    parser.add_argument("--steps", type=int, default=None, help="training steps per stage (default 5; dry run 2)")
    parser.add_argument("--stages", default="vae,video,action,joint",
                        help="stages of section `stages` (in order; later ones need the earlier ones' run folder)")
    parser.add_argument("--only", default=None, help="comma-separated sections to run (default: all)")
    parser.add_argument("--child-stages", nargs=4, metavar=("STAGES", "CONFIG", "RUN", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_stages:
        stages_, config, run, steps = args.child_stages
        child_stages(stages_.split(","), config, run, int(steps))
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run with --dry-run to test the script on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    default = load_config(ROOT / "configs" / "tiny.yaml" if args.dry_run else Path(args.config))
    repeats, peak_n = (2, 256) if args.dry_run else (10, 8192)
    steps = args.steps or (2 if args.dry_run else 5)
    config_name = "configs/tiny.yaml" if args.dry_run else os.path.relpath(args.config, ROOT)
    doc: dict = {"dry_run": args.dry_run, "config": config_name, "env": env(device)}
    sections = [("seed_parity", lambda: seed_parity(default, device)),
                ("stage1_step", lambda: stage1_step(default, device, repeats, peak_n, compile=not args.dry_run)),
                ("paper_cut", lambda: paper_cut(device, repeats, peak_n, args.dry_run)),
                ("paper_full", lambda: paper_cut(device, repeats, peak_n, args.dry_run,
                                                 layers=2 if args.dry_run else 28, checkpointing=True)),
                ("stages", lambda: stages(device, out, args.dry_run, steps, tuple(args.stages.split(",")))),
                ("generate_plan", lambda: generate_plan(device, out, args.dry_run))]
    if not args.dry_run:  # the dry run is itself one of the tests
        sections.append(("cuda_tests", cuda_tests))
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {n for n, _ in sections})
        if unknown:
            print(f"error: unknown section(s) {unknown}; known: {[n for n, _ in sections]}", file=sys.stderr)
            return 2
        sections = [(n, fn) for n, fn in sections if n in wanted]
    for name, fn in sections:
        t0 = time.perf_counter()
        try:
            doc[name] = fn()
        except Exception as e:  # one broken section must not hide the others' numbers
            doc[name] = {"error": f"{type(e).__name__}: {e}"}
        doc[name + "_wall_s"] = round(time.perf_counter() - t0, 1)
        (out / "gpu_check.json").write_text(json.dumps(doc, indent=2))  # what is done so far survives a kill
        print(f"[gpu_check] {name}: {doc[name + '_wall_s']} s", file=sys.stderr, flush=True)
    (out / "gpu_check.md").write_text(markdown(doc))
    print(json.dumps(doc, indent=2))
    return 0 if not any(isinstance(v, dict) and "error" in v for v in doc.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
