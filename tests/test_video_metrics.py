"""Video metrics (PSNR, SSIM, Fréchet distance), the I3D of FVD and the offline ReWorldVideoNet, at tiny scale."""
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from reworld.evaluation.video import frechet_distance, psnr, ssim, video_frechet
from reworld.evaluation.i3d import I3D, convert_i3d_state_dict, load_i3d
from reworld.models.layers import CheckpointError, load_state_dict_strict
from reworld.evaluation.clip_net import ReWorldVideoNet, load_video_net
from reworld.training.clip_net import corrupt_order, train_feature_net, train_video_net, video_net_losses
from reworld.data.clips import ClipTensors

TINY_I3D = dict(width_mult=1 / 16, input_size=32)
TINY_NET = dict(widths=(8, 16), feature_dim=16, num_frames=5, frame_size=(16, 16))


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def videos(b: int, seed: int, t: int = 5, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.rand(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- Fréchet distance ----------------------------------------------------------------------------------
def test_frechet_identical_sets_is_zero():
    a = gaussian(200, 8, 0)
    assert frechet_distance(a, a.clone()) == pytest.approx(0.0, abs=1e-8)


def test_frechet_known_answer_for_a_mean_shift():
    a = gaussian(500, 4, 0)
    assert frechet_distance(a, a + 3.0) == pytest.approx(4 * 9.0, rel=1e-6)  # same Σ: only ‖Δμ‖² = 4·3²


def test_frechet_grows_with_noise_and_is_symmetric():
    a, noise = gaussian(300, 8, 0), gaussian(300, 8, 1)
    values = [frechet_distance(a, a + s * noise) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(values, values[1:])), values
    b = a + 0.5 * noise
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_frechet_singular_covariances_stay_finite():
    a, b = gaussian(10, 32, 0), gaussian(12, 32, 1)  # N < D: singular Σ, the eps offset path
    value = frechet_distance(a, b)
    assert math.isfinite(value) and value > 0


def test_frechet_errors():
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(gaussian(1, 4, 0), gaussian(5, 4, 1))
    with pytest.raises(ValueError, match="feature dims differ.*D=4.*D=5"):
        frechet_distance(gaussian(5, 4, 0), gaussian(5, 5, 1))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(torch.zeros(5), torch.zeros(5))


# --- PSNR / SSIM ---------------------------------------------------------------------------------------
def test_psnr_known_answer():
    x = videos(2, 0).clamp(-0.8, 0.8)
    assert torch.allclose(psnr(x + 0.1, x), torch.full((2,), 10 * math.log10(4 / 0.01)), atol=1e-3)


def test_ssim_identity_and_noise():
    x = videos(3, 0, h=24, w=32)
    assert ssim(x, x).shape == (3,)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)
    noise = videos(3, 1, h=24, w=32)
    values = [float(ssim((x + s * noise).clamp(-1, 1), x).mean()) for s in (0.05, 0.2, 0.5)]
    assert 1 > values[0] > values[1] > values[2], values
    assert ssim(x[:, 0], x[:, 0]).shape == (3,)  # images (B, 3, H, W) too


def test_ssim_known_answer_for_constant_images():
    a, b = torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.5)  # 0.5 and 0.75 on [0, 1]
    c1 = 0.01**2  # no variance: SSIM = (2 μx μy + C1) / (μx² + μy² + C1)
    assert float(ssim(a, b)) == pytest.approx((2 * 0.5 * 0.75 + c1) / (0.5**2 + 0.75**2 + c1), rel=1e-5)


def test_ssim_errors():
    with pytest.raises(ValueError, match="smaller than the 11×11 window"):
        ssim(videos(1, 0, h=8, w=8), videos(1, 1, h=8, w=8))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(videos(1, 0), videos(2, 0))


# --- I3D (FVD) ------------------------------------------------------------------------------------------
def test_i3d_round_trip_and_fvd(tmp_path):
    torch.manual_seed(0)
    model = I3D(**TINY_I3D).eval()
    model.save_pretrained(tmp_path / "i3d", safe_serialization=True)
    loaded = load_i3d(tmp_path / "i3d")
    x = videos(2, 0, t=8, h=20, w=40)
    with torch.no_grad():
        assert torch.equal(model.clip_embedding(x), loaded.clip_embedding(x))
        assert loaded.clip_embedding(x).shape == (2, 400)
    result = video_frechet(loaded, videos(4, 1), videos(4, 2), batch_size=3)
    assert math.isfinite(result.value) and result.value >= 0
    assert result.name != "FVD" and result.name.startswith("FD-I3D")  # a tiny I3D is not FVD's network
    assert (result.num_a, result.num_b, result.feature_dim) == (4, 4, 400)
    assert I3D().metric_name == "FVD"


def test_i3d_keys_follow_pytorch_i3d_naming():
    keys = set(I3D(**TINY_I3D).state_dict())
    for key in ("Conv3d_1a_7x7.conv3d.weight", "Conv3d_2c_3x3.bn.running_var", "Mixed_3b.b0.conv3d.weight",
                "Mixed_5c.b3b.bn.bias", "logits.conv3d.weight", "logits.conv3d.bias"):
        assert key in keys, key


def test_i3d_missing_key_is_named(tmp_path):
    state = convert_i3d_state_dict({f"module.{k}": v for k, v in I3D(**TINY_I3D).state_dict().items()})
    del state["Mixed_4c.b1b.conv3d.weight"]
    with pytest.raises(CheckpointError, match="missing 1 key.*Mixed_4c.b1b.conv3d.weight"):
        load_state_dict_strict(I3D(**TINY_I3D), state)
    # and through the folder loader
    model = I3D(**TINY_I3D)
    model.save_pretrained(tmp_path / "i3d", safe_serialization=True)
    save_file(state, tmp_path / "i3d" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match="Mixed_4c.b1b.conv3d.weight"):
        load_i3d(tmp_path / "i3d")


def test_import_i3d_weights_from_a_pytorch_i3d_style_file(tmp_path):
    """A DataParallel-saved state dict without `num_batches_tracked` (old PyTorch), as published, imports."""
    from reworld.evaluation.i3d import import_i3d_weights

    torch.manual_seed(0)
    ref = I3D().eval()
    state = {f"module.{k}": v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, tmp_path / "i3d_rgb.safetensors")
    model = load_i3d(import_i3d_weights(tmp_path / "i3d_rgb.safetensors", tmp_path / "i3d"))
    assert model.metric_name == "FVD"
    assert torch.equal(model.logits.conv3d.weight, ref.logits.conv3d.weight)
    del state["module.logits.conv3d.bias"]
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="logits.conv3d.bias"):
        import_i3d_weights(tmp_path / "broken.safetensors", tmp_path / "i3d2")


def test_i3d_rejects_unscaled_frames():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        I3D(**TINY_I3D).clip_embedding(videos(1, 0) * 127.5 + 127.5)


# --- ReWorldVideoNet (offline features) -----------------------------------------------------------------
def toy_clips(n: int = 12, seed: int = 0) -> ClipTensors:
    """Random clips with a moving bright bar (so that order is learnable) and random labels."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 60, (n, 9, 3, 16, 16), generator=g, dtype=torch.uint8)
    for t in range(9):
        frames[:, t, :, :, t : t + 4] = 255
    return ClipTensors(frames=frames, ego_status=torch.rand(n, 3, generator=g) * 10,
                       command=torch.randint(3, (n,), generator=g), trajectory=torch.zeros(n, 8, 3),
                       tokens=[f"c{i}" for i in range(n)], n_context=5)


def test_video_net_trains_and_features_have_the_right_shape(tmp_path):
    model, log = train_video_net(toy_clips(), steps=3, seed=0, lr=1e-3)
    assert [row["step"] for row in log] == [1, 3] and {"command", "speed", "order"} <= set(log[0])
    feats = model.clip_embedding(toy_clips().video(slice(0, 4))[:, 4:])
    assert feats.shape == (4, 128) and torch.isfinite(feats).all()
    assert model.metric_name == "FD-ReWorldNet"
    model.save_pretrained(tmp_path / "net", safe_serialization=True)
    x = toy_clips().video(slice(0, 2))[:, 4:]
    with torch.no_grad():
        assert torch.equal(load_video_net(tmp_path / "net").clip_embedding(x), model.clip_embedding(x))
    with pytest.raises(ValueError, match=r"expected \(B, 5, 3, H, W\)"):
        model.clip_embedding(toy_clips().video(slice(0, 2)))  # all 9 frames


def test_corrupt_order_labels():
    x = videos(64, 0)
    out, ordered = corrupt_order(x, 0.5, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    assert torch.equal(same, ordered.bool())  # untouched ⇔ label 1, every corrupted clip changed
    assert 0 < ordered.sum() < 64


def test_order_loss_decreases_on_a_toy_batch():
    torch.manual_seed(0)
    model = ReWorldVideoNet(**TINY_NET)
    clips = toy_clips(16)
    clean = clips.video(slice(None))[:, 4:]
    batch, ordered = corrupt_order(clean, 0.5, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        terms = video_net_losses(model(batch), clips.command, clips.ego_status[:, 0], ordered, 1.0)
        loss = terms["order"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_train_feature_net_writes_a_loadable_checkpoint(tiny_config_path, tmp_path):
    result = train_feature_net(tiny_config_path, tmp_path / "video_net", steps=2)
    assert (tmp_path / "video_net" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "video_net" / "metrics.json").is_file()
    assert 0 <= result["val"]["order_acc"] <= 1 and result["metric_name"] == "FD-ReWorldNet"
    net = load_video_net(tmp_path / "video_net")
    assert net.config.num_frames == 5 and tuple(net.config.frame_size) == (32, 64)


def test_fit_video_net_saves_a_loadable_checkpoint_with_val_metrics(tmp_path):
    from reworld.training.clip_net import fit_video_net

    result = fit_video_net(toy_clips(8, seed=0), toy_clips(6, seed=1), tmp_path / "video_net", steps=2,
                           meta={"note": "toy"})
    assert (tmp_path / "video_net" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "video_net" / "metrics.json").read_text())["note"] == "toy"
    assert result["val"]["num_clips"] == 6 and 0 <= result["val"]["order_acc"] <= 1
    assert tuple(load_video_net(tmp_path / "video_net").config.frame_size) == (16, 16)
