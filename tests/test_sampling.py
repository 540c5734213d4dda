"""The Euler sampler with intermediate-supervised guidance, on a tiny real Video DiT."""
import pytest
import torch

from reworld.models.video_dit import VideoCond, VideoDiT
from reworld.sampling import SamplingStopped, sample_future
from reworld.schedulers import flow_sigmas

STEPS = 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VideoDiT(in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8, head_blocks=(0,),
                 num_cond_tokens=2).eval()
    with torch.no_grad():  # as after training: heads and conditioning tokens that matter
        for p in m.heads.parameters():
            p.normal_(std=0.1)
        m.cond.command.weight.normal_(std=1.0)
    return m


@pytest.fixture()
def context():
    g = torch.Generator().manual_seed(5)
    latents = torch.randn(2, 4, 2, 4, 4, generator=g)
    cond = VideoCond(command=torch.tensor([0, 2]), ego_status=torch.randn(2, 3, generator=g))
    return latents, cond


def sample(model, context, seed=0, **kwargs):
    latents, cond = context
    kwargs.setdefault("steps", STEPS)
    return sample_future(model, latents, cond, n_future=1, generator=torch.Generator().manual_seed(seed), **kwargs)


def reference_euler(model, latents, cond, seed, steps):
    """Plain flow-matching Euler, written independently of the library loop."""
    x = torch.randn((2, 4, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    with torch.no_grad():
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = model(torch.cat([latents, x], 2), torch.full((2,), s), cond, 2).sample[:, :, 2:]
            x = x + (s_next - s) * v
    return x


def test_deterministic_per_seed(model, context):
    a, b, c = sample(model, context, 0), sample(model, context, 0), sample(model, context, 1)
    assert torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.latents, c.latents)


def test_w1_is_exactly_the_unguided_sampler(model, context):
    latents, cond = context
    ref = reference_euler(model, latents, cond, seed=0, steps=STEPS)
    assert torch.equal(sample(model, context, guidance=1.0).future, ref)
    assert torch.equal(sample(model, context, guidance=1.0, record=True).future, ref)
    # guidance outside its σ interval is no guidance at all
    assert torch.equal(sample(model, context, guidance=1.4, guidance_interval=(2.0, 3.0)).future, ref)
    assert not torch.equal(sample(model, context, guidance=1.4).future, ref)


def test_one_guided_step_follows_the_formula(model, context):
    latents, cond = context
    w = 1.7
    out = sample(model, context, guidance=w, steps=1)
    x = torch.randn((2, 4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        o = model(torch.cat([latents, x], 2), torch.ones(2), cond, 2, return_heads=True)
    v_f, v_i = o.sample[:, :, 2:], o.head_samples[0][:, :, 2:]
    torch.testing.assert_close(out.future, x - (v_i + w * (v_f - v_i)), rtol=0, atol=1e-6)


def test_guidance_interval_selects_steps(model, context):
    result = sample(model, context, guidance=1.4, guidance_interval=(0.3, 0.8), record=True)
    assert [r.guided for r in result.record] == [False, True, True, False]  # σ = 1, .75, .5, .25


def test_context_latents_are_kept_exactly(model, context):
    latents, _ = context
    result = sample(model, context, guidance=1.5)
    assert result.latents.shape == (2, 4, 3, 4, 4)
    assert torch.equal(result.latents[:, :, :2], latents)


def test_command_changes_the_sample(model, context):
    latents, cond = context
    other = VideoCond(command=torch.tensor([1, 1]), ego_status=cond.ego_status)
    a = sample(model, context)
    b = sample(model, (latents, other))
    assert (a.future - b.future).abs().max() > 1e-3


def test_command_guidance_contrasts_with_the_other_commands(model, context):
    """s = 0 is bitwise the plain sampler; one step at s follows v_f + s (v_f − mean of the other commands' v_f), the
    other commands being each sample's own two others."""
    latents, cond = context
    assert torch.equal(sample(model, context, command_guidance=0.0).future, sample(model, context).future)
    s = 2.5
    out = sample(model, context, command_guidance=s, steps=1)
    x = torch.randn((2, 4, 1, 4, 4), generator=torch.Generator().manual_seed(0))

    def v(commands):
        c = VideoCond(command=torch.tensor(commands), ego_status=cond.ego_status)
        with torch.no_grad():
            return model(torch.cat([latents, x], 2), torch.ones(2), c, 2).sample[:, :, 2:]

    v_f = v([0, 2])  # the context's commands: left, right
    v_other = (v([1, 0]) + v([2, 1])) / 2  # left's others: straight, right; right's: left, straight
    torch.testing.assert_close(out.future, x - (v_f + s * (v_f - v_other)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="command_guidance must be ≥ 0"):
        sample(model, context, command_guidance=-1.0)


def test_record_and_decoded_previews(model, context):
    calls = []

    def decode_fn(x):
        calls.append(tuple(x.shape))
        return x.mean()

    result = sample(model, context, guidance=1.4, record=True, decode_fn=decode_fn)
    assert len(result.record) == STEPS
    assert [r.sigma for r in result.record] == flow_sigmas(STEPS)[:-1]
    first = result.record[0]
    assert first.v_final.shape == (2, 4, 1, 4, 4) and sorted(first.v_heads) == [0]
    assert first.v_final.device.type == "cpu"
    # at σ = 1 the x0 preview is the noise minus the velocity
    x = torch.randn((2, 4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(first.x0_final, x - first.v_final)
    torch.testing.assert_close(first.x0_heads[0], x - first.v_heads[0])
    assert set(first.decoded) == {"final", "head_0"}
    assert calls == [(2, 4, 3, 4, 4)] * (2 * STEPS)


def test_record_lens_keeps_every_block_and_does_not_change_the_sample(model, context):
    plain = sample(model, context, guidance=1.4)
    result = sample(model, context, guidance=1.4, record=True, record_lens=True)
    torch.testing.assert_close(result.latents, plain.latents, rtol=0, atol=0)
    n_blocks = len(model.transformer.transformer_blocks)
    for r in result.record:
        assert sorted(r.v_lens) == list(range(n_blocks)) and r.v_lens[0].shape == r.v_final.shape
        torch.testing.assert_close(r.v_lens[n_blocks - 1], r.v_final, rtol=0, atol=0)
        torch.testing.assert_close(r.x_t - r.sigma * r.v_final, r.x0_final)
    assert sample(model, context, record=True).record[0].v_lens == {}
    with pytest.raises(ValueError, match="record_lens needs record"):
        sample(model, context, record_lens=True)


def test_stop_and_progress(model, context):
    seen = []
    with pytest.raises(SamplingStopped) as info:
        sample(model, context, callback=lambda i, n, s: seen.append((i, n, s)), should_stop=lambda: len(seen) >= 2)
    assert info.value.steps_done == 2
    assert seen == [(1, STEPS, 0.75), (2, STEPS, 0.5)]


def test_errors_at_the_boundary(model, context):
    with pytest.raises(ValueError, match="head"):
        sample(model, context, guidance=1.4, guidance_head=1)
    bare = VideoDiT(in_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=8, head_blocks=()).eval()
    with pytest.raises(ValueError, match="intermediate velocity head"):
        sample(bare, context, guidance=1.4)


def test_sigma_schedule():
    assert flow_sigmas(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = flow_sigmas(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0
    assert all(s > p for s, p in zip(shifted[1:-1], [0.75, 0.5, 0.25]))
    torch.testing.assert_close(torch.tensor(shifted[2]), torch.tensor(3 * 0.5 / (1 + 2 * 0.5)))


def test_ltx_schedule_matches_diffusers_scheduler_and_paper_config():
    """LTX-Video's schedule (dynamic shifting from the token count, `shift_terminal` 0.1): `flow_sigmas` with
    `dynamic_shift(tokens)` and the terminal gives diffusers' FlowMatchEulerDiscreteScheduler's grid as LTXPipeline
    sets it; the sampled result walks that grid; configs/paper.yaml carries the shift of its own token count."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    from reworld.config import load_config
    from reworld.schedulers import dynamic_shift

    ltx = dict(base_image_seq_len=1024, max_image_seq_len=4096, base_shift=0.95, max_shift=2.05)
    for tokens, steps in [(512, 8), (512, 40), (3000, 20)]:
        sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift_terminal=0.1, **ltx)
        # LTXPipeline's `calculate_shift` (its module needs transformers, which this stack does not install)
        m = (ltx["max_shift"] - ltx["base_shift"]) / (ltx["max_image_seq_len"] - ltx["base_image_seq_len"])
        mu = tokens * m + ltx["base_shift"] - m * ltx["base_image_seq_len"]
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu)
        ours = flow_sigmas(steps, dynamic_shift(tokens), terminal=0.1)
        np.testing.assert_allclose(ours, sched.sigmas.double().numpy(), atol=1e-6)
        assert ours[-2] == pytest.approx(0.1) and ours[-1] == 0.0
    assert flow_sigmas(1, 2.0, terminal=0.1) == [1.0, 0.0]
    with pytest.raises(ValueError, match="shift_terminal"):
        flow_sigmas(4, 2.0, terminal=1.0)

    cfg = load_config("configs/paper.yaml")
    d = cfg.data
    frames = (d.context_frames + d.future_frames - 1) // 8 + 1  # LTX-Video's VAE: 8× in time, 32× in space
    tokens = frames * (d.image_height // 32) * (d.image_width // 32) // cfg.video.patch_size ** 2
    assert tokens == 512
    assert cfg.loss.shift == pytest.approx(dynamic_shift(tokens), abs=1e-4) and cfg.loss.shift_terminal == 0.1


def test_the_schedule_of_a_pretrained_folder_is_read_from_its_scheduler(tmp_path):
    """`ltx_schedule` reads `scheduler/scheduler_config.json` beside a component folder (or in a pipeline folder) as
    LTX-Video ships it: at paper.yaml's 512 tokens its shift is paper.yaml's; a fixed-shift scheduler gives its shift;
    `schedule_mismatch` is silent when a config carries that schedule and names the values when it does not."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from reworld.config import load_config
    from reworld.schedulers.flow_match import dynamic_shift, ltx_schedule, schedule_mismatch

    ltx = tmp_path / "LTX-Video"
    FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift_terminal=0.1, base_image_seq_len=1024,
                                    max_image_seq_len=4096, base_shift=0.95, max_shift=2.05).save_pretrained(
        ltx / "scheduler")
    (ltx / "transformer").mkdir()
    paper = load_config("configs/paper.yaml").loss
    for folder in (ltx, ltx / "transformer"):
        shift, terminal, path = ltx_schedule(folder, 512)
        assert shift == pytest.approx(paper.shift, abs=1e-4) and terminal == 0.1
        assert path == ltx / "scheduler" / "scheduler_config.json"
        assert schedule_mismatch(paper.shift, paper.shift_terminal, folder, 512) is None
    assert ltx_schedule(ltx, 3000)[0] == pytest.approx(dynamic_shift(3000))
    note = schedule_mismatch(paper.shift, paper.shift_terminal, ltx / "transformer", 2048)
    assert note and f"{dynamic_shift(2048):.4f}" in note and "2048 tokens" in note
    assert "shift_terminal 0.1" in schedule_mismatch(paper.shift, None, ltx, 512)
    fixed = tmp_path / "sd3"
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(fixed / "scheduler")
    assert ltx_schedule(fixed, 4096)[:2] == (3.0, None) and schedule_mismatch(3.0, None, fixed, 4096) is None
    assert ltx_schedule(tmp_path / "nothing", 512) is None and schedule_mismatch(1.0, None, tmp_path, 512) is None
    broken = tmp_path / "broken"
    (broken / "scheduler").mkdir(parents=True)
    (broken / "scheduler" / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable scheduler config"):
        ltx_schedule(broken, 512)
    assert "not checked" in schedule_mismatch(1.0, None, broken, 512)


def test_sampler_walks_the_terminal_stretched_grid(model, context):
    result = sample(model, context, shift=2.0, shift_terminal=0.1, record=True)
    assert [r.sigma for r in result.record] == flow_sigmas(STEPS, 2.0, 0.1)[:-1]


def test_motion_guidance_contrasts_with_the_model_without_its_fed_back_poses():
    """VideoJAM's Inner-Guidance on a feedback model (docs/world4s.md, E17): s_m = 0 is bitwise the plain sampler; one
    step at s_m follows v_f + s_m (v_f − v_f without the feedback); `motion_input` replaces the head's reading in
    every pass that feeds poses; a model without the feedback refuses both."""
    torch.manual_seed(0)
    m = VideoDiT(in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8, head_blocks=(0,),
                 num_cond_tokens=2, motion_block=0, motion_frames=1, motion_feedback=True).eval()
    with torch.no_grad():
        for p in (*m.motion_head.parameters(), *m.motion_embed.parameters()):
            p.normal_(std=0.3)
    g = torch.Generator().manual_seed(5)
    latents = torch.randn(2, 4, 2, 4, 4, generator=g)
    cond = VideoCond(command=torch.tensor([0, 2]), ego_status=torch.randn(2, 3, generator=g))
    context = (latents, cond)
    assert torch.equal(sample(m, context, motion_guidance=0.0).future, sample(m, context).future)
    x = torch.randn((2, 4, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    full = torch.cat([latents, x], 2)
    poses = torch.tensor([[[1.0, -0.5, 0.2]], [[-1.0, 0.5, 0.0]]])
    for fed in ({}, {"motion_input": poses}):
        s = 1.5
        out = sample(m, context, motion_guidance=s, steps=1, **fed)
        with torch.no_grad():
            v_f = m(full, torch.ones(2), cond, 2, **fed).sample[:, :, 2:]
            v_null = m(full, torch.ones(2), cond, 2, motion_null=True).sample[:, :, 2:]
        assert (v_f - v_null).abs().max() > 1e-3
        torch.testing.assert_close(out.future, x - (v_f + s * (v_f - v_null)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="motion_guidance must be ≥ 0"):
        sample(m, context, motion_guidance=-1.0)
    plain = VideoDiT(in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8, head_blocks=(0,),
                     num_cond_tokens=2).eval()
    with pytest.raises(ValueError, match="motion_feedback"):
        sample(plain, context, motion_guidance=1.0)
    with pytest.raises(ValueError, match="motion_feedback"):
        sample(plain, context, motion_input=poses)
