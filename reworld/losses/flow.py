"""Flow-matching losses of the Video DiT (stage 1, docs/design.md §2). Pure functions: tensors in, per-sample out.

Convention (diffusers flow match): `x_t = (1 − σ) x0 + σ ε`, target velocity `u = ε − x0`, σ ∈ [0, 1].
"""
from __future__ import annotations

import torch

from reworld.config import LossConfig
from reworld.schedulers.flow_match import sample_sigmas


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean squared error (B,). `mask` (broadcastable to `pred`, 1 = counted) restricts the mean,
    e.g. (1, 1, t, 1, 1) for the future latent frames; non-negative weights give the weighted mean Σ w·se / Σ w."""
    se = (pred.float() - target.float()) ** 2
    if mask is None:
        return se.flatten(1).mean(dim=1)
    mask = mask.to(se.dtype).expand_as(se)
    return (se * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp_min(1.0)


def intermediate_guidance_loss(
    head_preds: dict[int, torch.Tensor], target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ over heads of `flow_matching_loss(head_k, target, mask)`, per sample (B,)."""
    if not head_preds:
        raise ValueError("intermediate_guidance_loss needs at least one head prediction")
    return torch.stack([flow_matching_loss(p, target, mask) for p in head_preds.values()]).sum(dim=0)


def future_frame_mask(num_frames: int, n_context: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, t, 1, 1) mask that is 1 on future latent frames, 0 on the `n_context` context frames."""
    return (torch.arange(num_frames, device=device) >= n_context).float().view(1, 1, -1, 1, 1)


FUTURE_FRAME_WEIGHTINGS = ("uniform", "linear")


def future_frame_weights(num_frames: int, n_context: int, weighting: str = "uniform",
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, t, 1, 1) weights of the latent frames in the flow loss: 0 on the `n_context` context frames; on the F
    future frames 1 each ("uniform", = `future_frame_mask`) or k·2/(F + 1) for the k-th (k = 1…F, "linear"): mean 1
    over the future, so the loss keeps its scale and the last frame counts 2F/(F + 1) times the mean."""
    if weighting not in FUTURE_FRAME_WEIGHTINGS:
        raise ValueError(f"loss.future_frame_weighting must be one of {list(FUTURE_FRAME_WEIGHTINGS)}, "
                         f"got {weighting!r}")
    mask = future_frame_mask(num_frames, n_context, device)
    if weighting == "uniform":
        return mask
    k = torch.arange(num_frames, device=device, dtype=torch.float32) - n_context + 1  # 1…F on the future
    n_future = num_frames - n_context
    return (k.clamp_min(0) * 2 / (n_future + 1)).view(1, 1, -1, 1, 1)


def hold_context(x_t: torch.Tensor, n_context: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """`loss.context_hold` (docs/world4s.md, E18): for each sample of x_t (B, C, t, h, w), with probability `p` (one
    uniform draw per sample on the CPU `generator`, only when p > 0, so other runs draw exactly what they did), every
    context latent frame replaced by the last one (the t = 0 latent); future frames untouched."""
    p = float(p)
    if not 0 <= p <= 1:
        raise ValueError(f"loss.context_hold must be a probability in [0, 1], got {p}")
    if p == 0 or n_context < 2:
        return x_t
    held = (torch.rand(x_t.shape[0], generator=generator) < p).to(x_t.device).view(-1, 1, 1, 1, 1)
    context = x_t[:, :, :n_context]
    last = x_t[:, :, n_context - 1:n_context].expand_as(context)
    return torch.cat([torch.where(held, last, context), x_t[:, :, n_context:]], dim=2)


def motion_feed_args(loss_cfg: LossConfig, batch: int, generator: torch.Generator,
                     motion_target: torch.Tensor | None, device) -> dict:
    """The Video DiT's motion-feedback arguments for one training batch (docs/world4s.md, E17): one uniform draw per
    sample on the CPU `generator` (only when either probability is > 0, so other runs draw exactly what they did);
    below `motion_teacher` the sample is fed `motion_target` (teacher forcing), in the next `motion_null` nothing (the
    null condition of motion guidance), otherwise the head's own reading. {} when both are 0."""
    p_t, p_n = float(loss_cfg.motion_teacher), float(loss_cfg.motion_null)
    if not (0 <= p_t <= 1 and 0 <= p_n <= 1 and p_t + p_n <= 1):
        raise ValueError(f"loss.motion_teacher ({p_t}) and loss.motion_null ({p_n}) must be probabilities summing ≤ 1")
    if p_t == 0 and p_n == 0:
        return {}
    u = torch.rand(batch, generator=generator)  # (B,)
    args = {"motion_null": (u >= p_t) & (u < p_t + p_n)}
    if p_t > 0:
        if motion_target is None:
            raise ValueError("loss.motion_teacher > 0 needs the logged poses (loss.lambda_motion > 0)")
        args.update(motion_input=motion_target, motion_input_rows=u < p_t)
    return {k: v.to(device) for k, v in args.items()}


def video_training_losses(
    model,
    latents: torch.Tensor,
    n_context: int,
    cond,
    loss_cfg: LossConfig,
    generator: torch.Generator,
    motion_target: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Stage-1 loss terms for clean latents (B, C, t, h, w) whose first `n_context` latent frames are context.

    σ and ε are drawn on the CPU `generator`. Context frames stay clean (the model gives them timestep 0);
    losses count future frames only, weighted by `loss_cfg.future_frame_weighting` (`future_frame_weights`).
    Returns scalars: `gen` (final velocity), `ig` (Σ heads; only when `loss_cfg.lambda_ig > 0`, otherwise the heads are
    not run at all: vanilla) and
    `total = gen + λ_ig · ig (+ λ_motion · motion)`. With `loss_cfg.lambda_motion` > 0, `motion` is the mean squared
    error of the model's motion head (`VideoDiTOutput.motion` on the future frames) against `motion_target` (B, F, 3),
    the logged ego poses at the future latent frames' times, normalised as the head's outputs are; with
    `loss_cfg.motion_teacher` / `motion_null` > 0 (a Video DiT with `motion_feedback`) each sample is fed the logged
    poses or nothing instead of the head's reading with those probabilities (`motion_feed_args`). With `loss_cfg.ig_target_shift` ω > 0, `gen` is Internal Guidance's stop-gradient
    training loss ‖v_f − (u + ω·sg(v_f − v_i))‖², whose fixed point v_f = v_i + (u − v_i)/(1 − ω) is guidance
    w = 1/(1 − ω) learned by the final output (sample it at w = 1). With `loss_cfg.context_hold` p > 0, a share p of the
    samples sees its context held at t = 0 (`hold_context`). `model` is only called (so a DDP wrapper works).
    """
    b, _, t = latents.shape[:3]
    if not 0 <= n_context < t:
        raise ValueError(f"n_context={n_context} leaves no future latent frame out of {t}")
    sigma = sample_sigmas(b, generator, loss_cfg.logit_mean, loss_cfg.logit_std, loss_cfg.shift, latents.device)
    noise = torch.randn(latents.shape, generator=generator, device="cpu").to(latents)  # (B, C, t, h, w)
    mask = future_frame_mask(t, n_context, latents.device)  # (1, 1, t, 1, 1)
    weights = future_frame_weights(t, n_context, loss_cfg.future_frame_weighting, latents.device)
    s = sigma.to(latents.dtype).view(b, 1, 1, 1, 1)
    # Context frames are kept exactly clean; only future frames are noised.
    x_t = torch.where(mask.bool(), (1 - s) * latents + s * noise, latents)
    target = noise - latents  # u = ε − x0

    omega = loss_cfg.ig_target_shift
    if not 0.0 <= omega < 1.0:
        raise ValueError(f"loss.ig_target_shift must be in [0, 1) (guidance 1/(1 − ω) baked in), got {omega}")
    if omega and loss_cfg.lambda_ig <= 0:
        raise ValueError("loss.ig_target_shift needs a trained head: set loss.lambda_ig > 0")
    use_heads = loss_cfg.lambda_ig > 0
    use_motion = loss_cfg.lambda_motion > 0
    if use_motion and (motion_target is None or tuple(motion_target.shape) != (b, t - n_context, 3)):
        got = None if motion_target is None else tuple(motion_target.shape)
        raise ValueError(f"loss.lambda_motion > 0 needs motion_target of shape {(b, t - n_context, 3)}, got {got}")
    feed = motion_feed_args(loss_cfg, b, generator, motion_target, latents.device)
    x_t = hold_context(x_t, n_context, loss_cfg.context_hold, generator)
    if use_motion:
        feed["return_motion"] = True
    out = model(x_t, sigma, cond, n_context, return_heads=use_heads, **feed)
    target_f = target
    if omega:  # IG's training-loss variant: the final output's target moved by ω·sg(v_f − v_i)
        v_i = out.head_samples[min(out.head_samples)]
        target_f = target + omega * (out.sample - v_i).detach().to(target.dtype)
    gen = flow_matching_loss(out.sample, target_f, weights).mean()
    losses = {"gen": gen}
    total = gen
    if use_heads:
        ig = intermediate_guidance_loss(out.head_samples, target, weights).mean()
        losses["ig"] = ig
        total = total + loss_cfg.lambda_ig * ig
    if use_motion:
        motion = (out.motion[:, n_context:].float() - motion_target.float()).square().mean()
        losses["motion"] = motion
        total = total + loss_cfg.lambda_motion * motion
    losses["total"] = total
    return losses
