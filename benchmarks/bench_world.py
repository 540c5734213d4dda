"""The world model's costs on this machine, printed as JSON (medians; compare ratios, absolute times vary with load).

For each config (today's shipped world and the seconds-of-future world, issue 16), with untrained models of the
config's sizes (the cost depends on the sizes, not on the weights):
- VAE encode and decode time per frame (one clip, as the app runs it),
- the cost of one second of generated future: sampling the future latents (the config's steps and guidance) and
  decoding the whole clip, divided by the seconds of future the clip holds,
and the video judge's throughput (clips and frames per second, batches of 16). The two configs are timed
interleaved (A B B A), so the ratio of their costs per second of future is load-robust.

    .venv/bin/python -m benchmarks.bench_world [--configs configs/default.yaml configs/world4s.yaml] [--repeats 5]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from benchmarks.timing import paired_times, ratio, timed
from reworld.config import load_config
from reworld.evaluation.judge import WorldJudge
from reworld.models.vae import build_vae, decode_latents, encode_frames, latent_split
from reworld.models.video_dit import VideoCond, config_motion_frames, video_dit_from_config
from reworld.sampling import sample_future
from reworld.training.judge import JudgeTrainConfig


def synth_camera(data) -> dict:
    """The synthetic world's camera as its calibrated_sensor gives it (what `JudgeSet.camera` reads from a world)."""
    from reworld.data.synth.params import SynthParams
    from reworld.data.synth.render import make_camera
    from reworld.data.synth.writer import CAM_ROTATION

    p, size = SynthParams(), (data.synth_image_height, data.synth_image_width)
    cam = make_camera(p, size)
    return {"translation": [p.cam_forward, 0.0, p.cam_height], "rotation": list(CAM_ROTATION),
            "camera_intrinsic": cam.intrinsic(), "size": [size[1], size[0]]}

ROOT = Path(__file__).resolve().parents[1]


class World:
    """One config's VAE and Video DiT (untrained, its sizes) and one clip of its shape."""

    def __init__(self, path: str):
        torch.manual_seed(0)
        self.cfg = cfg = load_config(path)
        self.vae = build_vae(dataclasses.replace(cfg.vae, pretrained=None)).eval()
        self.n_ctx, self.n_fut = latent_split(cfg.data, self.vae)
        self.model = video_dit_from_config(dataclasses.replace(cfg.video, pretrained=None),
                                           cfg.vae.latent_channels, motion_frames=config_motion_frames(cfg)).eval()
        self.frames = cfg.data.context_frames + cfg.data.future_frames
        self.clip = torch.rand(1, self.frames, 3, cfg.data.image_height, cfg.data.image_width) * 2 - 1
        self.cond = VideoCond(command=torch.zeros(1, dtype=torch.long), ego_status=torch.zeros(1, 3))
        self.future_s = cfg.data.future_frames / cfg.data.frame_rate
        with torch.no_grad():
            self.latents = encode_frames(self.vae, self.clip)

    @torch.no_grad()
    def encode(self):
        encode_frames(self.vae, self.clip)

    @torch.no_grad()
    def decode(self):
        decode_latents(self.vae, self.latents)

    @torch.no_grad()
    def generate(self):
        """One generated future, as the app makes it: the future latents sampled, the clip decoded."""
        out = sample_future(self.model, self.latents[:, :, :self.n_ctx], self.cond, self.n_fut,
                            self.cfg.train.sample_steps, generator=torch.Generator().manual_seed(0),
                            guidance=self.cfg.train.guidance)
        decode_latents(self.vae, out.latents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs=2, default=[str(ROOT / "configs" / "default.yaml"),
                                                        str(ROOT / "configs" / "world4s.yaml")])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--judge-batches", type=int, default=3)
    args = parser.parse_args()
    worlds = [World(p) for p in args.configs]
    for w in worlds:  # warm-up
        w.encode(), w.decode(), w.generate()

    result = {"threads": torch.get_num_threads(), "sample_steps": [w.cfg.train.sample_steps for w in worlds]}
    gen_a, gen_b = paired_times(worlds[0].generate, worlds[1].generate, args.repeats)
    for w, gen in zip(worlds, (gen_a, gen_b)):
        enc = [timed(w.encode) for _ in range(args.repeats)]
        dec = [timed(w.decode) for _ in range(args.repeats)]
        result[w.cfg.name] = {
            "frames": w.frames, "frame_size": [w.cfg.data.image_height, w.cfg.data.image_width],
            "latent_shape": list(w.latents.shape), "future_latent_frames": w.n_fut,
            "future_s": round(w.future_s, 3),
            "vae_encode_ms_per_frame": round(1e3 * statistics.median(enc) / w.frames, 2),
            "vae_decode_ms_per_frame": round(1e3 * statistics.median(dec) / w.frames, 2),
            "generate_s": round(statistics.median(gen), 3),
            "generate_s_per_future_s": round(statistics.median(gen) / w.future_s, 3),
        }
    per_s = [[t / w.future_s for t in gen] for w, gen in zip(worlds, (gen_a, gen_b))]
    result[f"{worlds[1].cfg.name}_over_{worlds[0].cfg.name}_per_future_s"] = ratio(per_s[1], per_s[0])
    result[f"{worlds[1].cfg.name}_over_{worlds[0].cfg.name}_generate"] = ratio(gen_b, gen_a)

    # the video judge (the default JudgeTrainConfig's sizes) on clips of the second config
    data = worlds[1].cfg.data
    j = JudgeTrainConfig()
    judge = WorldJudge(context_frames=data.context_frames, future_frames=data.future_frames,
                       frame_rate=data.frame_rate, frame_size=(data.image_height, data.image_width),
                       widths=j.widths, frame_stages=j.frame_stages, correlation_radius=j.correlation_radius,
                       correlation_channels=j.correlation_channels, token_dim=j.token_dim, num_layers=j.num_layers,
                       feature_dim=j.feature_dim, map_channels=j.map_channels,
                       ground_camera=synth_camera(data) if j.ground_view else None).eval()
    batch = torch.rand(16, worlds[1].frames, 3, data.image_height, data.image_width) * 2 - 1
    with torch.no_grad():
        judge(batch, output_embedding=True)
        times = [timed(lambda: judge(batch, output_embedding=True)) for _ in range(args.judge_batches)]
    per_batch = statistics.median(times)
    result["judge"] = {"params_M": round(sum(p.numel() for p in judge.parameters()) / 1e6, 3),
                       "clips_per_s": round(16 / per_batch, 2),
                       "frames_per_s": round(16 * worlds[1].frames / per_batch, 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
