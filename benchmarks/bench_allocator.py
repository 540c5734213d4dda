"""CPU training under glibc's malloc against tcmalloc / jemalloc (LD_PRELOAD), printed as JSON.

PyTorch on CPU has no caching allocator: every activation larger than glibc's mmap threshold (32 MB at most) is a
fresh `mmap`, and the kernel zeroes each of its pages on first touch. On the world4s shapes that is hundreds of
thousands of page faults per training step, paid as system time. tcmalloc and jemalloc keep freed memory mapped.

Each allocator runs in its own child process (LD_PRELOAD set before Python starts, as it must be), on the same
untrained models and the same random batches of the world4s shapes (configs/world4s.yaml): the video judge's training
step (JudgeTrainConfig's defaults), the VAE stage's step and the Video DiT stage's step. Children run in
A B C C B A order so that drift in the machine's load falls on all alike; per step: median wall time, CPU time
(user + system) and minor page faults. Ratios are against glibc, from this one run.

    .venv/bin/python -m benchmarks.bench_allocator [--steps 6] [--rounds 2]   # from the repo root
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBS = {  # Debian's packages: libtcmalloc-minimal4 (or google-perftools), libjemalloc2
    "tcmalloc": ["/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4"],
    "jemalloc": ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2"],
}


def child(steps: int) -> dict:
    import dataclasses
    import resource
    import time

    import torch

    from benchmarks.bench_video import stage1_inputs
    from reworld.config import load_config
    from reworld.losses.flow import video_training_losses
    from reworld.models.vae import build_vae
    from reworld.paths import JUDGE_CONFIG
    from reworld.evaluation.judge import WorldJudge
    from reworld.training.judge import JudgeTrainConfig

    cfg = load_config(ROOT / "configs" / "world4s.yaml")
    d = cfg.data
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    # the judge: JudgeTrainConfig's network, a batch of its clips, its loss stand-in (a sum of every reading)
    jt = JudgeTrainConfig()
    dj = load_config(JUDGE_CONFIG).data
    judge = WorldJudge(context_frames=dj.context_frames, future_frames=dj.future_frames, frame_rate=dj.frame_rate,
                       frame_size=(dj.image_height, dj.image_width), widths=jt.widths, frame_stages=jt.frame_stages,
                       correlation_radius=jt.correlation_radius, correlation_channels=jt.correlation_channels,
                       token_dim=jt.token_dim, num_layers=jt.num_layers, feature_dim=jt.feature_dim,
                       map_channels=jt.map_channels).train()
    clips = torch.rand(jt.batch_size, dj.context_frames + dj.future_frames, 3, dj.image_height, dj.image_width,
                       generator=g) * 2 - 1
    opt_j = torch.optim.AdamW(judge.parameters(), lr=1e-4)

    def judge_step():
        out = judge(clips)
        loss = sum(v.float().square().mean() for v in (out.ego_pose, out.speed, out.lead, out.lead_logit,
                                                        out.command_logits, out.step_motion))
        opt_j.zero_grad(set_to_none=True)
        loss.backward()
        opt_j.step()

    # the VAE stage: world4s's VAE, a batch of its training windows, reconstruction through the latent
    vae = build_vae(dataclasses.replace(cfg.vae, pretrained=None)).train()
    window = torch.rand(cfg.train.batch_size, 3, cfg.vae.train_window, d.image_height, d.image_width,
                        generator=g) * 2 - 1
    opt_v = torch.optim.AdamW(vae.parameters(), lr=1e-4)

    def vae_step():
        rec = vae.decode(vae.encode(window).latent_dist.sample()).sample
        loss = (rec - window).abs().mean()
        opt_v.zero_grad(set_to_none=True)
        loss.backward()
        opt_v.step()

    # the Video DiT stage: world4s's transformer on random latents of its shape, with the intermediate heads
    model, latents, cond, n_ctx, _, gv = stage1_inputs(cfg)
    model.train()
    opt_d = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_cfg = dataclasses.replace(cfg.loss, lambda_ig=max(cfg.loss.lambda_ig, 0.5))

    def dit_step():
        loss = video_training_losses(model, latents, n_ctx, cond, loss_cfg, gv)["total"]
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()

    result = {}
    for name, step in (("judge", judge_step), ("vae", vae_step), ("video_dit", dit_step)):
        step()  # warm-up: first-touch of the weights and the optimizer's state
        wall, cpu, faults = [], [], []
        for _ in range(steps):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            step()
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            wall.append(t1 - t0)
            cpu.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
            faults.append(r1.ru_minflt - r0.ru_minflt)
        result[name] = {"step_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
                        "faults": statistics.median(faults)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model in each child")
    parser.add_argument("--rounds", type=int, default=2, help="children per allocator (A B C C B A …)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.steps)))
        return
    allocators = {"glibc": None}
    for name, paths in LIBS.items():
        found = next((p for p in paths if Path(p).is_file()), None)
        if found:
            allocators[name] = found
    order = list(allocators)
    runs: dict[str, list[dict]] = {name: [] for name in order}
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            if allocators[name]:
                env["LD_PRELOAD"] = allocators[name]
            done = subprocess.run([sys.executable, "-m", "benchmarks.bench_allocator", "--child", "--steps",
                                   str(args.steps)], cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} child failed:\n{done.stderr[-2000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out = {"allocators": {k: v or "glibc malloc" for k, v in allocators.items()}, "threads": os.cpu_count()}
    for name in order:
        out[name] = {model: {key: round(statistics.median(run[model][key] for run in runs[name]), 4)
                             for key in ("step_s", "cpu_s", "faults")} for model in runs[name][0]}
    for name in order[1:]:
        out[f"{name}_over_glibc"] = {model: round(out[name][model]["step_s"] / glibc["step_s"], 3)
                                     for model, glibc in out["glibc"].items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
