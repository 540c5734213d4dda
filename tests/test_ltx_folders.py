"""Pretrained LTX-Video weights from a local diffusers folder, laid out as the real one is (`model_index.json`,
`transformer/`, `vae/`), with a timestep-conditioned VAE as LTX-Video 0.9.1 and later ship it: training
reads it, and the run folder opens in the pipeline, eval, the app and ship."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

from reworld.config import load_config
from reworld.models.layers import CheckpointError
from reworld.models.vae import decode_latents, load_pretrained_vae

LATENT = 8  # tiny.yaml's latent channels


def write_ltx_pipeline(root, transformer_channels: int = LATENT):
    """A tiny LTX-Video pipeline folder: what `LTXPipeline.save_pretrained` writes, minus the text parts'
    weights (ReWorld reads only the transformer and the VAE)."""
    torch.manual_seed(0)
    # LTX-Video 0.9.1's decoder layout in miniature: timestep conditioning, residual depth-to-space upsampling
    # (channels halve as the resolution doubles), so that no up block changes width before it upsamples
    AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=LATENT, block_out_channels=(8, 16, 16),
        down_block_types=("LTXVideoDownBlock3D",) * 3, decoder_block_out_channels=(16, 32, 32),
        layers_per_block=(1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False), decoder_spatio_temporal_scaling=(True, True, False),
        decoder_inject_noise=(False,) * 4, downsample_type=("conv",) * 3, upsample_residual=(True, True, False),
        upsample_factor=(2, 2, 1), timestep_conditioning=True, patch_size=2, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    ).save_pretrained(root / "vae")
    LTXVideoTransformer3DModel(in_channels=transformer_channels, out_channels=transformer_channels,
                               num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
                               num_layers=2, caption_channels=32).save_pretrained(root / "transformer")
    from diffusers import FlowMatchEulerDiscreteScheduler

    # LTX-Video's scheduler_config.json: dynamic shifting by the token count, the grid stretched to end at 0.1
    FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift_terminal=0.1, base_image_seq_len=1024,
                                    max_image_seq_len=4096, base_shift=0.95, max_shift=2.05).save_pretrained(
        root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "LTXPipeline", "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "LTXVideoTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLLTXVideo"]}))
    return root


@pytest.fixture(scope="module")
def ltx(tmp_path_factory):
    return write_ltx_pipeline(tmp_path_factory.mktemp("LTX-Video"))


def test_timestep_conditioned_vae_decodes_as_diffusers_does(ltx):
    vae = load_pretrained_vae(ltx)  # the pipeline folder itself
    assert vae.config.timestep_conditioning
    z = torch.randn(1, LATENT, 2, 4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = decode_latents(vae, z, decode_timestep=0.05, decode_noise_scale=0.025, generator=torch.Generator().manual_seed(0))
        b = decode_latents(vae, z, decode_timestep=0.05, decode_noise_scale=0.025, generator=torch.Generator().manual_seed(0))
        c = decode_latents(vae, z, decode_timestep=0.5, decode_noise_scale=0.025, generator=torch.Generator().manual_seed(0))
        # by hand, as LTXPipeline: noise mixed in, then the decoder told the timestep
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        ref = vae.decode((1 - 0.025) * z + 0.025 * noise, torch.tensor([0.05])).sample.permute(0, 2, 1, 3, 4).clamp(-1, 1)
    assert a.shape == (1, 5, 3, 32, 64) and torch.equal(a, b)
    torch.testing.assert_close(a, ref)
    assert not torch.allclose(a, c)  # the timestep reaches the decoder


def test_a_run_on_an_ltx_folder_trains_and_opens_everywhere(ltx, tiny_config_path, tmp_path, capsys):
    from app.cli import load_pipelines
    from reworld import WorldActionPipeline
    from reworld.data.loader import NuScenesClips
    from reworld.evaluation.evaluate import evaluate
    from reworld.ship import ship
    from reworld.training import run_stage

    doc = yaml.safe_load(tiny_config_path.read_text())
    doc["vae"]["pretrained"] = str(ltx)
    doc["video"]["pretrained"] = str(ltx)  # the pipeline folder: its transformer/ is found through model_index.json
    config = tmp_path / "ltx.yaml"
    config.write_text(yaml.safe_dump(doc))
    run = tmp_path / "run"
    result = run_stage("video", str(config), str(run), max_steps=2)
    assert result["finite"] and not (run / "vae").exists()  # the pretrained VAE is not copied into the run
    # the tiny config trains at shift 1, not on the scheduler's schedule beside the weights: the run says so
    from reworld.schedulers.flow_match import dynamic_shift

    note = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("[video] note:"))
    tokens = int(note.split(" tokens")[0].rsplit(" ", 1)[1])
    assert "loss.shift 1," in note and f"shift {dynamic_shift(tokens):.4f}" in note

    pipe = WorldActionPipeline.from_pretrained(run)
    assert pipe.vae.config.timestep_conditioning and pipe.video_dit.config.num_layers == 2
    # LTX's RoPE scale for these clips (6 Hz) and this VAE (4× in time, 8× in space), stored with the model
    assert tuple(pipe.video_dit.config.rope_interpolation_scale) == pytest.approx((4 / 6, 8.0, 8.0))
    clip = NuScenesClips(pipe.clip_spec, split="val")[0]
    gen = pipe.generate(clip, steps=2, guidance=1.4, seed=0)
    assert torch.isfinite(gen.frames).all() and gen.frames.shape == clip.target.frames.shape
    report = evaluate(str(run), split="val", limit=2, video_clips=2, steps=2, device="cpu")
    assert report.video["psnr"] > 0 and "constant velocity" in report.planners
    assert set(load_pipelines([run], device="cpu")) == {"run"}
    index = json.loads((run / "model_index.json").read_text())
    assert index["video_dit"] == ["reworld.models.video_dit", "VideoDiT"] and index["action_dit"] == [None, None]
    assert index["vae"] == ["diffusers", "AutoencoderKLLTXVideo"] and index["_vae_folder"] == str(ltx)
    shipped = ship(str(run), str(tmp_path / "shipped"), None, str(config), None, [])
    assert not (shipped / "vae").exists() and WorldActionPipeline.from_pretrained(shipped).vae.config.timestep_conditioning
    assert json.loads((shipped / "model_index.json").read_text()) == index


def test_a_vae_given_with_train_vae_is_remembered_by_the_run(ltx, tiny_config_path, tmp_path):
    """`train --stage video --vae PATH`: the later stages and the pipeline find the VAE without being told again."""
    from reworld import WorldActionPipeline
    from reworld.training import run_stage

    run = tmp_path / "run"
    run_stage("video", str(tiny_config_path), str(run), max_steps=1, vae_path=str(ltx / "vae"))
    assert json.loads((run / "config.json").read_text())["vae"]["pretrained"] == str((ltx / "vae").resolve())
    run_stage("action", str(tiny_config_path), str(run), max_steps=1)
    assert WorldActionPipeline.from_pretrained(run, require_planner=True).vae.config.timestep_conditioning


def test_folders_that_are_not_ltx_are_named(ltx, tmp_path):
    from reworld.models.video_dit import VideoDiT, video_dit_from_config

    not_a_pipeline = tmp_path / "other"
    not_a_pipeline.mkdir()
    (not_a_pipeline / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                                  "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(CheckpointError, match=r"model_index.json: no 'vae' component \(it lists \['unet'\]\)"):
        load_pretrained_vae(not_a_pipeline)
    with pytest.raises(CheckpointError, match="is neither a diffusers AutoencoderKLLTXVideo folder"):
        load_pretrained_vae(tmp_path)
    with pytest.raises(CheckpointError, match="transformer/config.json: a LTXVideoTransformer3DModel, expected "
                                              "AutoencoderKLLTXVideo"):
        load_pretrained_vae(ltx / "transformer")
    (not_a_pipeline / "model_index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model_index.json: not valid JSON"):
        VideoDiT.from_ltx_transformer(not_a_pipeline)
    # a transformer whose channels do not match the VAE's latents
    write_ltx_pipeline(tmp_path / "mismatch", transformer_channels=4)
    cfg = load_config("configs/tiny.yaml").video
    with pytest.raises(CheckpointError, match="has 4 input channels, the VAE 8"):
        video_dit_from_config(type(cfg)(**{**cfg.__dict__, "pretrained": str(tmp_path / "mismatch")}), in_channels=8)


def test_rope_scale_is_ltx_s_and_a_config_may_pin_it():
    from reworld.models.video_dit import VIDEO_DIT_PRESETS, ltx_rope_scale, video_dit_from_config

    # LTX-Video 2B: 25 fps through its 8× (time) / 32× (space) VAE, as diffusers' LTXPipeline computes it
    assert ltx_rope_scale(25.0, 8, 32) == pytest.approx(VIDEO_DIT_PRESETS["ltx-2b"]["rope_interpolation_scale"])
    assert ltx_rope_scale(12.0, 8, 32) == pytest.approx((2 / 3, 32.0, 32.0))  # configs/paper.yaml's clips
    tiny = load_config("configs/tiny.yaml").video
    assert tiny.rope_interpolation_scale is None  # derived per run
    derived = video_dit_from_config(tiny, in_channels=LATENT, rope_scale=(0.5, 8.0, 8.0))
    assert tuple(derived.config.rope_interpolation_scale) == (0.5, 8.0, 8.0)
    pinned = load_config("configs/default.yaml").video  # the shipped checkpoints' scale, kept for reproducibility
    model = video_dit_from_config(pinned, in_channels=16, rope_scale=(0.5, 8.0, 8.0))
    assert tuple(model.config.rope_interpolation_scale) == (1.0, 32.0, 32.0)
    with pytest.raises(ValueError, match="frame_rate"):
        ltx_rope_scale(0.0, 8, 32)


def test_the_app_shares_one_vae_between_checkpoints_that_share_its_folder():
    from app.cli import load_pipelines
    from reworld.paths import CHECKPOINTS

    pipes = load_pipelines([CHECKPOINTS / "reworld", CHECKPOINTS / "vanilla"], device="cpu")
    assert pipes["reworld"].vae is pipes["vanilla"].vae  # both point at assets/checkpoints/world4s_vae
    assert pipes["reworld"].video_dit is not pipes["vanilla"].video_dit


def test_app_dtype_flag():
    import torch

    from app.cli import build_parser, load_pipelines, model_dtype
    from reworld.paths import CHECKPOINTS

    assert model_dtype("auto", "cpu") is None and model_dtype("auto", "cuda") is torch.bfloat16
    assert model_dtype("float32", "cuda") is None and model_dtype("bfloat16", "cpu") is torch.bfloat16
    assert build_parser().parse_args([]).dtype == "auto"
    pipe = load_pipelines([CHECKPOINTS / "reworld"], device="cpu", dtype="bfloat16")["reworld"]
    assert pipe.video_dit.dtype == pipe.vae.dtype == torch.bfloat16


def test_vae_slicing_always_and_tiling_on_request(ltx):
    from reworld.config import VAEConfig
    from reworld.models.vae import configure_vae

    vae = configure_vae(load_pretrained_vae(ltx), VAEConfig())
    assert vae.use_slicing and not vae.use_tiling
    assert configure_vae(load_pretrained_vae(ltx), VAEConfig(tiling=True)).use_tiling
