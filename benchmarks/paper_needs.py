"""What a run of a config needs, computed from its shapes (and, for activations, from a measured GPU run):
the disk of each kind of prepared per-clip file, the parameters, and the GPU memory of training state per
process under DDP and under FSDP (16 bytes a parameter, 20 with `train.ema_decay`'s fp32 averages).

    .venv/bin/python -m benchmarks.paper_needs --config configs/paper.yaml --gpus 8 [--train-clips N --val-clips N]
    .venv/bin/python -m benchmarks.paper_needs --config configs/paper.yaml --dataroot /data/nuscenes  # counts clips

Without `--dataroot` the clip counts are nuScenes trainval's as this project's clips cut it (about 20k train and
5k val keyframes with 4 s of logged future; pass the real counts once the data is there). The VAE's shape comes
from `vae.pretrained`'s `config.json` when that folder exists, else from LTX-Video's published VAE (128 latent
channels, 32× spatial, 8× temporal compression) when the config names a pretrained VAE, else from the config.
Activations per clip come from `benchmarks/gpu_check_h200.json` (`paper_full`: peak memory minus the
16 bytes per parameter of fp32 weights, gradients and AdamW moments, 28 blocks, gradient checkpointing, bf16).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reworld.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
LTX_VAE = {"latent_channels": 128, "spatial": 32, "temporal": 8}
STATE_BYTES = 16  # per parameter: fp32 weight, fp32 gradient, AdamW's two fp32 moments (mixed precision keeps these)
EMA_BYTES = 4  # per parameter with train.ema_decay > 0: the fp32 averages (sharded like the weights under FSDP)


def vae_shape(config: Config) -> dict:
    folder = Path(config.vae.pretrained) if config.vae.pretrained else None
    if folder is not None and (folder / "config.json").is_file():
        doc = json.loads((folder / "config.json").read_text())
        spatial = doc.get("patch_size", 1) * 2 ** sum(bool(x) for x in doc.get("spatio_temporal_scaling", []))
        temporal = doc.get("patch_size_t", 1) * 2 ** sum(bool(x) for x in doc.get("spatio_temporal_scaling", [])[:3])
        return {"latent_channels": doc["latent_channels"], "spatial": spatial, "temporal": temporal,
                "source": str(folder)}
    if folder is not None:
        return {**LTX_VAE, "source": "LTX-Video's VAE (published shape)"}
    from reworld.models.vae import build_vae

    vae = build_vae(config.vae)
    return {"latent_channels": vae.config.latent_channels, "spatial": vae.spatial_compression_ratio,
            "temporal": vae.temporal_compression_ratio, "source": "the config's VAE"}


def count_params(config: Config, latent_channels: int) -> dict:
    from reworld.models.action_dit import build_action_dit
    from reworld.models.video_dit import config_motion_frames, video_dit_from_config

    import dataclasses

    with torch.device("meta"):  # shapes only: no weights read, nothing allocated
        video = video_dit_from_config(dataclasses.replace(config.video, pretrained=None), latent_channels,
                                      motion_frames=config_motion_frames(config))
        blocks = list(config.video.feature_blocks) or list(range(config.video.num_layers))
        action = build_action_dit(config.action, video_dim=config.video.num_attention_heads
                                  * config.video.attention_head_dim, num_video_blocks=len(blocks))
    return {"video_dit": sum(p.numel() for p in video.parameters()),
            "action_dit": sum(p.numel() for p in action.parameters()), "feature_blocks": len(blocks)}


def needs(config: Config, gpus: int, train_clips: int, val_clips: int, measured: dict | None) -> dict:
    d, v, a = config.data, config.video, config.action
    vs = vae_shape(config)
    frames = d.context_frames + d.future_frames
    t = 1 + (frames - 1) // vs["temporal"]
    h, w = d.image_height // vs["spatial"], d.image_width // vs["spatial"]
    params = count_params(config, vs["latent_channels"])
    width = v.num_attention_heads * v.attention_head_dim
    tokens = t * (h // a.feature_pool) * (w // a.feature_pool)
    per_clip = {
        "latents (fp32)": vs["latent_channels"] * t * h * w * 4,
        "hidden states (bf16)": params["feature_blocks"] * tokens * width * 2,
        "hard negatives": config.loss.hn_num_negatives * (8 * 3 * 4 + 1),
    }
    disk = {k: {"per_clip_MB": round(b / 1e6, 3), "train_GB": round(b * train_clips / 1e9, 2),
                "val_GB": round(b * val_clips / 1e9, 2)} for k, b in per_clip.items()}
    if not a.feature_cache:
        disk["hidden states (bf16)"]["note"] = "action.feature_cache is false: recomputed each step, nothing written"
    out = {"config": config.name, "clips": {"train": train_clips, "val": val_clips}, "vae": vs,
           "latent_shape": [vs["latent_channels"], t, h, w], "video_tokens": t * h * w, "params": params, "disk": disk}
    state = {}
    per_param = STATE_BYTES + (EMA_BYTES if config.train.ema_decay > 0 else 0)
    out["state_bytes_per_param"] = per_param
    for name in ("video_dit", "action_dit"):
        full = params[name] * per_param
        state[name] = {"ddp_GB_per_gpu": round(full / 1e9, 1), f"fsdp_{gpus}_GB_per_gpu": round(full / gpus / 1e9, 1)}
    out["training_state"] = state
    if measured and "peak_memory_mb" in measured:
        act = measured["peak_memory_mb"] * 2**20 - measured["params_M"] * 1e6 * STATE_BYTES
        per_gpu_batch = max(1, config.train.batch_size // gpus)
        out["stage_video_activations"] = {
            "measured_on": "one H200, batch 1, 28 blocks, gradient checkpointing, bf16 (benchmarks/gpu_check_h200.json)",
            "per_clip_GB": round(act / 1e9, 1), "per_gpu_batch": per_gpu_batch,
            "per_gpu_GB": round(act * per_gpu_batch / 1e9, 1),
            "stage_video_fsdp_total_GB_per_gpu": round((act * per_gpu_batch + params["video_dit"] * per_param / gpus)
                                                       / 1e9, 1)}
    return out


def markdown(doc: dict) -> str:
    rows = [f"# Needs of `{doc['config']}`: {doc['clips']['train']} train / {doc['clips']['val']} val clips", "",
            f"Latents {doc['latent_shape']} per clip ({doc['vae']['source']}); {doc['video_tokens']} video tokens; "
            f"Video DiT {doc['params']['video_dit'] / 1e9:.2f} B parameters, Action DiT "
            f"{doc['params']['action_dit'] / 1e6:.0f} M reading {doc['params']['feature_blocks']} blocks.", "",
            "| prepared files | per clip | train | val |", "|---|---|---|---|"]
    for k, v in doc["disk"].items():
        rows.append(f"| {k} | {v['per_clip_MB']} MB | {v['train_GB']} GB | {v['val_GB']} GB |"
                    + (f" {v['note']}" if "note" in v else ""))
    what = "fp32 weights, grads, AdamW" + (", EMA" if doc["state_bytes_per_param"] > STATE_BYTES else "")
    rows += ["", f"| training state ({what}) | " + " | ".join(next(iter(doc["training_state"]
                                                                                        .values())).keys()) + " |",
             "|---|---|---|"]
    for k, v in doc["training_state"].items():
        rows.append(f"| {k} | " + " | ".join(str(x) for x in v.values()) + " |")
    if "stage_video_activations" in doc:
        a = doc["stage_video_activations"]
        rows += ["", f"Stage video activations: {a['per_clip_GB']} GB per clip ({a['measured_on']}); "
                     f"{a['per_gpu_batch']} clip(s) per GPU → {a['per_gpu_GB']} GB; with FSDP's share of the state "
                     f"{a['stage_video_fsdp_total_GB_per_gpu']} GB per GPU."]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "paper.yaml"))
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--train-clips", type=int, default=20_000)
    p.add_argument("--val-clips", type=int, default=5_000)
    p.add_argument("--dataroot", default=None, help="count the clips of this nuScenes root (tables only)")
    p.add_argument("--measured", default=str(ROOT / "benchmarks" / "gpu_check_h200.json"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    config = load_config(args.config)
    train, val = args.train_clips, args.val_clips
    if args.dataroot:
        from reworld.config import replace
        from reworld.data.clips import load_clip_tensors

        config = replace(config, data={"dataroot": args.dataroot})
        train = len(load_clip_tensors(config.data, "train", frames=False).tokens)
        val = len(load_clip_tensors(config.data, "val", frames=False).tokens)
    measured = None
    if Path(args.measured).is_file() and config.name == "paper":
        measured = json.loads(Path(args.measured).read_text()).get("paper_full")
    doc = needs(config, args.gpus, train, val, measured)
    print(json.dumps(doc, indent=2) if args.json else markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
