"""`python -m reworld eval`: planning and video figures of a checkpoint, beside honest baselines.

Planning, per clip of the split: one trajectory sampled with a fixed seed, PDM score and sub-scores,
L2 at 1/2/3 s, collision rate (share of clips with an at-fault collision, NC < 1). Reference planners:
constant velocity (the current speed held along the current heading) and the expert (upper bound).
Video, on the first `video_clips` clips: PSNR/SSIM of the sampled future against the truth, beside the
repeat-last-context-frame baseline, and a Fréchet distance between sampled and true futures on the
features of the project's own video network (`FD-ReWorldNet`), or of a local I3D (`FVD`) with `--i3d`.
With a video judge that reads the checkpoint's clips (`judge`; `reworld.evaluation.judge`): on every clip of the
split, `judge_samples` sampled futures each, the judge's reading errors per future frame against the world's
truth, `fd_judge` and `kid_judge` against the real futures of the same clips, the same for the baselines (repeat
the last frame, play the context again) and the floor (the real futures' reading errors; the distances between two
halves of the real clips, dealt within scenes), the ceiling (the true clips through the VAE: what a perfect Video
DiT would read), and the controllability of "what if" (`controllability`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from reworld.config import replace
from reworld.data.loader import NuScenesClips
from reworld.data.types import COMMANDS
from reworld.evaluation.clip_net import load_video_net
from reworld.evaluation.i3d import load_i3d
from reworld.evaluation.video import psnr, ssim, video_frechet
from reworld.models.action_dit import anchor_trajectory
from reworld.paths import resolve_dataroot
from reworld.pipelines.world_action import WorldActionPipeline
from reworld.sampling import default_motion_guidance
from reworld.planning.pdm import PDMScorerConfig, score_trajectory
from reworld.planning.scene import PlanningScene

PLAN_KEYS = ("pdms", "nc", "dac", "ttc", "ep", "c", "l2_1s", "l2_2s", "l2_3s", "collision_rate")


@dataclass
class EvalReport:
    checkpoint: str
    split: str
    num_clips: int
    planners: dict[str, dict[str, float]] = field(default_factory=dict)  # name → PLAN_KEYS
    video: dict[str, float] = field(default_factory=dict)
    judge: dict = field(default_factory=dict)  # the video judge's figures (`judge_metrics`), when one was given
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        return "\n".join(report_tables(self.planners, self.video) + judge_tables(self.judge))


def report_tables(planners: dict[str, dict[str, float]], video: dict[str, float]) -> list[str]:
    """The report as Markdown lines: a planner table (PLAN_KEYS) and, when there is one, a video table.
    The one renderer of eval figures (the console and the model cards)."""
    lines = ["| planner | " + " | ".join(PLAN_KEYS) + " |", "|---" * (len(PLAN_KEYS) + 1) + "|"]
    for name, row in planners.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in PLAN_KEYS) + " |")
    if video:
        lines += ["", "| video | value |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in video.items()]
    return lines


CEILING = "vae_reconstruction"  # in `baselines`: not a baseline anyone can make, the most a Video DiT could read


def judge_tables(judge: dict) -> list[str]:
    """The video judge's figures (`judge_metrics`) as Markdown lines: per set of futures, the distances and the
    reading errors at each second of the horizon; then the controllability."""
    if not judge:
        return []
    n = len(judge["errors"]["position_m"])
    per_s = n / judge["video_horizon_s"]  # future frames per second
    seconds = range(1, int(judge["video_horizon_s"]) + 1)
    marks = [int(round(per_s * s)) - 1 for s in seconds]  # the future frame at each whole second
    # reports from before 2026-12-06 hold only the all-pairs KID (docs/world4s.md, K1): said so in the header
    kid = "kid_judge" if "kid_judge_all_pairs" in judge else "kid_judge (all pairs, before K1)"
    head = ["fd_judge", kid] + [f"{k} @{s}s" for k in ("position_m", "speed_mps") for s in seconds]
    lines = ["", f"| futures (judge; {judge['clips']} clips × {judge['samples_per_clip']}, {n} frames) | "
             + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    names = {"real": "real (floor)", CEILING: "VAE reconstruction (ceiling)"}
    rows = {"generated": judge, **{names.get(k, f"{k} (baseline)"): v for k, v in judge["baselines"].items()}}
    for name, r in rows.items():
        cells = [r["fd_judge"], r["kid_judge"]] + [r["errors"][k][m] for k in ("position_m", "speed_mps")
                                                   for m in marks]
        lines.append(f"| {name} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in cells) + " |")
    paired = judge.get("paired_position_m", {})
    lines += [""] if paired else []
    for kind, p in paired.items():
        cells = [f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for m, (lo, hi) in zip(p["mean"], p["boot"])]
        lines.append(f"generated − {kind}, position [m] at " + " / ".join(f"{s:.3g} s" for s in p["seconds"])
                     + " (paired by clip, 95 % bootstrap): " + " / ".join(cells))
    c = judge["controllability"]
    if c["clips"]:
        lines += ["", f"controllability: {c['rate']:.0%} of {c['clips']} turning clips read further left under "
                  f"\"left\" than under \"right\" (mean gap {c['lateral_gap_m']:.2f} m)"]
    return lines


def constant_velocity(ego_status: np.ndarray, num_poses: int = 8, dt: float = 0.5) -> np.ndarray:
    """(8, 3): the current speed held straight ahead (the planner's anchor, `anchor_trajectory`)."""
    ego = torch.as_tensor(np.asarray(ego_status, dtype=np.float64))
    return anchor_trajectory(ego, num_poses, 3, dt, "constant_velocity").numpy()


def plan_metrics(scenes, trajectories: np.ndarray, experts: np.ndarray, scorer=None) -> dict[str, float]:
    results = [score_trajectory(s, p, scorer) for s, p in zip(scenes, trajectories)]
    l2 = np.linalg.norm(trajectories[:, :, :2] - experts[:, :, :2], axis=-1)  # (N, 8) at 0.5 … 4 s
    out = {k: float(np.mean([getattr(r, k) for r in results])) for k in ("pdms", "nc", "dac", "ttc", "ep", "c")}
    out.update(l2_1s=float(l2[:, 1].mean()), l2_2s=float(l2[:, 3].mean()), l2_3s=float(l2[:, 5].mean()),
               collision_rate=float(np.mean([r.nc < 1.0 for r in results])))
    return out


def _world_of(dataroot) -> dict:
    """The synthetic world's generator, when the root is one."""
    from reworld.data.synth import world_generator

    generator = world_generator(dataroot)
    return {"world": generator} if generator else {}


def evaluate(checkpoint: str, dataroot: str | None = None, version: str | None = None, split: str = "val",
             limit: int | None = None, video_clips: int = 32, steps: int = 20, guidance: float | None = None,
             plan_steps: int = 10, seed: int = 0, i3d: str | None = None, feature_net: str | None = None,
             device=None, plan_batch: int = 16, scorer: str = "navsim", judge: str | None = None,
             judge_samples: int = 4, every: int = 1, judge_every: int = 1,
             motion_guidance: float | None = None) -> EvalReport:
    """The figures of a checkpoint on the clips of `split`: every `every`-th clip (1: all; a stride spreads a cheaper
    evaluation over all the split's scenes, where `limit` alone keeps the first scenes), the first `limit` of those;
    the judge reads every `judge_every`-th of those (its sampled futures cost most of a run). `motion_guidance`: the
    sampler's s_m for a Video DiT with `video.motion_feedback` (None: the run's `train.motion_guidance`)."""
    for name, value in (("every", every), ("judge_every", judge_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    if not isinstance(plan_batch, int) or plan_batch < 1:
        raise ValueError(f"plan_batch must be an integer ≥ 1, got {plan_batch!r}")
    if scorer not in ("spline", "navsim"):
        raise ValueError(f"scorer must be 'spline' or 'navsim', got {scorer!r}")
    scoring = PDMScorerConfig(simulation=scorer)
    t0 = time.time()
    pipe = WorldActionPipeline.from_pretrained(checkpoint, device=device)
    if motion_guidance is not None:  # every generation below samples with it (`default_motion_guidance`)
        if not pipe.config.video.motion_feedback:
            raise ValueError(f"motion_guidance needs a Video DiT with video.motion_feedback; {checkpoint} has none")
        pipe.config = replace(pipe.config, train={"motion_guidance": float(motion_guidance)})
    data = replace(pipe.config, data={"dataroot": resolve_dataroot(dataroot or pipe.config.data.dataroot),
                                      **({"version": version} if version else {}),
                                      "map_lanes": scorer == "navsim"}).data  # NAVSIM's rules read the lanes
    ds = NuScenesClips(data, split=split, geometry=True)
    picked = list(range(0, len(ds), every))[:limit]
    n = len(picked)
    if n == 0:
        raise ValueError(f"no {split} clips in {data.dataroot}")
    report = EvalReport(checkpoint=str(checkpoint), split=split, num_clips=n,
                        settings={"seed": seed, "plan_steps": plan_steps, "video_steps": steps,
                                  "dataroot": str(data.dataroot), "version": data.version,
                                  "future_poses": data.future_poses,  # the L2 figures' ground-truth times
                                  "scorer": scorer, "every": every, **_world_of(data.dataroot)})
    if pipe.config.video.motion_feedback:
        report.settings["motion_guidance"] = default_motion_guidance(pipe.config)
    # `plan_batch` clips at a time, planned together: of each clip only its scene and trajectories are kept (its
    # frames only for the video clips), so memory does not grow with the split's frames
    scenes, experts, still, planned, video_set = [], [], [], [], []
    for start in range(0, n, plan_batch):
        chunk = [ds[i] for i in picked[start:start + plan_batch]]
        if pipe.has_planner:  # each clip's plan is the one `pipe.plan(clip, seed=seed)` gives alone
            planned.extend(pipe.plan_batch(chunk, steps=plan_steps, seed=seed))
        for i, clip in enumerate(chunk, start):
            scenes.append(PlanningScene.from_clip(clip))
            experts.append(clip.target.trajectory.numpy())
            still.append(constant_velocity(clip.observation.ego_status.numpy()))
            if i < video_clips:
                video_set.append(clip)
    experts = np.stack(experts)
    if planned:
        report.planners[f"ReWorld planner ({pipe.config.name})"] = plan_metrics(scenes, np.stack(planned), experts,
                                                                                 scoring)
    report.planners["constant velocity"] = plan_metrics(scenes, np.stack(still), experts, scoring)
    report.planners["expert (upper bound)"] = plan_metrics(scenes, experts, experts, scoring)

    if video_clips > 0:
        report.video = video_metrics(pipe, video_set, steps, guidance, seed, i3d, feature_net)
        report.settings["video_clips"] = min(video_clips, n)
        report.settings["guidance"] = guidance if guidance is not None else pipe.default_guidance
    if judge:
        from reworld.evaluation.judge import load_judge
        report.judge = judge_metrics(pipe, ds, picked[::judge_every], load_judge(judge).to(pipe.device),
                                     judge_samples, steps, guidance, seed)
        report.settings["judge"] = str(judge)
        report.settings["judge_every"] = judge_every
    report.seconds = round(time.time() - t0, 1)
    return report


def video_metrics(pipe, clips, steps: int, guidance: float | None, seed: int, i3d: str | None,
                  feature_net: str | None) -> dict[str, float]:
    w = pipe.default_guidance if guidance is None else guidance
    gen = torch.stack([pipe.generate(c, steps=steps, guidance=w, seed=seed + i).frames for i, c in enumerate(clips)])
    truth = torch.stack([c.target.frames for c in clips])
    last = torch.stack([c.observation.frames[-1:] for c in clips]).expand_as(truth)
    out = {"psnr": float(psnr(gen, truth).mean()), "ssim": float(ssim(gen, truth).mean()),
           "psnr_repeat_last": float(psnr(last, truth).mean()), "ssim_repeat_last": float(ssim(last, truth).mean())}
    ctx_last = torch.stack([c.observation.frames[-1:] for c in clips])
    # Fréchet features see the last context frame and the future, as the feature net was trained
    real, fake, still = (torch.cat([ctx_last, v], dim=1) for v in (truth, gen, last))
    nets = []
    if feature_net:
        nets.append(load_video_net(feature_net))
    if i3d:
        nets.append(load_i3d(i3d))
    for net in nets:
        net = net.to(pipe.device).eval()
        res = video_frechet(net, fake, real)
        out[res.name] = res.value
        out[f"{res.name}_repeat_last"] = video_frechet(net, still, real).value
    return out


def paired_position(report: dict, clip_of: np.ndarray, clips: int, frame_rate: float) -> dict[str, dict]:
    """Generated minus baseline position error at each whole second ahead, paired by clip (a clip's samples
    averaged first), with the 95 % bootstrap and t intervals over clips (`paired_interval`): per baseline,
    {"seconds": [1, 2, …] (the horizon alone when under 1 s), "mean", "boot", "t": [[lo, hi], …]}. Negative: the
    generated futures read closer."""
    from reworld.evaluation.stats import paired_interval

    gen = np.asarray(report["position_m_per_video"])  # (M, F)
    per_clip = np.stack([gen[clip_of == j].mean(0) for j in range(clips)])  # (N, F)
    n_future = gen.shape[1]
    seconds = [float(s) for s in range(1, int(n_future / frame_rate) + 1)] or [n_future / frame_rate]
    marks = [int(round(frame_rate * s)) - 1 for s in seconds]  # under 1 s of future: its last frame
    out = {}
    for kind, row in report["baselines"].items():
        if kind == "real":
            continue
        diff = per_clip - np.asarray(row["position_m_per_video"])  # baselines: one video per clip, in clip order
        ivs = [paired_interval(diff[:, m], resamples=4000) for m in marks]
        out[kind] = {"seconds": seconds, "mean": [iv.mean for iv in ivs],
                     "boot": [[iv.boot_lo, iv.boot_hi] for iv in ivs], "t": [[iv.t_lo, iv.t_hi] for iv in ivs]}
    return out


@torch.no_grad()
def vae_reconstructions(pipe, data, seed: int, batch_size: int = 16) -> torch.Tensor:
    """Every clip of `data` (a `JudgeSet`) through the pipeline's VAE: its true context frames, then the future frames
    decoded (the pipeline's decode settings) from the latents of the whole true clip. Those latents are what the
    Video DiT is trained to sample, so the judge's reading of these futures is the ceiling of any Video DiT on this
    VAE, as `sampled_videos` are decoded: what the VAE alone keeps of the motion, the lead car and the scene."""
    from reworld.models.vae import encode_frames

    n = data.n_context
    out = []
    for b in range(0, len(data), batch_size):
        videos = data.video(slice(b, b + batch_size))
        latents = encode_frames(pipe.vae, videos.to(pipe.device))
        future = pipe.decode(latents, seed + b)[:, n:].float().cpu()
        out.append(torch.cat([videos[:, :n], future], dim=1))
    return torch.cat(out)


def sampled_videos(pipe, ds: NuScenesClips, indices, samples: int, steps: int, guidance: float, seed: int
                   ) -> tuple[torch.Tensor, np.ndarray]:
    """`samples` generated futures of each clip `indices[j]` after its true context: videos (M, T, 3, H, W) and
    `clip_of` (M,) = j. Sample k of clip j is seeded `seed + k·N + j` (N clips), so the same clip, sample and seed
    get the same noise at every guidance w and in every run."""
    videos, clip_of = [], []
    indices = list(indices)
    for j, i in enumerate(indices):
        clip = ds[i]
        for k in range(samples):
            gen = pipe.generate(clip, steps=steps, guidance=guidance, seed=seed + k * len(indices) + j).frames
            videos.append(torch.cat([clip.observation.frames, gen]))
            clip_of.append(j)
    return torch.stack(videos), np.array(clip_of)


def judge_metrics(pipe, ds: NuScenesClips, indices, judge, samples: int, steps: int, guidance: float | None,
                  seed: int) -> dict:
    """The video judge's figures of a world model on clips `indices` of `ds` (see the module docstring):
    `video_horizon_s`; the generated futures' report (`judge_video_report`: errors per future frame, `fd_judge`,
    `kid_judge`), `samples` per clip, each seeded by its clip and sample; `baselines`: repeat-last and
    copy-context the same way, and "real", the floor (`judge_baselines`: the true futures' reading errors, and the
    distances between two halves of the real clips), and `CEILING`, the true clips through the VAE
    (`vae_reconstructions`: what a perfect Video DiT would read); `paired_position_m` (`paired_position`);
    `controllability`: on the clips whose logged command turns (at a junction), the future generated with "left"
    and with "right" (same seed), and the share in which the judge reads the ego further left at the last future
    frame under "left" than under "right" (`rate`), with the mean gap of the two readings."""
    from reworld.evaluation.judge import check_judge_reads, judge_baselines, judge_set_of, judge_video_report

    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"judge_samples must be an integer ≥ 1, got {samples!r}")
    check_judge_reads(judge, ds.cfg)
    indices = list(indices)
    data = judge_set_of(ds, indices)
    span = list(range(min(indices), max(indices) + 1))  # the floor's distances: the consecutive clips they span
    floor = judge_set_of(ds, span) if len(span) > len(indices) else None
    w = pipe.default_guidance if guidance is None else guidance
    videos, clip_of = sampled_videos(pipe, ds, indices, samples, steps, w, seed)
    out = {"video_horizon_s": ds.cfg.future_frames / ds.cfg.frame_rate, "clips": len(indices),
           "samples_per_clip": samples,
           **judge_video_report(judge, data, videos, clip_of),
           "baselines": judge_baselines(judge, data, floor=floor)}
    out["baselines"][CEILING] = judge_video_report(judge, data, vae_reconstructions(pipe, data, seed),
                                                   np.arange(len(indices)))
    out["paired_position_m"] = paired_position(out, np.array(clip_of), len(indices), ds.cfg.frame_rate)
    out["controllability"] = controllability(pipe, ds, indices, judge, data, steps, w, seed)
    return out


def controllability(pipe, ds: NuScenesClips, indices, judge, data, steps: int, guidance: float, seed: int,
                    command_guidance: float = 0.0, videos: list | None = None) -> dict:
    """On the clips `indices` (with their `JudgeSet` `data`) whose logged command turns: the future generated with
    "left" and with "right" from the same seed (`seed + j` for clip j), and the share in which the judge reads the
    ego further left at the last future frame under "left" than under "right" (`rate`), with the mean gap of the
    two readings (`lateral_gap_m`, + is left) and the per-clip gaps. `videos`: a list that receives (j, the two
    videos (2, T, 3, H, W), left first) per turning clip."""
    from reworld.evaluation.judge import read_videos

    turns = []
    for j, i in enumerate(indices):
        if COMMANDS[int(data.command[j])] in ("left", "right"):
            clip = ds[i]
            pair = [torch.cat([clip.observation.frames,
                               pipe.generate(clip, steps=steps, guidance=guidance, seed=seed + j, command=c,
                                             command_guidance=command_guidance).frames])
                    for c in ("left", "right")]
            turns.append((j, torch.stack(pair)))
    if videos is not None:
        videos.extend(turns)
    if not turns:
        return {"clips": 0, "rate": None, "lateral_gap_m": None, "gaps_m": []}
    times = np.repeat(data.time[[j for j, _ in turns]], 2, axis=0)
    lateral = read_videos(judge, torch.cat([v for _, v in turns]), times=times)["ego_pose"][:, -1, 1]
    gap = lateral[0::2] - lateral[1::2]  # + y is left of the t = 0 frame
    return {"clips": len(turns), "rate": float(np.mean(gap > 0)), "lateral_gap_m": float(np.mean(gap)),
            "gaps_m": gap.tolist()}


def write_report(report: EvalReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=2))
