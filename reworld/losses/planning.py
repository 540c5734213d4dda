"""Stage-2 planner losses (docs/design.md §2): trajectory flow matching, cross-modal alignment, hard negatives.

The loss functions are pure: tensors in, one value per sample out. `planner_training_losses` runs the
Action DiT once on the expert (and, when the hard-negative term is on, its negatives up to the alignment
block, the only features the contrastive term reads) and returns every term by name, plus their weighted sum under `total`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from reworld.config import LossConfig
from reworld.schedulers.flow_match import sample_sigmas


def trajectory_flow_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample: (B, ...) × (B, ...) → (B,)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def alignment_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """REPA alignment: −cos(student, teacher) along the last axis, averaged over tokens.
    (B, N, D) or (B, D) each → (B,). The teacher is a stop-gradient target (detached here), so
    identical inputs give −1 and orthogonal ones 0."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    if student.ndim not in (2, 3):
        raise ValueError(f"expected (B, D) or (B, N, D), got {tuple(student.shape)}")
    cos = F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)  # (B,) or (B, N)
    return -cos.reshape(cos.shape[0], -1).mean(dim=1)


def hard_negative_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE on L2-normalised vectors with the positive at index 0.
    anchor (B, D), positive (B, D), negatives (B, K, D), mask (B, K) bool (False = left out of the
    softmax) → (B,). An obvious positive gives ≈ 0; a positive no closer than K negatives, log(K + 1)."""
    shapes_fit = negatives.ndim == 3 and (negatives.shape[0], negatives.shape[2]) == anchor.shape
    if anchor.shape != positive.shape or not shapes_fit:
        raise ValueError(
            f"expected anchor/positive (B, D) and negatives (B, K, D), got {tuple(anchor.shape)}, "
            f"{tuple(positive.shape)}, {tuple(negatives.shape)}"
        )
    a = F.normalize(anchor.float(), dim=-1)  # (B, D)
    p = F.normalize(positive.float(), dim=-1)  # (B, D)
    n = F.normalize(negatives.float(), dim=-1)  # (B, K, D)
    pos = (a * p).sum(dim=-1, keepdim=True)  # (B, 1)
    neg = torch.einsum("bd,bkd->bk", a, n)  # (B, K)
    if mask is not None:
        if mask.shape != neg.shape:
            raise ValueError(f"mask: expected {tuple(neg.shape)}, got {tuple(mask.shape)}")
        neg = neg.masked_fill(~mask.bool(), float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature  # (B, 1 + K)
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def hinge_repulsion_loss(
    pred_x0: torch.Tensor, negatives: torch.Tensor, margin: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Output-space repulsion `mean_k relu(m − d_k)`, d_k = mean absolute difference between the
    predicted clean trajectory and negative k over all poses and coordinates.
    pred_x0 (B, N, P), negatives (B, K, N, P), mask (B, K) bool → (B,); 0 when every negative is
    farther than the margin (or masked out)."""
    if negatives.ndim != 4 or (negatives.shape[0], *negatives.shape[2:]) != tuple(pred_x0.shape):
        raise ValueError(
            f"expected pred (B, N, P) and negatives (B, K, N, P), "
            f"got {tuple(pred_x0.shape)}, {tuple(negatives.shape)}"
        )
    dist = (pred_x0[:, None].float() - negatives.float()).abs().mean(dim=(-1, -2))  # (B, K)
    hinge = F.relu(margin - dist)  # (B, K)
    if mask is None:
        return hinge.mean(dim=1)
    if mask.shape != hinge.shape:
        raise ValueError(f"mask: expected {tuple(hinge.shape)}, got {tuple(mask.shape)}")
    m = mask.to(hinge.dtype)
    return (hinge * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def select_negatives(negatives: torch.Tensor, mask: torch.Tensor, per_step: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_step` of the K negatives (B, K, N, P) of every sample, drawn at random from its usable ones
    (mask (B, K) True) before unusable ones: (B, k, N, P), (B, k). `per_step` 0 or ≥ K keeps them all."""
    k = negatives.shape[1]
    if per_step <= 0 or per_step >= k:
        return negatives, mask
    order = torch.rand(mask.shape, generator=generator).to(mask.device) - mask.float()  # usable first
    idx = order.argsort(dim=1)[:, :per_step]  # (B, k)
    picked = negatives.gather(1, idx[..., None, None].expand(-1, -1, *negatives.shape[2:]))
    return picked, mask.gather(1, idx)


def _pooled_target(video_target: torch.Tensor) -> torch.Tensor:
    return video_target.mean(dim=1) if video_target.ndim == 3 else video_target  # (B, D_video)


def planner_training_losses(
    model,
    video_hidden_states: list[torch.Tensor],
    poses: torch.Tensor,
    ego_status: torch.Tensor,
    command: torch.Tensor,
    negatives: torch.Tensor | None,
    neg_mask: torch.Tensor | None,
    video_target: torch.Tensor | None,
    loss_cfg: LossConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Stage-2 loss terms (batch means) for an `ActionDiT` `model`.

    video_hidden_states: one (B, S, D_video) per action block (cached, frozen Video DiT); poses (B, N, P) raw
    expert trajectories; ego_status (B, E); command (B,); negatives (B, K, N, P) raw hard negatives or
    None; neg_mask (B, K) bool (False = not a usable negative; None = all usable); video_target
    (B, D_video) pooled or (B, N, D_video) per-waypoint representation of video block `l_v`, a
    stop-gradient target. Returns `fm`, and `align`, `hn`, `hinge` only when their weight is non-zero
    (a switched-off term is not computed), and `total` = fm + λ_a·align + λ_h·hn + λ_hinge·hinge.
    Negatives (`hn_negatives_per_step` of the K per sample), normalised as the expert is (and clipped to
    |z| ≤ `hn_clip_z` when it is > 0), are noised with the expert's σ and ε (σ-matched) and run with it up to the
    alignment block only.
    """
    if not loss_cfg.hn_clip_z >= 0:
        raise ValueError(f"loss.hn_clip_z must be ≥ 0 (0 = off), got {loss_cfg.hn_clip_z!r}")
    use_align = loss_cfg.lambda_align > 0
    use_hn = loss_cfg.lambda_hn > 0
    use_hinge = loss_cfg.lambda_hinge > 0 and loss_cfg.hn_hinge_margin > 0
    if (use_hn or use_hinge) and negatives is None:
        raise ValueError("lambda_hn / the hinge are on but no negatives were given")
    if (use_align or use_hn) and video_target is None:
        raise ValueError("lambda_align / lambda_hn are on but no video_target was given")
    if video_target is not None and not (
        (video_target.ndim == 2 and video_target.shape[0] == poses.shape[0])
        or (video_target.ndim == 3 and video_target.shape[:2] == poses.shape[:2])
    ):
        raise ValueError(
            f"video_target: expected (B, D_video) or (B, {poses.shape[1]}, D_video) for poses "
            f"{tuple(poses.shape)}, got {tuple(video_target.shape)}"
        )
    if negatives is not None and neg_mask is None:
        neg_mask = torch.ones(negatives.shape[:2], dtype=torch.bool, device=negatives.device)

    b = poses.shape[0]
    device = poses.device
    x0 = model.normalize(poses, ego_status)  # (B, N, P)
    sigma = sample_sigmas(b, generator, loss_cfg.logit_mean, loss_cfg.logit_std, loss_cfg.shift, device)  # (B,)
    eps = torch.randn(x0.shape, generator=generator).to(device=device, dtype=x0.dtype)  # (B, N, P)
    s = sigma[:, None, None].to(x0.dtype)
    x_t = (1 - s) * x0 + s * eps  # (B, N, P)

    if use_hn:
        # Negatives are noised with the expert's σ and ε and run with it, up to the alignment block only.
        negatives, neg_mask = select_negatives(negatives, neg_mask, loss_cfg.hn_negatives_per_step, generator)
        neg0 = model.normalize(negatives, ego_status[:, None])  # (B, K, N, P)
        if loss_cfg.hn_clip_z > 0:  # into the range the network sees the expert in
            neg0 = neg0.clamp(-loss_cfg.hn_clip_z, loss_cfg.hn_clip_z)
        neg_t = (1 - s[:, None]) * neg0 + s[:, None] * eps[:, None]  # (B, K, N, P)
        out, neg_pooled = model.forward_with_negatives(x_t, neg_t, sigma, video_hidden_states, ego_status, command)
    else:
        out = model(x_t, sigma, video_hidden_states, ego_status, command, return_features=use_align)
    v = out.sample  # (B, N, P) expert velocity

    terms = {"fm": trajectory_flow_loss(v, eps - x0).mean()}
    total = terms["fm"]
    if use_align:
        teacher = video_target if video_target.ndim == 3 else video_target[:, None].expand_as(out.projected)
        terms["align"] = alignment_loss(out.projected, teacher).mean()
        total = total + loss_cfg.lambda_align * terms["align"]
    if use_hn:
        z_pos = model.project(out.pooled)  # (B, D_video)
        z_neg = model.project(neg_pooled)  # (B, K, D_video)
        anchor = _pooled_target(video_target).detach()  # (B, D_video)
        hn = hard_negative_loss(anchor, z_pos, z_neg, loss_cfg.hn_temperature, mask=neg_mask)
        terms["hn"] = hn.mean()
        total = total + loss_cfg.lambda_hn * terms["hn"]
    if use_hinge:
        pred_x0 = model.denormalize(x_t - s * v, ego_status)  # (B, N, P) raw, same units as the margin
        hinge = hinge_repulsion_loss(pred_x0, negatives, loss_cfg.hn_hinge_margin, mask=neg_mask)
        terms["hinge"] = hinge.mean()
        total = total + loss_cfg.lambda_hinge * terms["hinge"]
    terms["total"] = total
    return terms
