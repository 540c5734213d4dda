"""Action DiT: shapes, zero init, normalisation, batch folding, checkpoints, sampling."""
from __future__ import annotations

import pytest
import torch

from reworld.config import ActionConfig
from reworld.models.action_dit import ActionDiT, build_action_dit, pose_statistics
from reworld.sampling import plan_sample

VIDEO_DIM, BLOCKS, TOKENS, B = 16, 2, 6, 2


def tiny_model(randomize: bool = False, **kwargs) -> ActionDiT:
    torch.manual_seed(0)
    args = dict(video_dim=VIDEO_DIM, num_video_blocks=BLOCKS, width=16, num_heads=2, align_block=1,
                pose_mean=[10.0, 0.5, 0.0], pose_scale=[10.0, 2.0, 0.3])
    model = ActionDiT(**{**args, **kwargs})
    if randomize:  # leave the zero init, so outputs depend on every input
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
    return model


def inputs(batch: int = B, video_batch: int | None = None, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    video = [torch.randn(video_batch or batch, TOKENS, VIDEO_DIM, generator=g) for _ in range(BLOCKS)]
    return dict(
        noisy_poses=torch.randn(batch, 8, 3, generator=g),
        sigma=torch.rand(batch, generator=g),
        video_hidden_states=video,
        ego_status=torch.randn(batch, 3, generator=g),
        command=torch.randint(0, 3, (batch,), generator=g),
    )


def test_forward_shapes_and_features():
    out = tiny_model()(**inputs(), return_features=True)
    assert out.sample.shape == (B, 8, 3)
    assert sorted(out.features) == [0, 1] and out.features[1].shape == (B, 8, 16)
    assert out.pooled.shape == (B, 16)
    assert out.projected.shape == (B, 8, VIDEO_DIM)
    plain = tiny_model()(**inputs())
    assert plain.features is None and plain.pooled is None and plain.projected is None


def test_output_is_zero_at_initialisation():
    out = tiny_model()(**inputs())
    assert torch.count_nonzero(out.sample) == 0


def test_video_batch_folding_matches_repeated_features():
    model = tiny_model(randomize=True)
    r = 3
    x = inputs(batch=B * r, video_batch=B)
    folded = model(**x, return_features=True)
    repeated = dict(x, video_hidden_states=[f.repeat_interleave(r, dim=0) for f in x["video_hidden_states"]])
    expected = model(**repeated, return_features=True)
    torch.testing.assert_close(folded.sample, expected.sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded.projected, expected.projected, rtol=1e-5, atol=1e-5)
    # and sample i really reads video sample i // r
    swapped = dict(x, video_hidden_states=[f.flip(0) for f in x["video_hidden_states"]])
    assert not torch.allclose(model(**swapped).sample[:r], folded.sample[:r])


def test_shape_errors_name_the_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="video_hidden_states"):
        model(**inputs(batch=3, video_batch=2))
    with pytest.raises(ValueError, match="expected 2 video hidden-state"):
        model(**dict(inputs(), video_hidden_states=inputs()["video_hidden_states"][:1]))
    with pytest.raises(ValueError, match="align_block"):
        tiny_model(align_block=2)


def test_normalise_round_trip_and_statistics():
    g = torch.Generator().manual_seed(0)
    trajs = torch.randn(20, 8, 3, generator=g) * torch.tensor([15.0, 3.0, 0.4]) + torch.tensor([20.0, 0.0, 0.0])
    mean, scale = pose_statistics(trajs)
    model = tiny_model(pose_mean=mean, pose_scale=scale)
    x = model.normalize(trajs)
    assert x.abs().max() <= 1.0 + 1e-5 and x.abs().max() > 0.99
    torch.testing.assert_close(model.denormalize(x), trajs, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = tiny_model(randomize=True)
    x = inputs()
    expected = model(**x, return_features=True)
    try:
        from reworld.models.layers import load_model_strict, save_model_atomic
    except ImportError:  # the shared helpers are optional for this model
        model.save_pretrained(tmp_path / "action")
        loaded = ActionDiT.from_pretrained(tmp_path / "action")
    else:
        save_model_atomic(model, tmp_path / "action")
        loaded = load_model_strict(ActionDiT, tmp_path / "action")
    assert loaded.config.pose_mean == [10.0, 0.5, 0.0] and loaded.config.pose_scale == [10.0, 2.0, 0.3]
    got = loaded(**x, return_features=True)
    torch.testing.assert_close(got.sample, expected.sample, rtol=0, atol=0)
    torch.testing.assert_close(got.projected, expected.projected, rtol=0, atol=0)
    torch.testing.assert_close(loaded.denormalize(x["noisy_poses"]), model.denormalize(x["noisy_poses"]))


def test_build_from_config():
    model = build_action_dit(ActionConfig(width=16, num_heads=2), video_dim=VIDEO_DIM, num_video_blocks=BLOCKS)
    assert model.config.width == 16 and len(model.blocks) == BLOCKS


def test_plan_sample_deterministic_and_shaped():
    model = tiny_model(randomize=True)
    x = inputs()
    args = (model, x["video_hidden_states"], x["ego_status"], x["command"])
    a = plan_sample(*args, steps=3, num_samples=4, generator=torch.Generator().manual_seed(7))
    b = plan_sample(*args, steps=3, num_samples=4, generator=torch.Generator().manual_seed(7))
    c = plan_sample(*args, steps=3, num_samples=4, generator=torch.Generator().manual_seed(8))
    assert a.shape == (B, 4, 8, 3) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="no guidance branch"):
        plan_sample(*args, steps=3, guidance=1.5)


def test_plan_sample_integrates_a_known_velocity():
    """With a model whose velocity is ε − x0 for a fixed x0, Euler from pure noise lands on x0."""
    model = tiny_model()
    target = torch.tensor([0.5, -0.25, 0.1]).expand(8, 3)

    def velocity(noisy_poses, sigma, *args, **kwargs):  # x_t = (1−σ)x0 + σε ⇒ v = (x_t − x0)/σ
        from reworld.models.action_dit import ActionDiTOutput
        return ActionDiTOutput(sample=(noisy_poses - target) / sigma[:, None, None])

    model.forward = velocity
    x = inputs()
    out = plan_sample(model, x["video_hidden_states"], x["ego_status"], x["command"], steps=5,
                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 0], model.denormalize(target).expand(B, 8, 3), rtol=1e-5, atol=1e-5)


def test_plan_sample_walks_the_grid_of_its_training_shift():
    """The planner steps on flow_sigmas(steps, shift), the σ its training drew (loss.shift): at world4s's shift 6
    its last step starts at σ ≈ 0.4, where it was trained, not at the unshifted grid's 0.1, where it hardly was."""
    from reworld.models.action_dit import ActionDiTOutput
    from reworld.schedulers import flow_sigmas

    model, seen = tiny_model(), []

    def velocity(noisy_poses, sigma, *args, **kwargs):
        seen.append(float(sigma[0]))
        return ActionDiTOutput(sample=torch.zeros_like(noisy_poses))

    model.forward = velocity
    x = inputs()
    plan_sample(model, x["video_hidden_states"], x["ego_status"], x["command"], steps=10, shift=6.0,
                generator=torch.Generator().manual_seed(0))
    assert seen == pytest.approx(flow_sigmas(10, 6.0)[:-1]) and seen[-1] > 0.35
    seen.clear()
    plan_sample(model, x["video_hidden_states"], x["ego_status"], x["command"], steps=10,
                generator=torch.Generator().manual_seed(0))
    assert seen == pytest.approx(flow_sigmas(10)[:-1]) and seen[-1] == pytest.approx(0.1)


def test_constant_velocity_anchor_and_per_waypoint_statistics():
    """With the anchor, the constant-velocity trajectory is the residual 0, and per-waypoint statistics
    make every waypoint's residuals span [−1, 1] however small they are near t = 0."""
    from reworld.models.action_dit import anchor_trajectory

    g = torch.Generator().manual_seed(0)
    ego = torch.rand(30, 3, generator=g) * torch.tensor([12.0, 1.0, 0.2])
    t = 0.5 * torch.arange(1, 9)
    cv = torch.zeros(30, 8, 3)
    cv[..., 0] = ego[:, :1] * t
    torch.testing.assert_close(anchor_trajectory(ego, 8, 3, 0.5, "constant_velocity"), cv)
    # residuals that grow with t (as accelerations do): 5 cm at 0.5 s, 3 m at 4 s
    residual = torch.randn(30, 8, 3, generator=g) * torch.linspace(0.05, 3.0, 8)[:, None]
    trajs = cv + residual
    mean, scale = pose_statistics(residual, per_waypoint=True)
    assert torch.tensor(scale).shape == (8, 3) and scale[0][0] < 0.3 < 3.0 < scale[-1][0]
    model = tiny_model(pose_mean=mean, pose_scale=scale, anchor="constant_velocity")
    x = model.normalize(trajs, ego)
    per_waypoint_max = x.abs().amax(dim=(0, 2))  # (8,)
    assert (per_waypoint_max <= 1 + 1e-5).all() and (per_waypoint_max > 0.99).all()
    torch.testing.assert_close(model.denormalize(x, ego), trajs, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pass ego_status"):
        model.normalize(trajs)
    with pytest.raises(ValueError, match="unknown anchor"):
        tiny_model(anchor="ballistic")
    with pytest.raises(ValueError, match="pose_mean needs"):
        tiny_model(pose_mean=[[0.0] * 3] * 7)


def test_forward_with_negatives_equals_separate_passes():
    """The negatives' short path (with the expert up to the alignment block) gives exactly the expert's
    `forward` output and the negatives' `forward(...).pooled`."""
    model = tiny_model(randomize=True, align_block=0)
    x = inputs()
    k = 3
    negs = torch.randn(B, k, 8, 3, generator=torch.Generator().manual_seed(5))
    out, neg_pooled = model.forward_with_negatives(x["noisy_poses"], negs, x["sigma"], x["video_hidden_states"],
                                                   x["ego_status"], x["command"])
    expected = model(**x, return_features=True)
    for name in ("sample", "pooled", "projected"):
        torch.testing.assert_close(getattr(out, name), getattr(expected, name), rtol=1e-5, atol=1e-6)
    rep = {n: x[n].repeat_interleave(k, dim=0) for n in ("sigma", "ego_status", "command")}
    separate = model(negs.flatten(0, 1), video_hidden_states=x["video_hidden_states"], return_features=True, **rep)
    torch.testing.assert_close(neg_pooled, separate.pooled.unflatten(0, (B, k)), rtol=1e-5, atol=1e-6)
