"""Video DiT costs on this machine, printed as JSON (medians; compare ratios, absolute times vary with load).

- guided / unguided sampling time at equal steps (intermediate-supervised guidance reuses the forward pass;
  expected ≤ 1.05),
- stage-1 training step with the intermediate heads / without (λ_ig > 0 vs 0; expected ≤ 1.10),
- model FLOP utilisation of the stage-1 step against a measured fp32 matmul peak (FlopCounterMode with
  the CPU flash-attention kernels added, which it does not count by itself).

    .venv/bin/python -m benchmarks.bench_video [--config configs/default.yaml] [--repeats 7]   # from the repo root
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from benchmarks.timing import paired_times, ratio
from reworld.config import Config, load_config
from reworld.losses.flow import video_training_losses
from reworld.models.vae import build_vae, latent_split
from reworld.models.video_dit import VideoCond, config_motion_frames, video_dit_from_config
from reworld.sampling import sample_future

ROOT = Path(__file__).resolve().parents[1]


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops,
}


def matmul_peak_flops(n: int = 1024, repeats: int = 15) -> float:
    """Median fp32 matmul FLOP/s at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def stage1_inputs(cfg: Config):
    """An untrained Video DiT of the config's size and one random training batch of its latent shape:
    (model, latents (B, C, t, h, w), cond, n_ctx, n_fut, generator)."""
    torch.manual_seed(0)
    vae = build_vae(dataclasses.replace(cfg.vae, pretrained=None))
    n_ctx, n_fut = latent_split(cfg.data, vae)
    s = vae.spatial_compression_ratio
    shape = (cfg.train.batch_size, cfg.vae.latent_channels, n_ctx + n_fut,
             cfg.data.image_height // s, cfg.data.image_width // s)
    model = video_dit_from_config(dataclasses.replace(cfg.video, pretrained=None), shape[1],
                                  motion_frames=config_motion_frames(cfg))
    with torch.no_grad():  # heads as after training (zero-initialised heads would make guidance trivial)
        for p in model.heads.parameters():
            p.normal_(std=0.02)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(shape, generator=g)
    cond = VideoCond(command=torch.randint(0, 3, (shape[0],), generator=g), ego_status=torch.randn(shape[0], 3, generator=g))
    return model, latents, cond, n_ctx, n_fut, g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="sampling steps, equal for both samplers")
    args = parser.parse_args()
    cfg = load_config(args.config) if Path(args.config).is_file() else Config()
    model, latents, cond, n_ctx, n_fut, g = stage1_inputs(cfg)
    shape = latents.shape

    # --- sampling: guided vs unguided, interleaved so that load changes hit both alike -----------------
    model.eval()
    steps = args.steps
    context = latents[:, :, :n_ctx]

    def run_sampler(w: float):
        sample_future(model, context, cond, n_fut, steps, generator=torch.Generator().manual_seed(0), guidance=w)

    run_sampler(1.0), run_sampler(cfg.train.guidance)  # warm-up
    guided, unguided = paired_times(lambda: run_sampler(cfg.train.guidance), lambda: run_sampler(1.0), args.repeats)

    # --- stage-1 training step: with heads vs vanilla ---------------------------------------------------
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loss_ig = cfg.loss if cfg.loss.lambda_ig > 0 else dataclasses.replace(cfg.loss, lambda_ig=0.5)
    loss_vanilla = dataclasses.replace(cfg.loss, lambda_ig=0.0)

    def train_step(loss_cfg):
        losses = video_training_losses(model, latents, n_ctx, cond, loss_cfg, g)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()

    train_step(loss_ig), train_step(loss_vanilla)  # warm-up (AdamW state)
    with_heads, vanilla = paired_times(lambda: train_step(loss_ig), lambda: train_step(loss_vanilla), args.repeats)

    # --- FLOPs of one stage-1 step (forward + backward; the optimizer's elementwise work is not counted)
    counter = FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS)
    with counter:
        losses = video_training_losses(model, latents, n_ctx, cond, loss_ig, g)
        losses["total"].backward()
    opt.zero_grad(set_to_none=True)
    step_flops = counter.get_total_flops()
    attention_flops = sum(counter.get_flop_counts()["Global"].get(op, 0) for op in ATTENTION_FLOPS)
    peak = matmul_peak_flops()
    step_s = statistics.median(with_heads)

    result = {
        "config": cfg.name,
        "threads": torch.get_num_threads(),
        "latent_shape": list(shape),
        "tokens_per_sample": shape[2] * shape[3] * shape[4],
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "sample_steps": steps,
        "guidance": cfg.train.guidance,
        "sample_unguided_s": round(statistics.median(unguided), 4),
        "sample_guided_s": round(statistics.median(guided), 4),
        "guided_over_unguided": ratio(guided, unguided),  # expected ≤ 1.05
        "train_step_heads_s": round(step_s, 4),
        "train_step_vanilla_s": round(statistics.median(vanilla), 4),
        "heads_over_vanilla": ratio(with_heads, vanilla),  # expected ≤ 1.10
        "train_step_gflop": round(step_flops / 1e9, 3),
        "attention_gflop": round(attention_flops / 1e9, 3),
        "achieved_gflops": round(step_flops / step_s / 1e9, 2),
        "matmul_peak_gflops": round(peak / 1e9, 2),
        "mfu": round(step_flops / step_s / peak, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
