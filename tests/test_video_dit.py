"""VAE helpers, Video DiT, strict checkpoints and the stage-1 losses, on tiny real configs."""
import dataclasses

import pytest
import torch
from diffusers import LTXVideoTransformer3DModel
from safetensors.torch import load_file, save_file

from reworld.config import DataConfig, LossConfig, VAEConfig, VideoConfig
from reworld.losses.flow import (
    flow_matching_loss,
    future_frame_mask,
    future_frame_weights,
    hold_context,
    intermediate_guidance_loss,
    video_training_losses,
)
from reworld.models.layers import CheckpointError, save_model_atomic
from reworld.schedulers import sample_sigmas
from reworld.models.vae import (
    build_vae,
    decode_latents,
    encode_frames,
    fit_latent_stats,
    latent_split,
    load_pretrained_vae,
    OneDNNConv3d,
    use_onednn_conv3d,
    vae_ratios,
)
from reworld.models.video_dit import VIDEO_DIT_PRESETS, VideoCond, VideoDiT, video_dit_from_config

TINY = dict(in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8, head_blocks=(0,),
            num_cond_tokens=2)
TINY_VAE = VAEConfig(block_out_channels=(8, 16, 16), latent_channels=4)


def tiny_model(seed: int = 0, **overrides) -> VideoDiT:
    torch.manual_seed(seed)
    return VideoDiT(**{**TINY, **overrides}).eval()


def inputs(b: int = 2, t: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(b, 4, t, 4, 4, generator=g)
    cond = VideoCond(command=torch.arange(b) % 3, ego_status=torch.randn(b, 3, generator=g))
    return latents, torch.rand(b, generator=g), cond


# --- VAE -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae(TINY_VAE).eval()


def test_vae_shapes_range_and_causal_split(vae):
    spatial, temporal = vae_ratios(TINY_VAE)
    assert (spatial, temporal) == (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (8, 4)
    frames = torch.rand(2, 9, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        latents = encode_frames(vae, frames)
        assert latents.shape == (2, 4, 3, 4, 8)
        decoded = decode_latents(vae, latents)
        assert decoded.shape == frames.shape
        assert decoded.min() >= -1 and decoded.max() <= 1
        # causal encoder: the 5 context frames alone give the same 2 context latent frames
        n_ctx, n_fut = latent_split(DataConfig(context_frames=5, future_frames=4), vae)
        assert (n_ctx, n_fut) == (2, 1)
        torch.testing.assert_close(encode_frames(vae, frames[:, :5]), latents[:, :, :n_ctx], rtol=0, atol=1e-5)


def test_latent_split_rejects_misaligned_frames(vae):
    assert latent_split(DataConfig(context_frames=9, future_frames=8), vae) == (3, 2)
    with pytest.raises(ValueError, match="context_frames=4"):
        latent_split(DataConfig(context_frames=4, future_frames=4), vae)
    with pytest.raises(ValueError, match="future_frames=3"):
        latent_split(DataConfig(context_frames=5, future_frames=3), vae)
    with pytest.raises(ValueError, match="1 \\+ k"):
        encode_frames(vae, torch.zeros(1, 8, 3, 32, 64))


def test_latent_stats_normalise_and_survive_save(vae, tmp_path):
    frames = torch.rand(2, 5, 3, 32, 64) * 2 - 1
    fitted = build_vae(TINY_VAE)
    fitted.load_state_dict(vae.state_dict())
    fit_latent_stats(fitted, frames)
    with torch.no_grad():
        z = encode_frames(fitted, frames)
    per_channel = z.transpose(0, 1).flatten(1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(4), atol=1e-4, rtol=0)
    save_model_atomic(fitted, tmp_path / "vae")
    loaded = load_pretrained_vae(tmp_path / "vae")
    torch.testing.assert_close(loaded.latents_std, fitted.latents_std, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(encode_frames(loaded, frames), z, rtol=0, atol=0)


def test_onednn_convolutions_decode_as_pytorch_does_and_leave_training_alone(tmp_path):
    torch.manual_seed(0)
    plain = build_vae(TINY_VAE).eval()
    fast = build_vae(TINY_VAE).eval()
    fast.load_state_dict(plain.state_dict())
    assert use_onednn_conv3d(fast) is fast
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(type(m) is OneDNNConv3d for m in convs)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    frames = torch.rand(1, 9, 3, 32, 64) * 2 - 1
    with torch.no_grad():
        z = encode_frames(plain, frames)
        torch.testing.assert_close(encode_frames(fast, frames), z, rtol=0, atol=1e-5)
        torch.testing.assert_close(decode_latents(fast, z), decode_latents(plain, z), rtol=0, atol=1e-5)
    if torch.backends.mkldnn.is_available():  # it is oneDNN that ran, not the fallback
        from torch.profiler import profile

        with torch.no_grad(), profile() as prof:
            decode_latents(fast, z)
        ops = {e.key for e in prof.key_averages()}
        assert "aten::mkldnn_convolution" in ops and "aten::slow_conv3d_forward" not in ops
    # a graph that needs gradients takes nn.Conv3d's own path: training is unchanged, gradients included
    if torch.backends.mkldnn.is_available():
        with profile() as prof:
            decode_latents(fast, encode_frames(fast, frames))
        assert "aten::mkldnn_convolution" not in {e.key for e in prof.key_averages()}
    for model in (plain, fast):
        model.zero_grad()
        decode_latents(model, encode_frames(model, frames)).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), fast.named_parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    # saved and reloaded, the weights are plain nn.Conv3d ones
    save_model_atomic(fast, tmp_path / "vae")
    reloaded = load_pretrained_vae(tmp_path / "vae")
    assert not any(type(m) is OneDNNConv3d for m in reloaded.modules())


def test_missing_vae_folder_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found|no config.json"):
        load_pretrained_vae(tmp_path / "nope")
    with pytest.raises(CheckpointError):
        build_vae(dataclasses.replace(TINY_VAE, pretrained=str(tmp_path / "nope")))


# --- Video DiT ---------------------------------------------------------------------------------------
def test_forward_equals_stock_ltx_with_per_token_timesteps():
    model = tiny_model()
    latents, sigma, cond = inputs()
    b, c, t, h, w = latents.shape
    with torch.no_grad():
        ours = model(latents, sigma, cond, n_context=2).sample
        packed = latents.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, c)
        timestep = (sigma[:, None] * 1000 * (torch.arange(t) >= 2)).repeat_interleave(h * w, dim=1)
        stock = model.transformer(
            hidden_states=packed, encoder_hidden_states=model.cond(cond.command, cond.ego_status),
            timestep=timestep, encoder_attention_mask=None, num_frames=t, height=h, width=w,
            rope_interpolation_scale=model.rope_scale,
        ).sample
    assert ours.shape == latents.shape
    torch.testing.assert_close(ours, stock.view(b, t, h, w, c).permute(0, 4, 1, 2, 3), rtol=0, atol=1e-5)


def test_patched_tokens_are_ltx_pipeline_packing_and_the_stock_transformer():
    """video.patch_size 2: latents packed exactly as diffusers' LTXPipeline packs them (`_pack_latents`), one token per
    2×2 latent pixels, through the stock LTX transformer built with that patch size (its RoPE scales the grid by it);
    the output and the heads unpack to the latents' layout, and hidden states have a quarter of the tokens."""
    model = tiny_model(patch_size=2)
    latents, sigma, cond = inputs()
    b, c, t, h, w = latents.shape
    packed = model.pack(latents)
    # LTXPipeline._pack_latents (diffusers/pipelines/ltx/pipeline_ltx.py; not importable without transformers):
    # (B, C, F/pt, pt, H/p, p, W/p, p) → permute (0, 2, 4, 6, 1, 3, 5, 7) → (B, F·H'·W', C·pt·p·p)
    ltx = latents.reshape(b, c, t, 1, h // 2, 2, w // 2, 2).permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)
    torch.testing.assert_close(packed, ltx, rtol=0, atol=0)
    torch.testing.assert_close(model._unpack(packed, t, h, w), latents, rtol=0, atol=0)
    assert model.transformer.config.patch_size == 2 and model.transformer.config.in_channels == c * 4
    with torch.no_grad():
        out = model(latents, sigma, cond, n_context=2, return_heads=True, return_hidden_states=[0])
        timestep = (sigma[:, None] * 1000 * (torch.arange(t) >= 2)).repeat_interleave(h * w // 4, dim=1)
        stock = model.transformer(
            hidden_states=packed, encoder_hidden_states=model.cond(cond.command, cond.ego_status),
            timestep=timestep, encoder_attention_mask=None, num_frames=t, height=h // 2, width=w // 2,
            rope_interpolation_scale=model.rope_scale,
        ).sample
    assert out.sample.shape == latents.shape and out.head_samples[0].shape == latents.shape
    torch.testing.assert_close(out.sample, model._unpack(stock, t, h, w), rtol=0, atol=1e-5)
    assert out.hidden_states[0].shape[1] == t * (h // 2) * (w // 2) and model.token_grid(h, w) == (2, 2)
    with pytest.raises(ValueError, match="2×2 patches"):
        model(torch.randn(1, c, t, 3, 4), sigma[:1], VideoCond(cond.command[:1], cond.ego_status[:1]), 2)


def test_outputs_only_on_request_and_heads_zero_at_init():
    model = tiny_model(head_blocks=(0, 1))
    latents, sigma, cond = inputs()
    with torch.no_grad():
        plain = model(latents, sigma, cond, 2)
        full = model(latents, sigma, cond, 2, return_heads=True, return_hidden_states=(1,))
    assert plain.head_samples is None and plain.hidden_states is None
    assert sorted(full.head_samples) == [0, 1]
    for v in full.head_samples.values():
        assert v.shape == latents.shape and torch.count_nonzero(v) == 0
    assert full.hidden_states[1].shape == (2, 3 * 4 * 4, 16)
    assert torch.equal(plain.sample, full.sample)
    with pytest.raises(ValueError, match="head_blocks"):
        VideoDiT(**{**TINY, "head_blocks": (2,)})


def test_lens_is_the_model_cut_after_each_block():
    """Diffusion Lens: the lens of block k is the same network with the blocks after k removed (its output layer
    on block k's hidden state); the last block's lens is the output itself; asked for only."""
    import copy

    model = tiny_model(patch_size=2)
    latents, sigma, cond = inputs()
    with torch.no_grad():
        out = model(latents, sigma, cond, 2, return_lens=True)
        assert model(latents, sigma, cond, 2).lens_samples is None
        assert sorted(out.lens_samples) == [0, 1] and torch.equal(out.lens_samples[1], out.sample)
        cut = copy.deepcopy(model)
        cut.transformer.transformer_blocks = cut.transformer.transformer_blocks[:1]
        torch.testing.assert_close(out.lens_samples[0], cut(latents, sigma, cond, 2).sample, rtol=0, atol=0)
    assert not torch.allclose(out.lens_samples[0], out.sample)


def test_last_context_concat_is_the_channel_concatenation_and_starts_as_the_plain_model(tmp_path):
    """`concat_last_context`: at initialisation the output is the plain model's (zero projection); once trained, the
    input layer equals LTX's proj_in on the tokens concatenated with the last context frame's tokens at the same
    position (Stable Video Diffusion's conditioning), so a future token reads that frame without attention; the flag is
    saved, loaded strictly and reached from the config."""
    plain, model = tiny_model(patch_size=2), tiny_model(patch_size=2, concat_last_context=True)
    assert sorted(set(model.state_dict()) - set(plain.state_dict())) == ["context_proj.bias", "context_proj.weight"]
    model.load_state_dict({**plain.state_dict(), **{k: v for k, v in model.state_dict().items() if "context" in k}})
    latents, sigma, cond = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(latents, sigma, cond, 2).sample, plain(latents, sigma, cond, 2).sample,
                                   rtol=0, atol=0)
        model.context_proj.weight.normal_(), model.context_proj.bias.normal_()
        wide = torch.nn.Linear(2 * 16, 16)  # proj_in over [x, c]: the channel concatenation
        wide.weight.copy_(torch.cat([plain.transformer.proj_in.weight, model.context_proj.weight], 1))
        wide.bias.copy_(plain.transformer.proj_in.bias + model.context_proj.bias)
        x, c = model.pack(latents), model.pack(latents[:, :, 1:2].expand_as(latents))
        seen = {}
        model.transformer.transformer_blocks[0].register_forward_pre_hook(
            lambda m, args, kw: seen.update(x=kw["hidden_states"]), with_kwargs=True)
        out = model(latents, sigma, cond, 2).sample
        torch.testing.assert_close(seen["x"], wide(torch.cat([x, c], -1)))
        changed = latents.clone()
        changed[:, :, 1] += 1.0  # the last context frame
        assert not torch.allclose(model(changed, sigma, cond, 2).sample, out)
        with pytest.raises(ValueError, match="at least one context"):
            model(latents, sigma, cond, 0)
    save_model_atomic(model, tmp_path / "dit")
    loaded = VideoDiT.from_pretrained(tmp_path / "dit")
    assert loaded.config.concat_last_context is True
    with torch.no_grad():
        assert torch.equal(loaded(latents, sigma, cond, 2).sample, out)
    built = video_dit_from_config(VideoConfig(num_layers=2, head_blocks=(1,), concat_last_context=True), in_channels=4)
    assert built.context_proj is not None and torch.count_nonzero(built.context_proj.weight) == 0


def test_future_residual_is_the_plain_network_on_the_residual_and_copies_the_last_frame_at_sigma_1(tmp_path):
    """`future_residual` (RVD's residual on the last context latent frame c): the same weights as the plain model, read
    on future frames x_t − (1 − σ) c, every velocity (final, heads, lens) − c there and the context's untouched; a
    network that returns its own input predicts x0 = x_t − σ v = c exactly at σ = 1 (the copy) and x_t itself at σ = 0;
    the flag is saved, loaded strictly and reached from the config."""
    plain, model = tiny_model(), tiny_model(future_residual=True)
    assert set(model.state_dict()) == set(plain.state_dict())  # a reparameterisation: no new weights
    model.load_state_dict(plain.state_dict())
    latents, _, cond = inputs(t=4)
    sigma = torch.tensor([0.3, 1.0])
    c = torch.zeros_like(latents)
    c[:, :, 2:] = latents[:, :, 1:2]  # n_context = 2: the last context frame on the two future frames
    with torch.no_grad():
        out = model(latents, sigma, cond, 2, return_heads=True, return_lens=True)
        ref = plain(latents - (1 - sigma).view(2, 1, 1, 1, 1) * c, sigma, cond, 2, return_heads=True, return_lens=True)
        torch.testing.assert_close(out.sample, ref.sample - c)
        torch.testing.assert_close(out.head_samples[0], ref.head_samples[0] - c)
        torch.testing.assert_close(out.lens_samples[0], ref.lens_samples[0] - c)
        assert torch.equal(out.sample[:, :, :2], ref.sample[:, :, :2])  # context frames: the plain model's outputs
        with pytest.raises(ValueError, match="at least one context"):
            model(latents, sigma, cond, 0)

        seen = {}  # a network whose output is its input (the tokens proj_in reads, unpacked)
        model.transformer.proj_in.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
        model._output_layer = lambda x, emb, t, h, w: model._unpack(seen["x"], t, h, w)
        for s in (1.0, 0.0):
            x_t = latents.clone()
            v = model(x_t, torch.tensor([s, s]), cond, 2).sample
            x0 = x_t - s * v
            torch.testing.assert_close(x0[:, :, 2:], (latents[:, :, 1:2] if s == 1.0 else x_t[:, :, 2:]).expand(
                -1, -1, 2, -1, -1))
    del model._output_layer
    save_model_atomic(model, tmp_path / "dit")
    loaded = VideoDiT.from_pretrained(tmp_path / "dit")
    assert loaded.config.future_residual is True
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents, sigma, cond, 2).sample, out.sample)
    assert video_dit_from_config(VideoConfig(num_layers=2, head_blocks=(1,), future_residual=True),
                                 in_channels=4).future_residual


def test_adaln_cond_is_added_to_the_embedded_timestep_and_starts_as_the_plain_model(tmp_path):
    """`adaln_cond` (DiT's class conditioning): new weights only in `cond_adaln`, zero outputs at initialisation (the
    plain model's output exactly); once trained, every block's modulation is LTX's linear(silu(emb(t) + e)) with
    e = command embedding + ego MLP, so the command changes the velocity even when the cross-attended tokens ignore
    it; the loss reaches the command embedding; the flag is saved, loaded strictly and reached from the config."""
    plain, model = tiny_model(), tiny_model(adaln_cond=True)
    assert {k.split(".")[0] for k in set(model.state_dict()) - set(plain.state_dict())} == {"cond_adaln"}
    model.load_state_dict({**plain.state_dict(), **{k: v for k, v in model.state_dict().items() if "cond_adaln" in k}})
    latents, sigma, cond = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(latents, sigma, cond, 2).sample, plain(latents, sigma, cond, 2).sample,
                                   rtol=0, atol=0)
    loss = model(latents, sigma, cond, 2).sample.square().mean()
    loss.backward()
    assert model.cond_adaln.command.weight.grad[cond.command].abs().sum() > 0  # the loss reaches the command

    with torch.no_grad():
        model.cond_adaln.command.weight.normal_(), model.cond_adaln.ego[2].weight.normal_()
        model.cond.command.weight.zero_()  # the cross-attended tokens no longer carry the command
        seen = {}
        model.transformer.transformer_blocks[0].register_forward_pre_hook(
            lambda m, args, kw: seen.update(temb=kw["temb"]), with_kwargs=True)
        out = model(latents, sigma, cond, 2).sample
        te, b, t = model.transformer.time_embed, 2, latents.shape[2]
        steps = sigma[:, None] * 1000.0 * (torch.arange(t) >= 2).float()[None]
        emb = te.emb(steps.flatten(), resolution=None, aspect_ratio=None, batch_size=b, hidden_dtype=torch.float32)
        e = model.cond_adaln.command(cond.command) + model.cond_adaln.ego(cond.ego_status)
        want = te.linear(te.silu(emb.view(b, t, -1) + e[:, None])).repeat_interleave(16, dim=1)  # 4 × 4 tokens a frame
        torch.testing.assert_close(seen["temb"], want)
        other = VideoCond(command=(cond.command + 1) % 3, ego_status=cond.ego_status)
        assert not torch.allclose(model(latents, sigma, other, 2).sample, out)
    save_model_atomic(model, tmp_path / "dit")
    loaded = VideoDiT.from_pretrained(tmp_path / "dit")
    assert loaded.config.adaln_cond is True
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents, sigma, cond, 2).sample, out)
    built = video_dit_from_config(VideoConfig(num_layers=2, head_blocks=(1,), adaln_cond=True), in_channels=4)
    assert built.cond_adaln is not None and torch.count_nonzero(built.cond_adaln.command.weight) == 0


def test_context_timestep_is_zero_whatever_sigma():
    """With every frame context, σ must not matter (all timesteps 0)."""
    model = tiny_model()
    latents, _, cond = inputs()
    with torch.no_grad():
        a = model(latents, torch.tensor([0.1, 0.2]), cond, n_context=3).sample
        b = model(latents, torch.tensor([0.9, 0.7]), cond, n_context=3).sample
        c = model(latents, torch.tensor([0.9, 0.7]), cond, n_context=2).sample
    assert torch.equal(a, b)
    assert not torch.allclose(b, c)


def test_save_load_round_trip_is_identical(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        for head in model.heads.values():
            head.proj.weight.normal_()
    latents, sigma, cond = inputs()
    save_model_atomic(model, tmp_path / "dit")
    save_model_atomic(model, tmp_path / "dit")  # overwrite in place
    assert sorted(p.name for p in (tmp_path / "dit").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["dit"]  # no temporary folder left behind
    loaded = VideoDiT.from_pretrained(tmp_path / "dit")
    assert tuple(loaded.config.head_blocks) == (0,)
    with torch.no_grad():
        a = model(latents, sigma, cond, 2, return_heads=True)
        b = loaded(latents, sigma, cond, 2, return_heads=True)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.head_samples[0], b.head_samples[0])


def _corrupt(folder, change):
    path = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    change(state)
    save_file(state, path)


def test_strict_loading_names_the_keys(tmp_path):
    save_model_atomic(tiny_model(), tmp_path / "dit")
    key = "heads.0.proj.weight"
    _corrupt(tmp_path / "dit", lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match="missing 1 key.*heads.0.proj.weight"):
        VideoDiT.from_pretrained(tmp_path / "dit")

    save_model_atomic(tiny_model(), tmp_path / "dit")
    _corrupt(tmp_path / "dit", lambda s: s.__setitem__("cond.base", torch.zeros(5, 5)))
    with pytest.raises(CheckpointError, match=r"wrong shape.*cond.base: checkpoint \(5, 5\)"):
        VideoDiT.from_pretrained(tmp_path / "dit")

    save_model_atomic(tiny_model(), tmp_path / "dit")
    _corrupt(tmp_path / "dit", lambda s: s.__setitem__("extra.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match="unexpected 1 key.*extra.weight"):
        VideoDiT.from_pretrained(tmp_path / "dit")

    with pytest.raises(CheckpointError, match="not found|no config.json"):
        VideoDiT.from_pretrained(tmp_path / "missing")


def test_paper_scale_preset_allocates_nothing():
    model = VideoDiT.from_preset("ltx-2b", meta=True)
    params = list(model.parameters())
    assert all(p.device.type == "meta" for p in params)
    n = sum(p.numel() for p in params)
    assert 1.5e9 < n < 2.5e9  # LTX-Video 2B
    assert model.config.num_layers == VIDEO_DIT_PRESETS["ltx-2b"]["num_layers"] == 28


def test_from_ltx_transformer_loads_weights_exactly(tmp_path):
    torch.manual_seed(3)
    ltx = LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        num_layers=3, caption_channels=12,
    )
    ltx.save_pretrained(tmp_path / "transformer")
    model = VideoDiT.from_ltx_transformer(tmp_path / "transformer", head_blocks=(1,), num_cond_tokens=3)
    assert model.config.num_layers == 3 and model.config.caption_channels == 12
    ours = model.transformer.state_dict()
    for k, v in ltx.state_dict().items():
        assert torch.equal(ours[k], v), k
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert torch.count_nonzero(model.heads["1"].proj.weight) == 0
    assert model.cond.base.abs().sum() > 0  # new parts initialised, not left empty
    latents, sigma, cond = inputs()
    with torch.no_grad():
        assert torch.isfinite(model(latents, sigma, cond, 2).sample).all()
    # The same path through the run config
    cfg = VideoConfig(pretrained=str(tmp_path / "transformer"), head_blocks=(0,), num_cond_tokens=2)
    assert tuple(video_dit_from_config(cfg, in_channels=4).config.head_blocks) == (0,)
    with pytest.raises(CheckpointError, match="VAE 8"):
        video_dit_from_config(cfg, in_channels=8)
    # A missing key in the LTX folder is an error, not a random weight
    _corrupt(tmp_path / "transformer", lambda s: s.pop("proj_in.weight"))
    with pytest.raises(CheckpointError, match="proj_in.weight"):
        VideoDiT.from_ltx_transformer(tmp_path / "transformer")
    with pytest.raises(CheckpointError, match="transformer/ subfolder"):
        VideoDiT.from_ltx_transformer(tmp_path)


def test_video_dit_from_config_default_shapes():
    model = video_dit_from_config(VideoConfig(num_layers=2, head_blocks=(1,)), in_channels=4)
    assert model.config.in_channels == 4 and list(model.heads) == ["1"]


# --- losses ------------------------------------------------------------------------------------------
def test_flow_matching_loss_known_answers():
    x = torch.randn(3, 4, 3, 2, 2)
    assert torch.equal(flow_matching_loss(x, x), torch.zeros(3))
    torch.testing.assert_close(flow_matching_loss(x + 2.0, x), torch.full((3,), 4.0))
    # an error on context frames only is invisible behind the future mask
    y = x.clone()
    y[:, :, :2] += 10.0
    mask = future_frame_mask(3, n_context=2)
    assert torch.equal(flow_matching_loss(y, x, mask), torch.zeros(3))
    y[:, :, 2] += 1.0
    torch.testing.assert_close(flow_matching_loss(y, x, mask), torch.ones(3))
    heads = {0: x + 1.0, 3: x + 2.0}
    torch.testing.assert_close(intermediate_guidance_loss(heads, x, mask), torch.full((3,), 5.0))


def test_future_frame_weights_known_answers():
    # 2 context + 4 future latent frames: uniform is the mask; linear weighs the k-th future frame k·2/5
    torch.testing.assert_close(future_frame_weights(6, 2).flatten(), torch.tensor([0, 0, 1, 1, 1, 1.0]))
    linear = future_frame_weights(6, 2, "linear").flatten()
    torch.testing.assert_close(linear, torch.tensor([0, 0, 0.4, 0.8, 1.2, 1.6]))
    # an error of 1 on the last future frame only: 1/4 of the loss under uniform weights, 1.6/4 under linear ones
    x = torch.randn(2, 3, 6, 2, 2)
    y = x.clone()
    y[:, :, -1] += 1.0
    torch.testing.assert_close(flow_matching_loss(y, x, future_frame_weights(6, 2)), torch.full((2,), 0.25))
    torch.testing.assert_close(flow_matching_loss(y, x, future_frame_weights(6, 2, "linear")), torch.full((2,), 0.4))
    # the same error everywhere keeps its scale (mean weight 1)
    torch.testing.assert_close(flow_matching_loss(x + 2.0, x, future_frame_weights(6, 2, "linear")),
                               torch.full((2,), 4.0))
    with pytest.raises(ValueError, match="future_frame_weighting"):
        future_frame_weights(6, 2, "quadratic")


def test_video_training_losses_weigh_the_future_frames_as_configured():
    model = tiny_model()
    latents, _, cond = inputs(t=4)  # 2 context, 2 future latent frames
    uniform = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.5),
                                    torch.Generator().manual_seed(0))
    linear = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.5, future_frame_weighting="linear"),
                                   torch.Generator().manual_seed(0))
    # the same σ and ε: the per-frame errors are the same, only their weights (1, 1 → 2/3, 4/3) differ
    assert not torch.allclose(uniform["gen"], linear["gen"])
    with torch.no_grad():  # recompute the linear loss from the per-frame squared errors
        g = torch.Generator().manual_seed(0)
        sigma = sample_sigmas(2, g, 0.0, 1.0, 1.0)
        noise = torch.randn(latents.shape, generator=g)
        s = sigma.view(2, 1, 1, 1, 1)
        x_t = torch.cat([latents[:, :, :2], ((1 - s) * latents + s * noise)[:, :, 2:]], 2)
        se = (model(x_t, sigma, cond, 2).sample - (noise - latents)).square().mean((0, 1, 3, 4))  # per latent frame
    torch.testing.assert_close(linear["gen"], (se[2] * 2 / 3 + se[3] * 4 / 3) / 2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(uniform["gen"], (se[2] + se[3]) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="future_frame_weighting"):
        video_training_losses(model, latents, 2, cond, LossConfig(future_frame_weighting="later"),
                              torch.Generator().manual_seed(0))


def test_context_hold_replaces_the_context_by_its_last_frame_on_a_drawn_share():
    """E18's `loss.context_hold`: a held sample's context latent frames all equal its last one, its future frames and
    the other samples are untouched, the draw is one uniform per sample after σ and ε, and p = 0 draws nothing."""
    x = torch.randn(64, 4, 5, 2, 2, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(0)
    assert hold_context(x, 3, 0.0, g) is x and torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    out = hold_context(x, 3, 0.5, torch.Generator().manual_seed(7))
    held = torch.rand(64, generator=torch.Generator().manual_seed(7)) < 0.5
    assert 0 < int(held.sum()) < 64
    assert torch.equal(out[held][:, :, :3], x[held][:, :, 2:3].expand(-1, -1, 3, -1, -1))
    assert torch.equal(out[~held], x[~held]) and torch.equal(out[:, :, 3:], x[:, :, 3:])
    assert torch.equal(hold_context(x, 3, 1.0, torch.Generator()), torch.cat([x[:, :, 2:3]] * 3 + [x[:, :, 3:]], 2))
    with pytest.raises(ValueError, match="context_hold"):
        hold_context(x, 3, 1.5, torch.Generator())
    # in the loss: the same σ and ε as without it (drawn first); held samples see the held context
    model = tiny_model()
    latents, _, cond = inputs(t=4)
    plain = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.0), torch.Generator().manual_seed(0))
    again = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.0, context_hold=0.0),
                                  torch.Generator().manual_seed(0))
    hold = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.0, context_hold=1.0),
                                 torch.Generator().manual_seed(0))
    assert torch.equal(plain["gen"], again["gen"]) and not torch.equal(plain["gen"], hold["gen"])
    held_latents = torch.cat([latents[:, :, 1:2], latents[:, :, 1:]], 2)
    torch.testing.assert_close(hold["gen"], video_training_losses(
        model, held_latents, 2, cond, LossConfig(lambda_ig=0.0), torch.Generator().manual_seed(0))["gen"])


def test_sample_sigmas_deterministic_and_shifted():
    a = sample_sigmas(1000, torch.Generator().manual_seed(0), 0.0, 1.0, 1.0)
    b = sample_sigmas(1000, torch.Generator().manual_seed(0), 0.0, 1.0, 1.0)
    s = sample_sigmas(1000, torch.Generator().manual_seed(0), 0.0, 1.0, 3.0)
    assert torch.equal(a, b) and ((a > 0) & (a < 1)).all()
    assert abs(float(a.mean()) - 0.5) < 0.03 and (s > a).all()


def test_video_training_losses_terms_and_vanilla_switch():
    model = tiny_model()
    model.train()
    latents, _, cond = inputs()
    with_ig = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.5), torch.Generator().manual_seed(0))
    torch.testing.assert_close(with_ig["total"], with_ig["gen"] + 0.5 * with_ig["ig"])
    with_ig["total"].backward()
    assert model.heads["0"].proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)

    vanilla = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.0), torch.Generator().manual_seed(0))
    assert set(vanilla) == {"gen", "total"}
    assert torch.equal(vanilla["gen"], with_ig["gen"])  # same σ, ε for the same seed
    vanilla["total"].backward()
    assert all(p.grad is None for p in model.heads.parameters())  # heads not even run


def test_training_moves_the_loss():
    model = tiny_model()
    model.train()
    latents, _, cond = inputs()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(30):
        loss = video_training_losses(model, latents, 2, cond, LossConfig(), g)["total"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        eval_losses = [float(video_training_losses(model, latents, 2, cond, LossConfig(), torch.Generator().manual_seed(s))["gen"])
                       for s in range(4)]
    assert sum(eval_losses) / 4 < first


# --- motion head (docs/world4s.md, E15) -------------------------------------------------------------------
def test_poses_at_interpolates_the_logged_poses_from_the_origin():
    from reworld.data.clips import poses_at

    # 4 poses at 1, 2, 3, 4 s: x = 5 t, y = t², heading = 0.1 t
    t = torch.arange(1, 5, dtype=torch.float32)
    traj = torch.stack([5 * t, t ** 2, 0.1 * t], -1)[None]  # (1, 4, 3)
    got = poses_at(traj, 4.0, torch.tensor([0.5, 1.0, 2.5, 4.0]))
    want = torch.tensor([[[2.5, 0.5, 0.05], [5.0, 1.0, 0.1], [12.5, 6.5, 0.25], [20.0, 16.0, 0.4]]])
    torch.testing.assert_close(got, want)  # y at 0.5 s: halfway from (0, 0) to 1; at 2.5 s: halfway 4 → 9
    for bad in ([0.0, 1.0], [4.5]):
        with pytest.raises(ValueError, match="horizon"):
            poses_at(traj, 4.0, torch.tensor(bad))


def test_motion_head_reads_each_latent_frame_and_trains_only_the_blocks_up_to_its_own():
    model = tiny_model(motion_block=0, motion_frames=1)
    latents, sigma, cond = inputs(t=3)  # 2 context, 1 future latent frame
    out = model(latents, sigma, cond, 2, return_motion=True)
    assert out.motion.shape == (2, 3, 3) and torch.equal(out.motion, torch.zeros(2, 3, 3))  # last layer starts at 0
    assert tiny_model()(latents, sigma, cond, 2).motion is None
    with pytest.raises(ValueError, match="motion head"):
        tiny_model()(latents, sigma, cond, 2, return_motion=True)
    model.train()
    target = torch.randn(2, 1, 3, generator=torch.Generator().manual_seed(3))
    loss_cfg = LossConfig(lambda_ig=0.5, lambda_motion=2.0)
    terms = video_training_losses(model, latents, 2, cond, loss_cfg, torch.Generator().manual_seed(0), target)
    torch.testing.assert_close(terms["total"], terms["gen"] + 0.5 * terms["ig"] + 2.0 * terms["motion"])
    # a zero head predicts 0 (the normalised mean): its loss is the targets' mean square
    torch.testing.assert_close(terms["motion"], target.square().mean())
    model.zero_grad(set_to_none=True)
    terms["motion"].backward()
    blocks = model.transformer.transformer_blocks
    assert model.motion_head.fc2.weight.grad.abs().sum() > 0
    # once the head is non-zero its loss reaches block 0 (which it reads) and the conditioning, never block 1
    torch.nn.init.normal_(model.motion_head.fc2.weight, std=0.1)
    model.zero_grad(set_to_none=True)
    video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.0, lambda_motion=1.0),
                          torch.Generator().manual_seed(0), target)["motion"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in blocks[0].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cond.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in blocks[1].parameters())
    with pytest.raises(ValueError, match="motion_target"):
        video_training_losses(model, latents, 2, cond, loss_cfg, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="motion_block"):
        tiny_model(motion_block=2, motion_frames=1)


def test_motion_statistics_are_saved_with_the_weights_and_undo_the_normalisation(tmp_path):
    model = tiny_model(motion_block=1, motion_frames=2)
    mean, std = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.1, 0.01]]), torch.tensor([[0.5, 0.2, 0.01], [1.0, 0.4, 0.02]])
    model.set_motion_stats(mean, std)
    poses = torch.tensor([[[1.5, 0.2, 0.01], [4.0, -0.3, 0.03]]])
    torch.testing.assert_close(model.motion_normalise(poses), torch.tensor([[[1.0, 1.0, 1.0], [2.0, -1.0, 1.0]]]))
    save_model_atomic(model, tmp_path / "v")
    back = VideoDiT.from_pretrained(tmp_path / "v")
    assert back.motion_block == 1
    torch.testing.assert_close(back.motion_poses(back.motion_normalise(poses)), poses)
    torch.testing.assert_close(back.motion_std, std)
    with pytest.raises(ValueError, match="std > 0"):
        model.set_motion_stats(mean, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no motion head"):
        tiny_model().set_motion_stats(mean, std)


def test_a_motion_head_model_builds_from_its_config_alone():
    """Benchmarks build a Video DiT from a config without a VAE: E15's arm gets a head over its 8 future latent
    frames (16 future frames through the 2× temporal VAE), the shipped config none."""
    from pathlib import Path

    from reworld.config import load_config
    from reworld.models.video_dit import config_motion_frames, video_dit_from_config

    configs = Path(__file__).parent.parent / "configs"
    motion = load_config(configs / "screens" / "e15-motion.yaml")
    assert config_motion_frames(motion) == 8 and config_motion_frames(load_config(configs / "world4s.yaml")) == 0
    model = video_dit_from_config(motion.video, in_channels=motion.vae.latent_channels,
                                  motion_frames=config_motion_frames(motion))
    assert model.motion_head is not None and tuple(model.motion_mean.shape) == (8, 3)
    with pytest.raises(ValueError, match="not a multiple"):
        config_motion_frames(dataclasses.replace(motion, data=dataclasses.replace(motion.data, future_frames=15)))


def feedback_model(seed: int = 0) -> VideoDiT:
    """A tiny Video DiT with its motion head at block 0 and its poses fed back, head and embedding non-zero (as
    after training)."""
    model = tiny_model(seed, motion_block=0, motion_frames=1, motion_feedback=True)
    with torch.no_grad():
        for p in (*model.motion_head.parameters(), *model.motion_embed.parameters()):
            p.normal_(std=0.3)
    return model


def test_motion_feedback_starts_as_the_plain_model_and_feeds_poses_only_to_future_tokens():
    """docs/world4s.md, E17: a new feedback embedding leaves the output as it was; once trained, the fed-back poses
    change the future's velocity and never the context's tokens; `motion_null` is the model without the feedback;
    `motion_input` on chosen rows replaces the head's reading there and only there."""
    latents, sigma, cond = inputs(t=3)  # 2 context latent frames, 1 future
    plain = tiny_model(motion_block=0, motion_frames=1)
    fresh = tiny_model(motion_block=0, motion_frames=1, motion_feedback=True)
    fresh.load_state_dict({**fresh.state_dict(), **plain.state_dict()})
    torch.testing.assert_close(fresh(latents, sigma, cond, 2).sample, plain(latents, sigma, cond, 2).sample,
                               rtol=0, atol=0)
    model = feedback_model()
    with torch.no_grad():
        fed = model(latents, sigma, cond, 2, return_hidden_states=[0, 1])
        null = model(latents, sigma, cond, 2, motion_null=True, return_hidden_states=[0, 1])
    assert (fed.sample[:, :, 2:] - null.sample[:, :, 2:]).abs().max() > 1e-3
    # the motion block's own tokens (which the head reads) come before the feedback
    torch.testing.assert_close(fed.hidden_states[0], null.hidden_states[0], rtol=0, atol=0)
    # without the feedback the model is the same network with the embedding removed
    bare = tiny_model(motion_block=0, motion_frames=1)
    bare.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("motion_embed.")})
    torch.testing.assert_close(null.sample, bare(latents, sigma, cond, 2).sample, rtol=1e-5, atol=1e-6)
    # a given pose on row 0 only: row 1 keeps the head's own reading
    given = torch.full((2, 1, 3), 2.0)
    out = model(latents, sigma, cond, 2, motion_input=given, motion_input_rows=torch.tensor([True, False]))
    torch.testing.assert_close(out.sample[1], fed.sample[1], rtol=0, atol=0)
    assert (out.sample[0] - fed.sample[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"motion_input must be"):
        model(latents, sigma, cond, 2, motion_input=torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match="motion_feedback"):
        plain(latents, sigma, cond, 2, motion_null=True)
    with pytest.raises(ValueError, match="motion_feedback needs a motion head"):
        tiny_model(motion_feedback=True)


def test_the_flow_loss_does_not_train_the_motion_head_through_the_feedback():
    """The fed-back reading is detached: the head learns poses from its own loss only."""
    model = feedback_model().train()
    latents, _, cond = inputs(t=3)
    terms = video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.0), torch.Generator().manual_seed(0))
    terms["gen"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.motion_head.parameters())
    assert model.motion_embed.fc2.weight.grad.abs().sum() > 0


def test_training_feeds_the_logged_poses_or_nothing_with_the_configured_probabilities():
    """`loss.motion_teacher` / `loss.motion_null`: one draw per sample on the stage's generator; p_teacher = 1 is the
    model fed the targets, p_null = 1 the model without feedback, both 0 the head's own reading (and no draw)."""
    model = feedback_model()
    latents, _, cond = inputs(t=3)
    target = torch.randn(2, 1, 3, generator=torch.Generator().manual_seed(3))

    def loss(**kw):
        cfg = LossConfig(lambda_ig=0.0, lambda_motion=1.0, **kw)
        with torch.no_grad():
            return video_training_losses(model, latents, 2, cond, cfg, torch.Generator().manual_seed(0), target)["gen"]

    def by_hand(**feed):  # the same σ and ε (drawn first on the generator), the model called as told
        g = torch.Generator().manual_seed(0)
        sigma = sample_sigmas(2, g, 0.0, 1.0, 1.0, latents.device)
        noise = torch.randn(latents.shape, generator=g)
        mask = future_frame_mask(3, 2, latents.device).bool()
        s = sigma.view(2, 1, 1, 1, 1)
        x_t = torch.where(mask, (1 - s) * latents + s * noise, latents)
        with torch.no_grad():
            v = model(x_t, sigma, cond, 2, **feed).sample
        return flow_matching_loss(v, noise - latents, future_frame_weights(3, 2, "uniform", latents.device)).mean()

    torch.testing.assert_close(loss(), by_hand())
    torch.testing.assert_close(loss(motion_teacher=1.0), by_hand(motion_input=target))
    torch.testing.assert_close(loss(motion_null=1.0), by_hand(motion_null=True))
    assert not torch.allclose(loss(motion_teacher=1.0), loss())
    with pytest.raises(ValueError, match="probabilities"):
        loss(motion_teacher=0.7, motion_null=0.5)
    with pytest.raises(ValueError, match="lambda_motion"):
        video_training_losses(model, latents, 2, cond, LossConfig(lambda_ig=0.0, motion_teacher=0.5),
                              torch.Generator().manual_seed(0))


def test_a_feedback_model_saves_loads_and_builds_from_its_config(tmp_path):
    model = feedback_model()
    save_model_atomic(model, tmp_path / "v")
    back = VideoDiT.from_pretrained(tmp_path / "v")
    assert back.config.motion_feedback and back.motion_embed is not None
    latents, sigma, cond = inputs(t=3)
    torch.testing.assert_close(back(latents, sigma, cond, 2).sample, model(latents, sigma, cond, 2).sample)
    cfg = VideoConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, head_blocks=(0,), motion_block=1,
                      motion_feedback=True)
    assert video_dit_from_config(cfg, in_channels=4, motion_frames=2).motion_embed is not None
    with pytest.raises(ValueError, match="motion_feedback needs video.motion_block"):
        video_dit_from_config(dataclasses.replace(cfg, motion_block=None), in_channels=4)
