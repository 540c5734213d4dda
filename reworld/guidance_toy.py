"""Intermediate guidance on a 2-D density we know exactly: the check that our guidance path does what the method says.

Internal Guidance (IG) trains an auxiliary velocity head on an intermediate block with the same flow-matching loss
(weight 0.5 in its code, head after block 8 of 28) and samples with v_w = v_i + w (v_f − v_i); its project page shows
on a 2-D toy (Autoguidance's) that this removes outliers while keeping the spread, and a stop-gradient "training
loss" that learns the guided velocity. Here the same three arms run through *our* code: the model is called as the
Video DiT is (latents (B, C, t, h, w) with C = 2 and one latent frame, `VideoDiTOutput` with `head_samples`), trained
by `reworld.losses.flow.video_training_losses` and sampled by `reworld.sampling.sample_future`. Only the network is
small (a stack of adaLN residual MLP blocks, with `AdaLNVelocityHead`s as the Video DiT's heads).

The density is a Gaussian mixture drawn as a branching tree (thin, curved structure, where a weak model puts its
outliers), so every metric is exact against it:
- `outlier_rate`: share of samples whose log-density is below the 1st percentile of the density's own samples
  (0.01 for a perfect model),
- `mean_log_density` of the samples (the density's own samples: `reference_log_density`),
- `sliced_w2`: sliced 2-Wasserstein distance to the density's samples (256 directions),
- `mmd`: unbiased squared MMD with a sum of RBF kernels (bandwidths 0.02, 0.1, 0.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from reworld.config import LossConfig
from reworld.losses.flow import video_training_losses
from reworld.models.layers import AdaLNVelocityHead, load_model_strict, save_model_atomic
from reworld.models.video_dit import VideoDiTOutput
from reworld.sampling import sample_future

ARMS = ("vanilla", "ig", "ig_sg")  # no head loss · IG (λ = 0.5) · IG's stop-gradient training loss
# σ ~ logit-normal(0, 1.6): with the Video DiT's (0, 1), few σ < 0.1 are drawn and after 1500 steps every arm was a
# blob without the tree's forks (measured on seed 0, which the study does not use); 1.6 learns them in 3000 steps
TOY_LOGIT_STD = 1.6


# ---------------------------------------------------------------------------------------------- the density
class TreeDensity:
    """A Gaussian mixture along the branches of a binary tree in [-1, 1]²: a trunk, then `levels` of forks, each
    branch shorter, thinner and lighter than its parent. Exact `log_prob` and `sample`."""

    def __init__(self, levels: int = 4, per_branch: int = 6, seed: int = 0):
        rng = np.random.default_rng(seed)
        means, stds, weights = [], [], []

        def branch(start, angle, length, width, weight, level):
            end = start + length * np.array([math.cos(angle), math.sin(angle)])
            for s in np.linspace(0.0, 1.0, per_branch):
                means.append(start + s * (end - start))
                stds.append(width)
                weights.append(weight / per_branch)
            if level < levels:
                for side in (-1.0, 1.0):
                    spread = 0.45 + 0.15 * rng.random()
                    branch(end, angle + side * spread, length * 0.68, width * 0.72, weight * 0.5, level + 1)

        branch(np.array([0.0, -0.95]), math.pi / 2, 0.55, 0.04, 1.0, 1)
        self.means = np.asarray(means)  # (K, 2)
        self.stds = np.asarray(stds)  # (K,)
        w = np.asarray(weights)
        self.weights = w / w.sum()

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[k] + self.stds[k, None] * rng.standard_normal((n, 2))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log p(x) for points (N, 2)."""
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (N, K)
        logc = np.log(self.weights) - 2 * np.log(self.stds) - math.log(2 * math.pi)
        z = logc[None] - d2 / (2 * self.stds[None] ** 2)
        m = z.max(1, keepdims=True)
        return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


# ---------------------------------------------------------------------------------------------- the model
def _timestep_features(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    args = (sigma.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Block(nn.Module):
    """adaLN-Zero residual MLP block (a DiT block without attention: one token per sample)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.modulation = nn.Linear(dim, 3 * dim)
        nn.init.zeros_(self.modulation.weight), nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(nn.functional.silu(temb)).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class ToyFlowDiT(ModelMixin, ConfigMixin):
    """A flow model on 2-D points with the Video DiT's interface: `forward(latents (B, 2, 1, 1, 1), sigma (B,), cond,
    n_context, return_heads)` → `VideoDiTOutput` (velocity, and with `return_heads` each head's velocity). A diffusers
    model, so a trained one is a folder (`config.json` + safetensors): `save_toy` / `load_toy`."""

    @register_to_config
    def __init__(self, dim: int = 64, num_blocks: int = 6, head_blocks: tuple[int, ...] = (1,)):
        super().__init__()
        head_blocks = tuple(int(k) for k in head_blocks)
        self.dim = dim
        self.proj_in = nn.Linear(2, dim)
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(_Block(dim) for _ in range(num_blocks))
        self.heads = nn.ModuleDict({str(k): AdaLNVelocityHead(dim, 2) for k in head_blocks})
        self.out = AdaLNVelocityHead(dim, 2)  # the final layer, zero-initialised like DiT's

    def forward(self, latents, sigma, cond=None, n_context: int = 0, *, return_heads: bool = False) -> VideoDiTOutput:
        b = latents.shape[0]
        x = latents.reshape(b, 2)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).expand(b)
        temb = self.time(_timestep_features(sigma, self.dim))[:, None]  # (B, 1, D)
        h = self.proj_in(x)[:, None]  # (B, 1, D): one token
        heads = {}
        for k, block in enumerate(self.blocks):
            h = block(h, temb)
            if return_heads and str(k) in self.heads:
                heads[k] = self.heads[str(k)](h, temb).reshape(b, 2, 1, 1, 1)
        v = self.out(h, temb).reshape(b, 2, 1, 1, 1)
        return VideoDiTOutput(sample=v, head_samples=heads if return_heads else None)


# ---------------------------------------------------------------------------------------------- arms
def arm_loss(arm: str, guidance: float) -> LossConfig:
    """The loss of an arm: vanilla (λ_ig = 0), IG (λ_ig = 0.5, IG's value) or IG's stop-gradient training loss with
    ω = 1 − 1/w, so that its learned guidance equals sampling IG at `guidance` w."""
    sigmas = {"logit_std": TOY_LOGIT_STD}
    if arm == "vanilla":
        return LossConfig(lambda_ig=0.0, **sigmas)
    if arm == "ig":
        return LossConfig(lambda_ig=0.5, **sigmas)
    if arm == "ig_sg":
        return LossConfig(lambda_ig=0.5, ig_target_shift=1.0 - 1.0 / guidance, **sigmas)
    raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")


@dataclass(frozen=True)
class ToyConfig:
    steps: int = 3000
    batch: int = 512
    lr: float = 1e-3
    dim: int = 64
    num_blocks: int = 6
    head_block: int = 1  # after the 2nd of 6 blocks: IG's 8 of 28 is at 0.29 of the depth
    ema_decay: float = 0.999
    sample_steps: int = 32
    samples: int = 4000
    guidance: float = 1.4  # the pre-registered w (the Video DiT's default)
    levels: int = 4


def train_toy(arm: str, seed: int, cfg: ToyConfig = ToyConfig(), density: TreeDensity | None = None) -> ToyFlowDiT:
    """One arm trained from seed `seed` with our stage-1 loss; returns the EMA weights (diffusers' EMAModel)."""
    from diffusers.training_utils import EMAModel

    density = density or TreeDensity(cfg.levels)
    torch.manual_seed(seed)
    model = ToyFlowDiT(cfg.dim, cfg.num_blocks, (cfg.head_block,))
    loss_cfg = arm_loss(arm, cfg.guidance)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
    gen = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(density.sample(cfg.steps * cfg.batch, seed=10_000 + seed), dtype=torch.float32)
    for step in range(cfg.steps):
        x0 = data[step * cfg.batch:(step + 1) * cfg.batch].view(cfg.batch, 2, 1, 1, 1)
        losses = video_training_losses(model, x0, 0, None, loss_cfg, gen)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        ema.step(model.parameters())
    ema.copy_to(model.parameters())
    return model.eval()


def save_toy(model: ToyFlowDiT, path, arm: str, seed: int, cfg: ToyConfig) -> None:
    """A trained toy model as a diffusers folder (written atomically), with `toy.json`: how it was trained."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    path = save_model_atomic(model, path)
    (Path(path) / "toy.json").write_text(json.dumps({"arm": arm, "seed": seed, "config": asdict(cfg)}, indent=1))


def load_toy(path) -> tuple[ToyFlowDiT, dict]:
    """A folder written by `save_toy`, loaded strictly (safetensors only): the model and its `toy.json`."""
    import json
    from pathlib import Path

    from reworld.models.layers import CheckpointError

    meta_file = Path(path) / "toy.json"
    if not meta_file.is_file():
        raise CheckpointError(f"{path}: not a guidance-toy model folder (no toy.json)")
    try:
        meta = json.loads(meta_file.read_text())
        cfg = ToyConfig(**meta["config"])
        arm = meta["arm"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_file}: not a toy model description ({type(e).__name__}: {e})") from None
    if arm not in ARMS:
        raise CheckpointError(f"{meta_file}: unknown arm {arm!r}")
    return load_model_strict(ToyFlowDiT, path), {**meta, "config": cfg}


@torch.no_grad()
def toy_velocities(model: ToyFlowDiT, points: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The head's and the final velocity (N, 2) at points (N, 2) and noise level σ."""
    x = torch.as_tensor(np.asarray(points, dtype=np.float32)).view(-1, 2, 1, 1, 1)
    out = model(x, torch.full((len(x),), float(sigma)), return_heads=True)
    head = out.head_samples[min(out.head_samples)]
    return head.reshape(-1, 2).numpy(), out.sample.reshape(-1, 2).numpy()


@torch.no_grad()
def toy_trajectories(model: ToyFlowDiT, n: int, guidance: float, seed: int, steps: int = 32):
    """Points moving under our sampler at guidance w: positions (steps + 1, N, 2) from noise (σ = 1) to σ = 0, and
    the σ of each position (steps + 1,)."""
    context = torch.zeros(n, 2, 0, 1, 1)
    out = sample_future(model, context, None, 1, steps, generator=torch.Generator().manual_seed(seed),
                        guidance=guidance, record=True)
    xs = [r.x_t.reshape(n, 2).numpy() for r in out.record] + [out.latents.reshape(n, 2).numpy()]
    sigmas = [float(r.sigma) for r in out.record] + [0.0]
    return np.stack(xs), np.asarray(sigmas)


@torch.no_grad()
def sample_toy(model: ToyFlowDiT, n: int, guidance: float, seed: int, steps: int = 32) -> np.ndarray:
    """n points from `model` with our sampler (`sample_future`, Euler from σ = 1) at guidance w."""
    context = torch.zeros(n, 2, 0, 1, 1)
    out = sample_future(model, context, None, 1, steps, generator=torch.Generator().manual_seed(seed),
                        guidance=guidance)
    return out.latents.reshape(n, 2).numpy()


# ---------------------------------------------------------------------------------------------- metrics
def sliced_w2(a: np.ndarray, b: np.ndarray, directions: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance of two equal-size point sets (N, 2): the root mean over random directions of
    the 1-D W2² (sorted projections matched)."""
    if len(a) != len(b):
        raise ValueError(f"sliced_w2 needs sets of equal size, got {len(a)} and {len(b)}")
    theta = np.random.default_rng(seed).uniform(0, 2 * math.pi, directions)
    u = np.stack([np.cos(theta), np.sin(theta)], 1)  # (D, 2)
    pa, pb = np.sort(a @ u.T, axis=0), np.sort(b @ u.T, axis=0)
    return float(np.sqrt(((pa - pb) ** 2).mean()))


MMD_BANDWIDTHS = (0.02, 0.1, 0.5)


def mmd(a: np.ndarray, b: np.ndarray, bandwidths=MMD_BANDWIDTHS) -> float:
    """Unbiased squared MMD of point sets (N, 2) and (M, 2) with the kernel Σ_h exp(−|x − y|² / (2h²))."""
    def k(x, y):
        d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                 - 2 * kab.mean())


@dataclass
class ToyMetrics:
    outlier_rate: float
    mean_log_density: float
    sliced_w2: float
    mmd: float
    extra: dict = field(default_factory=dict)


def toy_metrics(points: np.ndarray, density: TreeDensity, seed: int = 1) -> ToyMetrics:
    """The exact metrics of samples (N, 2) against the density (its own samples drawn with `seed`)."""
    ref = density.sample(len(points), seed=seed)
    threshold = np.quantile(density.log_prob(ref), 0.01)
    lp = density.log_prob(points)
    sub = slice(0, min(len(points), 2000))  # MMD is O(N²): on the first 2000 of each
    return ToyMetrics(outlier_rate=float((lp < threshold).mean()), mean_log_density=float(lp.mean()),
                      sliced_w2=sliced_w2(points, ref), mmd=mmd(points[sub], ref[sub]))
