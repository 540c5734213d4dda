"""Video metrics (docs/design.md §4): PSNR and SSIM against the true future, and a Fréchet distance on clip
embeddings (the penultimate features of a video network).

The Fréchet distance is only as meaningful as the features it is computed on, so it never travels
without its name: `video_frechet` asks the feature network for its `metric_name` and returns a
`FrechetResult` that carries it.

- `"FVD"`: features of the Kinetics-400 Inception-I3D (`reworld.evaluation.i3d`, loaded from a local
  checkpoint), as in Unterthiner et al. 2018.
- `"FD-ReWorldNet"`: features of the project's own video network trained on the synthetic world
  (`reworld.evaluation.clip_net`). This is the offline metric; it is *not* FVD and is never called so.

All functions are pure: tensors in, per-sample tensors (or one float) out.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from reworld.arrays import finite_rows

__all__ = ["psnr", "ssim", "frechet_distance", "kernel_distance", "FrechetResult", "ClipEmbeddingNet", "check_videos",
           "resize_videos", "clip_embeddings", "feature_matrix", "video_frechet"]

SSIM_WINDOW = 11  # [px] Gaussian window side (Wang et al. 2004)
SSIM_SIGMA = 1.5  # [px]
SSIM_K1 = 0.01
SSIM_K2 = 0.03
FRECHET_EPS = 1e-6  # diagonal offset when (Σa Σb)^½ is singular (as pytorch-fid)
FRECHET_SQRTM_TOL = 1e-3  # relative residual ‖S² − ΣaΣb‖ / ‖ΣaΣb‖ above which sqrtm is retried with the offset
FRECHET_IMAG_ATOL = 1e-3  # imaginary part of diag((ΣaΣb)^½) tolerated as round-off (as pytorch-fid)
RANGE_TOL = 1e-3  # video inputs outside [-1 − tol, 1 + tol] are rejected (uint8 or [0, 255] frames)


def check_videos(videos: torch.Tensor, where: str, channels: int = 3, frames: int | None = None) -> None:
    """The input contract of every video network here: float (B, T, channels, H, W) in [-1, 1]."""
    t = "T" if frames is None else str(frames)
    if videos.dim() != 5 or videos.shape[2] != channels or (frames is not None and videos.shape[1] != frames):
        raise ValueError(f"{where}: expected (B, {t}, {channels}, H, W), got {tuple(videos.shape)}")
    if not videos.is_floating_point() or videos.min() < -1 - RANGE_TOL or videos.max() > 1 + RANGE_TOL:
        raise ValueError(f"{where}: videos must be float in [-1, 1]")


def resize_videos(videos: torch.Tensor, size: tuple[int, int], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Videos (B, T, C, H, W) resized to `size` (H, W), bilinear (antialiased when shrinking), cast to `dtype`:
    what a video network trained at one frame size does to the frames it is given."""
    b, t, c, h, w = videos.shape
    x = videos.to(dtype) if dtype is not None else videos
    if (h, w) == tuple(size):
        return x
    return F.interpolate(x.reshape(b * t, c, h, w), size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=h > size[0] or w > size[1]).reshape(b, t, c, *size)


# ---------------------------------------------------------------------------------------------- PSNR
def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR [dB] of images in [-1, 1] (peak-to-peak 2): (B, ...) → (B,)."""
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


# ---------------------------------------------------------------------------------------------- SSIM
def _gaussian_window(size: int, sigma: float, channels: int, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g).to(dtype=dtype, device=device)  # (size, size), sums to 1
    return window.expand(channels, 1, size, size).contiguous()  # depthwise: one filter per channel


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample SSIM of images or videos in [-1, 1]: (B, 3, H, W) or (B, T, 3, H, W) → (B,).

    Standard SSIM (Wang et al. 2004): 11×11 Gaussian window with σ 1.5, K1 0.01, K2 0.03, on RGB
    rescaled to [0, 1] (data range 1); the map is taken over valid window positions only (no padding,
    as the reference MATLAB code) and averaged over pixels, channels and frames. 1 means identical.
    """
    if pred.shape != target.shape:
        raise ValueError(f"ssim: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() not in (4, 5):
        raise ValueError(f"ssim: expected (B, 3, H, W) or (B, T, 3, H, W), got {tuple(pred.shape)}")
    b, c, h, w = pred.shape[0], pred.shape[-3], pred.shape[-2], pred.shape[-1]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim: images of {h}×{w} px are smaller than the {SSIM_WINDOW}×{SSIM_WINDOW} window")
    # float64: σ² = E[x²] − μ² cancels catastrophically in float32 next to C2 = 9e-4
    x = (pred.double().reshape(-1, c, h, w) + 1) / 2  # (B·T, C, H, W) in [0, 1]
    y = (target.double().reshape(-1, c, h, w) + 1) / 2
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, c, x.dtype, x.device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K · data range)², data range 1

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, window, groups=c)  # (B·T, C, H − 10, W − 10)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(b, -1).mean(1).float()  # (B,)


# ---------------------------------------------------------------------------------------------- Fréchet
@dataclass(frozen=True)
class FrechetResult:
    name: str  # "FVD" (Kinetics-400 I3D features) or "FD-ReWorldNet" (offline features); never "FVD" offline
    value: float  # [feature units²] ‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½); NaN when undefined
    num_a: int  # videos in the first set (the real ones, by convention)
    num_b: int  # videos in the second set (the generated ones)
    feature_dim: int


def feature_matrix(x, where: str, min_rows: int = 1, dtype=np.float64) -> np.ndarray:
    """`x` (a tensor or array-like) as a finite (N, D) array with N ≥ `min_rows` and D ≥ 1, or a short
    `ValueError` that starts with `where` (Fréchet distance, UMAP, separation figures)."""
    return finite_rows(x, where, "of D features, as a 2-D array (N, D)", min_rows=min_rows, dtype=dtype)


def _sqrtm(m: np.ndarray) -> tuple[np.ndarray, float]:
    """Principal square root and its relative residual; scipy's own singularity warning is replaced by
    the residual, which the caller checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(m)
    if not np.isfinite(root).all():
        return root, math.inf
    scale = max(np.linalg.norm(m), 1e-300)
    return root, float(np.linalg.norm(root @ root - m) / scale)


def frechet_distance(feats_a, feats_b, eps: float = FRECHET_EPS) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets, (N, D) and (M, D) → float.

    `‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½)`, in float64, with `scipy.linalg.sqrtm`. As in pytorch-fid:
    when the product is singular (e.g. N < D) the square root is retried with `eps·I` added to both
    covariances, and a negligible imaginary part (round-off) is dropped; a large one is an error.
    Round-off can make identical sets come out at −1e-12; the result is clamped at 0.
    """
    # a covariance needs N ≥ 2
    a = feature_matrix(feats_a, "frechet_distance: feats_a", min_rows=2)
    b = feature_matrix(feats_b, "frechet_distance: feats_b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: feature dims differ: feats_a has D={a.shape[1]}, feats_b D={b.shape[1]}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a = np.atleast_2d(np.cov(a, rowvar=False))  # (D, D), unbiased as pytorch-fid
    sigma_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean, residual = _sqrtm(sigma_a @ sigma_b)
    if residual > FRECHET_SQRTM_TOL:
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean, residual = _sqrtm((sigma_a + offset) @ (sigma_b + offset))
        if not np.isfinite(covmean).all():
            raise ValueError("frechet_distance: (Σa Σb)^½ is not finite even with the eps offset")
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > FRECHET_IMAG_ATOL:
            raise ValueError(f"frechet_distance: (Σa Σb)^½ has an imaginary component of {imag:.3g}")
        covmean = covmean.real
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))
    return max(value, 0.0)


def kernel_distance(feats_a, feats_b, drop_aa=None, drop_bb=None, drop_ab=None) -> float:
    """Kernel distance (KID, Bińkowski et al. 2018): the unbiased estimate of the squared MMD between two feature
    sets, (N, D) and (M, D) → float, with the cubic polynomial kernel k(x, y) = (x·y / D + 1)³.

    Unlike the Fréchet distance it has no bias in the number of samples (its expectation is 0 for two sets drawn
    from one distribution, so it can come out slightly negative) and needs no covariance, so small sets compare.
    On the full sets rather than the reference code's averages over subsets of 1000: the same expectation.

    That estimate assumes independent samples. Where some pairs are not (a generated video and the real video of the
    clip it was conditioned on share that clip's frames), `drop_aa` (N, N), `drop_bb` (M, M) and `drop_ab` (N, M)
    mark the pairs to leave out of each term's mean (a U-statistic over the independent pairs only; each set's
    diagonal is always left out): with none given, or none marked, it is the estimate above."""
    from sklearn.metrics.pairwise import polynomial_kernel

    a = feature_matrix(feats_a, "kernel_distance: feats_a", min_rows=2)
    b = feature_matrix(feats_b, "kernel_distance: feats_b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"kernel_distance: feature dims differ: feats_a has D={a.shape[1]}, feats_b D={b.shape[1]}")
    n, m = len(a), len(b)

    def kernel(x, y):
        return polynomial_kernel(x, y, degree=3, gamma=1.0 / a.shape[1], coef0=1.0)

    k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    if all(d is None for d in (drop_aa, drop_bb, drop_ab)):
        within_a = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))
        within_b = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        return float(within_a + within_b - 2.0 * k_ab.mean())

    def mean_kept(k, drop, name, diagonal):
        keep = np.ones(k.shape, dtype=bool)
        if diagonal:
            np.fill_diagonal(keep, False)
        if drop is not None:
            drop = np.asarray(drop, dtype=bool)
            if drop.shape != k.shape:
                raise ValueError(f"kernel_distance: {name} has shape {drop.shape}, expected {k.shape}")
            keep &= ~drop
        if not keep.any():
            raise ValueError(f"kernel_distance: {name} leaves no pair to average")
        return k[keep].mean()

    return float(mean_kept(k_aa, drop_aa, "drop_aa", True) + mean_kept(k_bb, drop_bb, "drop_bb", True)
                 - 2.0 * mean_kept(k_ab, drop_ab, "drop_ab", False))


class ClipEmbeddingNet(Protocol):
    """A network whose `clip_embedding` defines a Fréchet video metric and whose `metric_name` names it."""

    metric_name: str

    def clip_embedding(self, videos: torch.Tensor) -> torch.Tensor:  # (B, T, 3, H, W) in [-1, 1] → (B, D)
        ...


@torch.no_grad()
def clip_embeddings(net: ClipEmbeddingNet, videos: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """`net.clip_embedding` over `videos` (N, T, 3, H, W) in [-1, 1], in batches on the net's device → (N, D) CPU."""
    device = next(net.parameters()).device  # type: ignore[attr-defined]
    out = [net.clip_embedding(videos[i : i + batch_size].to(device)).float().cpu()
           for i in range(0, len(videos), batch_size)]
    return torch.cat(out)


def video_frechet(net: ClipEmbeddingNet, videos_a: torch.Tensor, videos_b: torch.Tensor,
                  batch_size: int = 16) -> FrechetResult:
    """Fréchet distance between two sets of videos (N, T, 3, H, W) and (M, T, 3, H, W) in [-1, 1] on the
    clip embeddings of `net`, named by the net (`"FVD"` only for the Kinetics-400 I3D)."""
    fa = clip_embeddings(net, videos_a, batch_size)  # (N, D)
    fb = clip_embeddings(net, videos_b, batch_size)  # (M, D)
    return FrechetResult(name=net.metric_name, value=frechet_distance(fa, fb), num_a=len(fa), num_b=len(fb),
                         feature_dim=fa.shape[1])
