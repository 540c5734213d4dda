"""Is the generated ego slow, or does the judge read blur as slow? (docs/world4s.md, D7; prints JSON)

    python scripts/speed_blur_probe.py --checkpoint runs/study-c2/vanilla-s1 [--guidance 1] [--steps 8]
        [--clips N] [--check-scores FILE] [--json OUT] [--readings OUT.npz] [--threads N] [--ego-speed-shift D]
    python scripts/speed_blur_probe.py --compare A.npz B.npz [--json OUT]
    python scripts/speed_blur_probe.py --response PLUS.npz MINUS.npz [PLUS2.npz MINUS2.npz] --shift D [--json OUT]

On every val clip of the checkpoint's data, the context frames stay true and only the future differs between arms:
the true futures ("real"); the true futures blurred with a Gaussian of σ = 0.5, 1, 2 px; "matched", the true futures
with future frame f blurred by the σ_f at which blurred real frames are as sharp as the generated frames at f
(sharpness: the mean squared Laplacian of the luminance, `sharpness`; σ_f interpolated on `GRID`); "vae", the true
clips through the checkpoint's VAE (D6's ceiling); "generated", one future per clip (w, Euler steps, seeded as
`sampled_videos`). Each arm is read by the judge (speed, the mean over the future frames; forward displacement at the
last frame) and by a learning-free speed (the judge's ground view, its correlation peak read by hand as
`scripts/ground_odometry_probe.py` does: the mean over the steps into the future frames), and each reading is
reported as arm − real per clip, mean over clips with a 95 % bootstrap over clips; for the generated and VAE arms
also per future frame, the last four frames' shift minus the first four's, and each clip's reading regressed on its
real reading and (with the real arm's) on the world's true speed (D8). `--check-scores`: a judge-scores file of the same checkpoint, w and steps, whose first future per
clip must read the same embeddings as "generated". `--ego-speed-shift D` (D12): the generated arm is conditioned on an ego
status speed D m/s off the logged one, everything else as logged, the same noise per clip.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reworld.evaluation.judge import gaussian_blur  # noqa: E402

BLURS = (0.5, 1.0, 2.0)  # [px] the judge validation's blurs
GRID = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)  # [px] σ on which sharpness is matched
RESAMPLES = 2000


def sharpness(videos: torch.Tensor) -> torch.Tensor:
    """videos (B, T, 3, H, W) → (B, T): each frame's mean squared (5-point) Laplacian of its luminance, inside a
    one-pixel border."""
    y = videos.float().mean(2)
    lap = y[..., 1:-1, :-2] + y[..., 1:-1, 2:] + y[..., :-2, 1:-1] + y[..., 2:, 1:-1] - 4 * y[..., 1:-1, 1:-1]
    return (lap**2).mean((-2, -1))


def matched_sigmas(target: np.ndarray, grid: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """Per frame f, the σ at which blurred real frames keep `target[f]` of their sharpness: `ratios` (S, F) is the
    blurred ÷ real sharpness at each σ of `grid` (S,), falling with σ; interpolated linearly between grid points
    (σ = 0 is ratio 1). A target at or above 1 gives 0; one below the last grid point's ratio gives the last σ."""
    sig = np.concatenate([[0.0], np.asarray(grid, dtype=np.float64)])
    out = np.empty(len(target))
    for f, t in enumerate(target):
        r = np.concatenate([[1.0], ratios[:, f]])
        if np.any(np.diff(r) > 0):
            raise ValueError(f"frame {f}: sharpness does not fall with the blur ({np.round(r, 4).tolist()})")
        out[f] = np.interp(-t, -r, sig)  # np.interp needs increasing x: −ratio rises with σ
    return out


def blur_frames(videos: torch.Tensor, n_context: int, sigmas) -> torch.Tensor:
    """videos (B, T, 3, H, W) with future frame f (frame n_context + f) blurred by `sigmas[f]` px (0: unchanged)."""
    out = videos.clone()
    for f, s in enumerate(sigmas):
        if s > 0:
            k = n_context + f
            out[:, k:k + 1] = gaussian_blur(videos[:, k:k + 1], float(s))
    return out


def peak_speeds(judge, videos: torch.Tensor, times: np.ndarray, n_context: int, batch: int = 16) -> np.ndarray:
    """(B, F) [m/s]: the speed of each step into a future frame from the judge's ground view, its correlation peak
    (`scripts/ground_odometry_probe.py`'s `peak_steps`: x refined by a parabola), over the frames' interval."""
    from reworld.evaluation.video import resize_videos
    from scripts.ground_odometry_probe import peak_steps

    cell = judge.config.ground_area[4]
    rows = []
    for b in range(0, len(videos), batch):
        x = resize_videos(videos[b:b + batch], tuple(judge.config.frame_size), torch.float32)
        corr = judge.ground_motion(x)  # (B, T − 1, …)
        steps = peak_steps(corr.flatten(0, 1).cpu(), cell).reshape(corr.shape[0], corr.shape[1], 2)
        rate = np.linalg.norm(steps, axis=-1) / np.diff(times[b:b + batch], axis=1)
        rows.append(rate[:, n_context - 1:])
    return np.concatenate(rows)


@torch.no_grad()
def readings(judge, videos: torch.Tensor, times: np.ndarray, n_context: int) -> dict[str, np.ndarray]:
    """What each instrument reads of videos (N, T, 3, H, W): `speed` (N,) the judge's, mean over the future frames;
    `forward` (N,) its forward displacement at the last frame [m]; `peak` (N,) the ground view's peak speed, mean over
    the steps into the future frames; `sharp` (N, F) each future frame's sharpness; `embedding` (N, D)."""
    from reworld.evaluation.judge import read_videos

    r = read_videos(judge, videos, times=times)
    return {"speed": r["speed"].mean(1), "speed_per_frame": r["speed"], "forward": r["ego_pose"][:, -1, 0],
            "peak": peak_speeds(judge, videos, times, n_context).mean(1),
            "sharp": sharpness(videos[:, n_context:]).numpy(), "embedding": r["embedding"]}


def interval(boot: np.ndarray) -> list[float]:
    """The 95 % percentile interval of bootstrap values."""
    return [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]


def regression(y: np.ndarray, x: np.ndarray, idx: np.ndarray) -> dict:
    """Least-squares y ≈ slope · x + intercept over clips, each with its 95 % percentile bootstrap over clips."""
    from analysis.study_convergence import line_fit

    (a, b), (ba, bb) = line_fit(x, y), line_fit(x[idx], y[idx])
    return {"slope": float(a), "slope_interval": interval(ba), "intercept": float(b), "intercept_interval": interval(bb)}


def shift(a: np.ndarray, b: np.ndarray, idx: np.ndarray) -> dict:
    """a − b per clip: the mean and its 95 % percentile bootstrap over clips (`idx`: the resamples' clip indices)."""
    d = a - b
    boot = d[idx].mean(1)
    return {"value": float(d.mean()), "interval": interval(boot)}


def write_json(path: Path, text: str) -> None:
    """`text` to `path`, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def compare(a: dict, b: dict, arm: str = "generated", resamples: int = RESAMPLES) -> dict:
    """Two `--readings` files of the same clips (e.g. two step counts, D10): the arm's slope on the real reading and
    its mean speed shift (arm − real) in each, and a − b of both, paired by clip on one set of bootstrap resamples."""
    from analysis.study_convergence import line_fit

    iv = interval
    n = len(a["real_speed"])
    if len(b["real_speed"]) != n or not np.allclose(a["real_speed"], b["real_speed"], atol=1e-4):
        raise ValueError("the two readings files are not of the same clips (their real readings differ)")
    idx = np.random.default_rng(0).integers(0, n, (resamples, n))
    out, boot = {}, {}
    for name, r in (("a", a), ("b", b)):
        x, y = r["real_speed"].mean(1), r[f"{arm}_speed"].mean(1)
        d = y - x
        boot[name] = (line_fit(x[idx], y[idx])[0], d[idx].mean(1))
        out[name] = {"slope": float(line_fit(x, y)[0]), "slope_interval": iv(boot[name][0]),
                     "shift": float(d.mean()), "shift_interval": iv(boot[name][1])}
    out["a_minus_b"] = {"slope": out["a"]["slope"] - out["b"]["slope"], "slope_interval": iv(boot["a"][0] - boot["b"][0]),
                        "shift": out["a"]["shift"] - out["b"]["shift"], "shift_interval": iv(boot["a"][1] - boot["b"][1])}
    out["clips"], out["arm"], out["resamples"] = n, arm, resamples
    return out


def response(pairs: list[tuple[dict, dict]], shift: float, resamples: int = RESAMPLES) -> dict:
    """D12/E18: per pair of `--readings` files of one model at stated speed +shift and −shift (same clips), the
    generated speed's response per m/s of stated speed, (gen(+) − gen(−)) / (2·shift), each clip the mean over its
    future frames, mean over clips; with two pairs, the first's response minus the second's; 95 % bootstrap over
    clips, paired on one set of resamples."""
    if not shift > 0:
        raise ValueError(f"--shift must be > 0 (the +/− files' stated speed offset), got {shift}")
    n = len(pairs[0][0]["real_speed"])
    per = []
    for plus, minus in pairs:
        for r, sign in ((plus, 1), (minus, -1)):
            got = r.get("ego_speed_shift")
            if got is not None and float(got) != sign * shift:
                raise ValueError(f"a readings file was made at ego speed shift {float(got):g}, not {sign * shift:g}")
            if len(r["real_speed"]) != n or not np.allclose(r["real_speed"], pairs[0][0]["real_speed"], atol=1e-4):
                raise ValueError("the readings files are not of the same clips (their real readings differ)")
        per.append((plus["generated_speed"].mean(1) - minus["generated_speed"].mean(1)) / (2 * shift))
    idx = np.random.default_rng(0).integers(0, n, (resamples, n))
    out = {"unit": "m/s of generated speed per m/s of stated ego speed", "shift": shift, "clips": n,
           "resamples": resamples, "responses": [{"value": float(d.mean()), "interval": interval(d[idx].mean(1))}
                                                 for d in per]}
    if len(per) == 2:
        d = per[0] - per[1]
        out["first_minus_second"] = {"value": float(d.mean()), "interval": interval(d[idx].mean(1))}
    return out


class EgoSpeedShifted:
    """Clips of `ds` whose ego status speed is `shift` m/s higher (D12): what the generated arm is conditioned on;
    frames, acceleration, yaw rate and command as logged."""

    def __init__(self, ds, shift: float):
        self.ds, self.shift = ds, float(shift)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        from dataclasses import replace

        clip = self.ds[index]
        ego = clip.observation.ego_status.clone()
        ego[0] += self.shift
        return replace(clip, observation=replace(clip.observation, ego_status=ego))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compare", nargs=2, default=None, metavar=("A.npz", "B.npz"),
                   help="no run: compare two --readings files of the same clips (A − B, paired by clip)")
    p.add_argument("--response", nargs="+", default=None, metavar="NPZ",
                   help="no run: PLUS.npz MINUS.npz [PLUS2.npz MINUS2.npz], --readings files at ego speed shift "
                        "+D and −D (--shift D): the generated speed's response per m/s, and first − second")
    p.add_argument("--shift", type=float, default=None, help="D for --response [m/s]")
    p.add_argument("--checkpoint", default=None, help="a pipeline folder (a run folder or a shipped checkpoint)")
    p.add_argument("--judge", default=None, help="a video judge folder (default: the shipped one, if it reads these "
                                                 "clips)")
    p.add_argument("--split", default="val")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips", type=int, default=None, help="the first this many clips of the split (default: all)")
    p.add_argument("--check-scores", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--readings", default=None, help="also write each arm's per-clip readings here (.npz): "
                                                    "<arm>_speed (clips, future frames), <arm>_forward, truth_speed")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--ego-speed-shift", type=float, default=0.0,
                   help="[m/s] added to the ego status speed the generated arm is conditioned on (D12; the context "
                        "frames, acceleration, yaw rate and command stay as logged)")
    args = p.parse_args(argv)
    if args.compare:
        try:
            a, b = (dict(np.load(f)) for f in args.compare)
            result = compare(a, b)
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"speed_blur_probe --compare: {e}") from None
        text = json.dumps({"a": args.compare[0], "b": args.compare[1], **result}, indent=2)
        if args.json:
            write_json(Path(args.json), text)
        print(text)
        return 0
    if args.response:
        if len(args.response) not in (2, 4) or args.shift is None:
            p.error("--response takes 2 or 4 readings files (plus, minus[, plus, minus]) and --shift D")
        try:
            files = [dict(np.load(f)) for f in args.response]
            result = response([(files[0], files[1])] + ([(files[2], files[3])] if len(files) == 4 else []),
                              args.shift)
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"speed_blur_probe --response: {e}") from None
        text = json.dumps({"files": args.response, **result}, indent=2)
        if args.json:
            write_json(Path(args.json), text)
        print(text)
        return 0
    if not args.checkpoint:
        p.error("--checkpoint is required (or --compare, --response)")
    if args.steps < 1:
        p.error(f"--steps must be ≥ 1, got {args.steps}")
    if args.clips is not None and args.clips < 2:
        p.error(f"--clips must be ≥ 2, got {args.clips}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from dataclasses import replace

    from analysis.study_convergence import read_npz, speed_reader
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.evaluate import sampled_videos, vae_reconstructions
    from reworld.evaluation.judge import check_judge_reads, judge_set_of, load_judge
    from reworld.paths import default_judge, resolve_dataroot
    from reworld.pipelines import WorldActionPipeline

    t0 = time.perf_counter()
    judge_dir = args.judge or default_judge(args.checkpoint)
    if not judge_dir:
        raise SystemExit(f"no video judge reads the clips of {args.checkpoint}; pass --judge")
    pipe = WorldActionPipeline.from_pretrained(args.checkpoint)
    spec = replace(pipe.clip_spec, dataroot=resolve_dataroot(pipe.clip_spec.dataroot))
    ds = NuScenesClips(spec, split=args.split, geometry=False)
    if len(ds) == 0:
        raise SystemExit(f"no {args.split} clips in {spec.dataroot}")
    judge = load_judge(judge_dir).to(pipe.device)
    check_judge_reads(judge, ds.cfg)
    data = judge_set_of(ds, range(min(len(ds), args.clips or len(ds))))
    n, nc = len(data), data.n_context
    real = data.video(slice(None))
    times = data.time

    got: dict[str, dict] = {"real": readings(judge, real, times, nc)}
    sharp_real = got["real"]["sharp"].mean(0)  # (F,)
    ratios = np.stack([sharpness(gaussian_blur(real[:, nc:], s)).numpy().mean(0) / sharp_real for s in GRID])
    for s in BLURS:
        got[f"blur_{s:g}"] = readings(judge, blur_frames(real, nc, [s] * (real.shape[1] - nc)), times, nc)
    got["vae"] = readings(judge, vae_reconstructions(pipe, data, args.seed), times, nc)
    source = EgoSpeedShifted(ds, args.ego_speed_shift) if args.ego_speed_shift else ds
    videos, clip_of = sampled_videos(pipe, source, range(n), 1, args.steps, args.guidance, args.seed)
    assert np.array_equal(clip_of, np.arange(n))
    got["generated"] = readings(judge, videos, times, nc)
    del videos
    target = got["generated"]["sharp"].mean(0) / sharp_real
    sig = matched_sigmas(target, np.array(GRID), ratios)
    got["matched"] = readings(judge, blur_frames(real, nc, sig), times, nc)

    reader = speed_reader(judge_dir)
    exact = float(np.abs(reader(got["generated"]["embedding"]) - got["generated"]["speed"]).max())
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, (RESAMPLES, n))
    out = {"checkpoint": args.checkpoint, "judge": str(judge_dir), "clips": n, "guidance": args.guidance,
           "steps": args.steps, "seed": args.seed, "ego_speed_shift": args.ego_speed_shift,
           "units": "speed, peak: m/s; forward: m at the last future frame; each arm − real per clip, mean over "
                    "clips, 95 % percentile bootstrap over clips",
           "speed_reader_max_abs_diff": exact,
           "real_vs_truth": {"judge_speed": shift(got["real"]["speed"], data.speed[:, nc:].mean(1), idx),
                             "peak_speed": shift(got["real"]["peak"], data.speed[:, nc:].mean(1), idx),
                             "judge_forward": shift(got["real"]["forward"], data.ego_pose[:, -1, 0], idx)},
           "sharpness_ratio_per_future_frame": {k: (v["sharp"].mean(0) / sharp_real).round(4).tolist()
                                                for k, v in got.items() if k != "real"},
           "matched_sigma_px": sig.round(3).tolist(), "grid_px": list(GRID),
           "grid_ratio_per_future_frame": ratios.round(4).tolist(), "arms": {}}
    for k, v in got.items():
        if k != "real":
            out["arms"][k] = {m: shift(v[m], got["real"][m], idx) for m in ("speed", "forward", "peak")}
    real_f = got["real"]["speed_per_frame"]
    out["speed_shift_per_future_frame"] = {k: [shift(got[k]["speed_per_frame"][:, f], real_f[:, f], idx)
                                               for f in range(real_f.shape[1])] for k in ("generated", "vae")}
    out["speed_shift_last4_minus_first4"] = {
        k: shift((got[k]["speed_per_frame"] - real_f)[:, -4:].mean(1), (got[k]["speed_per_frame"] - real_f)[:, :4].mean(1),
                 idx) for k in ("generated", "vae")}
    out["speed_regression_on_real"] = {k: regression(got[k]["speed"], got["real"]["speed"], idx)
                                       for k in ("generated", "vae")}
    truth = data.speed[:, nc:].mean(1)
    out["speed_regression_on_truth"] = {k: regression(got[k]["speed"], truth, idx) for k in ("real", "generated", "vae")}
    out["real_speed_reading"] = {"mean": float(got["real"]["speed"].mean()), "std": float(got["real"]["speed"].std())}
    g, m = out["arms"]["generated"]["speed"], out["arms"]["matched"]["speed"]
    out["matched_share_of_generated_speed_shift"] = m["value"] / g["value"] if g["value"] else None
    if args.check_scores:
        s = read_npz(Path(args.check_scores))
        first = np.array([np.flatnonzero(s["clip_of"] == c)[0] for c in range(n)])
        out["check_scores"] = {"file": args.check_scores, "max_abs_diff_embedding": float(
            np.abs(s["embedding"][first] - got["generated"]["embedding"]).max()), "max_abs_diff_real_embedding": float(
            np.abs(s["real_embedding"][:n] - got["real"]["embedding"]).max())}
    if args.readings:
        from analysis.study_finetune import write_npz

        write_npz({**{f"{k}_speed": v["speed_per_frame"] for k, v in got.items()},
                   **{f"{k}_forward": v["forward"] for k, v in got.items()},
                   "truth_speed": data.speed[:, nc:], "ego_speed_shift": np.array(args.ego_speed_shift)},
                  Path(args.readings))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=2)
    if args.json:
        write_json(Path(args.json), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
