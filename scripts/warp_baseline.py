"""Diagnostic D2: how far does moving the last context frame with the ego get, as the judge reads it?

A future anyone can make from the last context frame and a guess of the ego's motion: every pixel of future frame k
is taken from the last context frame where the same point of flat ground was seen (the ground-plane homography of
the ego's motion from t = 0 to t_k; pixels above the horizon move by the rotation alone, as at infinite depth).
Two motions: the constant-velocity guess (`constant_velocity_readings`: the speed at t = 0 held straight on) and the
true ego poses (an oracle: what a perfect motion estimate would give a warp). Beside the baselines of `eval`
(repeat-last, copy-context) and the floor, on the judge's readings per second ahead, `fd_judge` / `kid_judge`
against the real futures of the same clips, and PSNR per second ahead.

    PYTHONPATH=. python scripts/warp_baseline.py --judge assets/checkpoints/judge --dataroot data/synth \
        --split val --limit 48 --json runs/d2-warp.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reworld.config import load_config, replace
from reworld.data.loader import frame_intrinsic
from reworld.evaluation.judge import (baseline_futures, constant_velocity_readings, judge_baselines,
                                      judge_video_report, load_judge, load_judge_set)

REPO = Path(__file__).resolve().parents[1]


def camera_matrices(camera: dict, frame_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K (3, 3) in the pixels of `frame_size` (H, W), R camera → ego (3, 3), t camera position in the ego frame."""
    from pyquaternion import Quaternion

    k = torch.from_numpy(frame_intrinsic(camera, frame_size))
    rot = torch.tensor(Quaternion(camera["rotation"]).rotation_matrix, dtype=torch.float64)
    return k, rot, torch.tensor(camera["translation"], dtype=torch.float64)


def ego_warp_grid(camera: dict, frame_size: tuple[int, int], pose: np.ndarray) -> torch.Tensor:
    """(F, H, W, 2) `grid_sample` grids: for future frame j with ego pose `pose[j]` = (x, y, yaw) in the t = 0 ego
    frame, where each of its pixels was in the t = 0 frame (flat ground at z = 0; above the horizon, rotation only)."""
    k, rot, t = camera_matrices(camera, frame_size)
    h, w = frame_size
    vs, us = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    rays_cam = torch.stack([us, vs, torch.ones_like(us)], -1) @ torch.linalg.inv(k).T  # (H, W, 3)
    rays = rays_cam @ rot.T  # ego axes
    down = rays[..., 2] < -1e-6
    depth = torch.where(down, -t[2] / rays[..., 2].clamp(max=-1e-6), torch.full_like(rays[..., 0], torch.inf))
    ground = t + depth[..., None] * rays  # (H, W, 3) in the ego frame at t_k (finite where `down`)
    grids = []
    for x, y, yaw in np.asarray(pose, dtype=np.float64):
        c, s = np.cos(yaw), np.sin(yaw)
        r = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # ego_k → ego_0
        shift = torch.tensor([x, y, 0.0], dtype=torch.float64)
        p0 = torch.where(down[..., None], ground @ r.T + shift, t + rays @ r.T * 1e4)  # far: direction only
        cam = (p0 - t) @ rot  # ego_0 → camera
        z = cam[..., 2].clamp(min=1e-6)
        u = k[0, 0] * cam[..., 0] / z + k[0, 2]
        v = k[1, 1] * cam[..., 1] / z + k[1, 2]
        grids.append(torch.stack([(u + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1], -1))
    return torch.stack(grids).float()


def warped_futures(videos: torch.Tensor, n_context: int, camera: dict, poses: np.ndarray) -> torch.Tensor:
    """Videos (B, T, 3, H, W) whose future frames are the last context frame moved by `poses` (B, F, 3)."""
    out = videos.clone()
    h, w = videos.shape[-2:]
    last = videos[:, n_context - 1]
    for i in range(len(videos)):
        grid = ego_warp_grid(camera, (h, w), poses[i])
        out[i, n_context:] = F.grid_sample(last[i:i + 1].expand(len(grid), -1, -1, -1), grid, mode="bilinear",
                                           padding_mode="border", align_corners=False)
    return out


def psnr_per_frame(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    mse = ((a - b) / 2).square().mean((0, 2, 3, 4)).clamp_min(1e-10)
    return (-10 * torch.log10(mse)).tolist()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default=str(REPO / "assets" / "checkpoints" / "judge"))
    ap.add_argument("--config", default=str(REPO / "configs" / "world4s.yaml"))
    ap.add_argument("--dataroot", default=str(REPO / "data" / "synth"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    judge = load_judge(args.judge)
    cfg = replace(load_config(args.config), data={"dataroot": args.dataroot}).data
    data = load_judge_set(cfg, args.split, args.limit)
    videos = data.video(slice(None))
    k0 = data.n_context - 1
    cv = constant_velocity_readings(data)["ego_pose"]
    true = data.ego_pose[:, k0 + 1:]
    sets = {"repeat_last": baseline_futures(videos, data.n_context, "repeat_last"),
            "copy_context": baseline_futures(videos, data.n_context, "copy_context"),
            "warp_cv": warped_futures(videos, data.n_context, data.camera, cv),
            "warp_true": warped_futures(videos, data.n_context, data.camera, true)}
    idx = np.arange(len(data))
    real = judge_baselines(judge, data)["real"]
    rows = {"real (floor)": real}
    for name, v in sets.items():
        rows[name] = judge_video_report(judge, data, v, idx)
        rows[name]["psnr_db"] = psnr_per_frame(v[:, data.n_context:], videos[:, data.n_context:])
    per_s = int(round(cfg.frame_rate))
    marks = [per_s * s - 1 for s in range(1, cfg.future_frames // per_s + 1)]
    print(f"{len(data)} clips of {len(set(data.scenes))} scenes ({args.dataroot}, {args.split})")
    print("| futures | fd_judge | kid_judge | position [m] @1/2/3/4 s | heading [deg] @4 s | lead offset [m] | "
          "PSNR [dB] @1/2/3/4 s |")
    for name, r in rows.items():
        e = r["errors"]
        fd = "—" if r["fd_judge"] is None else f"{r['fd_judge']:.2f}"
        kid = "—" if r["kid_judge"] is None else f"{r['kid_judge']:.2f}"
        psnr = " / ".join(f"{r['psnr_db'][m]:.1f}" for m in marks) if "psnr_db" in r else "—"
        print(f"| {name} | {fd} | {kid} | " + " / ".join(f"{e['position_m'][m]:.2f}" for m in marks)
              + f" | {e['heading_deg'][-1]:.2f} | {np.nanmean(e['lead_offset_m']):.2f} | {psnr} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"clips": len(data), "dataroot": args.dataroot, "split": args.split,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
