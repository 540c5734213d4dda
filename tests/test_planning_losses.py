"""Stage-2 planner losses: known answers, switches, gradient paths, a short fit."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from reworld.config import LossConfig
from reworld.losses.planning import (
    alignment_loss,
    hard_negative_loss,
    hinge_repulsion_loss,
    planner_training_losses,
    trajectory_flow_loss,
)
from reworld.models.action_dit import ActionDiT

VIDEO_DIM, B, K = 16, 2, 3


def test_trajectory_flow_loss_known_answer():
    pred = torch.zeros(2, 8, 3)
    target = torch.ones(2, 8, 3)
    target[1] *= 2
    torch.testing.assert_close(trajectory_flow_loss(pred, target), torch.tensor([1.0, 4.0]))


def test_alignment_identical_and_orthogonal():
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(alignment_loss(x, x.clone()), torch.full((3,), -1.0))
    a = torch.tensor([[1.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 2.0, 0.0]])
    assert alignment_loss(a, b).abs().item() < 1e-6
    with pytest.raises(ValueError):
        alignment_loss(torch.randn(2, 4, 8), torch.randn(2, 8))


def test_alignment_teacher_gets_no_gradient():
    student = torch.randn(2, 4, 8, requires_grad=True)
    teacher = torch.randn(2, 4, 8, requires_grad=True)
    alignment_loss(student, teacher).sum().backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_hard_negative_known_answers():
    anchor = torch.randn(4, 8)
    negatives = -anchor[:, None].expand(4, K, 8)
    obvious = hard_negative_loss(anchor, anchor * 3.0, negatives, temperature=0.1)
    assert obvious.max().item() < 1e-6
    same = anchor[:, None].expand(4, K, 8)
    torch.testing.assert_close(hard_negative_loss(anchor, anchor, same), torch.full((4,), math.log(K + 1)))
    mask = torch.tensor([[True, False, True]] * 4)
    torch.testing.assert_close(hard_negative_loss(anchor, anchor, same, mask=mask), torch.full((4,), math.log(3)))
    none = torch.zeros(4, K, dtype=torch.bool)
    torch.testing.assert_close(hard_negative_loss(anchor, anchor, same, mask=none), torch.zeros(4))


def test_hinge_repulsion_known_answers():
    pred = torch.zeros(1, 8, 3)
    far = torch.full((1, 2, 8, 3), 5.0)
    assert hinge_repulsion_loss(pred, far, margin=1.0).item() == 0.0
    near = torch.cat([torch.full((1, 1, 8, 3), 0.25), torch.full((1, 1, 8, 3), 5.0)], dim=1)
    torch.testing.assert_close(hinge_repulsion_loss(pred, near, margin=1.0), torch.tensor([0.375]))
    only_near = torch.tensor([[True, False]])
    torch.testing.assert_close(hinge_repulsion_loss(pred, near, margin=1.0, mask=only_near), torch.tensor([0.75]))


# planner_training_losses on a tiny real model

def tiny_model() -> ActionDiT:
    torch.manual_seed(0)
    return ActionDiT(video_dim=VIDEO_DIM, num_video_blocks=2, width=16, num_heads=2, align_block=1,
                     pose_mean=[10.0, 0.0, 0.0], pose_scale=[10.0, 2.0, 0.5])


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    poses = torch.cumsum(torch.rand(B, 8, 3, generator=g), dim=1)
    return dict(
        video_hidden_states=[torch.randn(B, 6, VIDEO_DIM, generator=g) for _ in range(2)],
        poses=poses,
        ego_status=torch.randn(B, 3, generator=g),
        command=torch.randint(0, 3, (B,), generator=g),
        negatives=poses[:, None] + torch.randn(B, K, 8, 3, generator=g),
        neg_mask=torch.tensor([[True, True, False], [True, False, True]]),
        video_target=torch.randn(B, VIDEO_DIM, generator=g),
    )


FULL = LossConfig(lambda_align=0.5, lambda_hn=0.2, hn_hinge_margin=1.0, lambda_hinge=0.3)


def test_all_terms_and_weighted_total():
    model = tiny_model()
    terms = planner_training_losses(model, **batch(), loss_cfg=FULL, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"fm", "align", "hn", "hinge", "total"}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    expected = terms["fm"] + 0.5 * terms["align"] + 0.2 * terms["hn"] + 0.3 * terms["hinge"]
    torch.testing.assert_close(terms["total"], expected)


@pytest.mark.parametrize(
    "changes, absent",
    [
        ({"lambda_align": 0.0}, {"align"}),
        ({"lambda_hn": 0.0}, {"hn"}),
        ({"hn_hinge_margin": 0.0}, {"hinge"}),
        ({"lambda_hinge": 0.0}, {"hinge"}),
        ({"lambda_align": 0.0, "lambda_hn": 0.0, "lambda_hinge": 0.0}, {"align", "hn", "hinge"}),
    ],
)
def test_switches_remove_terms(changes, absent):
    cfg = dataclasses.replace(FULL, **changes)
    g = torch.Generator().manual_seed(0)
    terms = planner_training_losses(tiny_model(), **batch(), loss_cfg=cfg, generator=g)
    assert set(terms) == {"fm", "align", "hn", "hinge", "total"} - absent


def test_vanilla_runs_without_negatives_or_target():
    cfg = dataclasses.replace(FULL, lambda_align=0.0, lambda_hn=0.0, hn_hinge_margin=0.0)
    b = dict(batch(), negatives=None, neg_mask=None, video_target=None)
    terms = planner_training_losses(tiny_model(), **b, loss_cfg=cfg)
    torch.testing.assert_close(terms["total"], terms["fm"])
    with pytest.raises(ValueError, match="negatives"):
        planner_training_losses(tiny_model(), **b, loss_cfg=dataclasses.replace(cfg, lambda_hn=0.2))


def spied_model():
    """A tiny model whose `forward_with_negatives` records the noisy expert, negatives and σ it is given."""
    model = tiny_model()
    seen = {}
    fwd = model.forward_with_negatives

    def spy(noisy_poses, noisy_negatives, sigma, *args, **kwargs):
        seen.update(x=noisy_poses.detach(), neg=noisy_negatives.detach(), sigma=sigma.detach())
        return fwd(noisy_poses, noisy_negatives, sigma, *args, **kwargs)

    model.forward_with_negatives = spy
    return model, seen


def test_negatives_share_sigma_and_noise():
    model, seen = spied_model()
    b = batch()
    cfg = dataclasses.replace(FULL, hn_negatives_per_step=0)  # all K, in order
    planner_training_losses(model, **b, loss_cfg=cfg, generator=torch.Generator().manual_seed(0))
    s = seen["sigma"][:, None, None, None]
    # x_neg − x_exp = (1 − σ)(neg0 − x0): the noise cancels only when it is shared
    ego = b["ego_status"]
    diff = model.normalize(b["negatives"], ego[:, None]) - model.normalize(b["poses"], ego)[:, None]
    torch.testing.assert_close(seen["neg"] - seen["x"][:, None], (1 - s) * diff, rtol=1e-4, atol=1e-5)


def test_select_negatives_prefers_usable_ones():
    from reworld.losses.planning import select_negatives

    negs = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1, 1).expand(2, 6, 8, 3)
    mask = torch.tensor([[True, False, True, False, True, False], [False] * 5 + [True]])
    picked, m = select_negatives(negs, mask, 3, torch.Generator().manual_seed(0))
    assert picked.shape == (2, 3, 8, 3)
    assert sorted(picked[0, :, 0, 0].tolist()) == [0.0, 2.0, 4.0] and m[0].all()  # exactly the usable three
    assert picked[1, 0, 0, 0] == 11.0 and m[1].tolist() == [True, False, False]  # the one usable comes first
    same, m_all = select_negatives(negs, mask, 0)
    assert same is negs and m_all is mask


def test_projector_gets_gradient_through_student_only():
    model = tiny_model()
    b = batch()
    b["video_target"] = b["video_target"].clone().requires_grad_(True)
    align_only = LossConfig(lambda_align=0.5, lambda_hn=0.0, hn_hinge_margin=0.0)
    planner_training_losses(model, **b, loss_cfg=align_only)["total"].backward()
    assert b["video_target"].grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    model.zero_grad(set_to_none=True)
    fm_only = LossConfig(lambda_align=0.0, lambda_hn=0.0, hn_hinge_margin=0.0)
    planner_training_losses(model, **b, loss_cfg=fm_only)["total"].backward()
    assert all(p.grad is None for p in model.projector.parameters())


def test_a_few_steps_reduce_flow_loss():
    model = tiny_model()
    b = batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def fm() -> torch.Tensor:
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            return planner_training_losses(model, **b, loss_cfg=FULL, generator=g)["fm"]

    before = fm()
    for step in range(30):
        terms = planner_training_losses(model, **b, loss_cfg=FULL, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    assert fm() < 0.7 * before


def test_hinge_term_pushes_the_prediction():
    model = tiny_model()
    cfg = LossConfig(lambda_align=0.0, lambda_hn=0.0, hn_hinge_margin=100.0, lambda_hinge=1.0)
    terms = planner_training_losses(model, **batch(), loss_cfg=cfg, generator=torch.Generator().manual_seed(0))
    assert terms["hinge"] > 0
    terms["hinge"].backward()
    assert model.final.linear.weight.grad.abs().sum() > 0


def test_clipped_negatives_enter_within_the_range():
    """`hn_clip_z`: the negatives the network sees are the normalised ones clipped to |z| ≤ c (a negative inside the
    range is unchanged; one far outside sits on its edge), noised with the expert's σ and ε as before."""
    model, seen = spied_model()
    b = batch()
    b["negatives"] = b["negatives"].clone()
    b["negatives"][:, 0] *= 50.0  # far outside the expert's range
    cfg = dataclasses.replace(FULL, hn_negatives_per_step=0, hn_clip_z=3.0)
    planner_training_losses(model, **b, loss_cfg=cfg, generator=torch.Generator().manual_seed(0))
    s = seen["sigma"][:, None, None, None]
    ego = b["ego_status"]
    z = model.normalize(b["negatives"], ego[:, None])
    assert z[:, 0].abs().max() > 3.0  # the test's premise
    expected = (1 - s) * (z.clamp(-3.0, 3.0) - model.normalize(b["poses"], ego)[:, None])
    torch.testing.assert_close(seen["neg"] - seen["x"][:, None], expected, rtol=1e-4, atol=1e-5)
    off = dataclasses.replace(FULL, hn_negatives_per_step=0)
    planner_training_losses(model, **b, loss_cfg=off, generator=torch.Generator().manual_seed(0))
    assert (seen["neg"] - seen["x"][:, None]).abs().max() > 10.0  # unclipped: the magnitude gives it away
    with pytest.raises(ValueError, match="hn_clip_z"):
        planner_training_losses(model, **b, loss_cfg=dataclasses.replace(FULL, hn_clip_z=-1.0))
