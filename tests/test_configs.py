"""Every shipped config loads; the paper-scale one builds LTX-Video 2B shapes on the meta device."""
import dataclasses
from pathlib import Path

import pytest

from reworld.config import ConfigError, config_from_dict, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem or (path.stem == "default" and cfg.name == "default")


def test_vanilla_differs_from_default_only_in_losses():
    default, vanilla = load_config(CONFIGS[0].parent / "default.yaml"), load_config(CONFIGS[0].parent / "vanilla.yaml")
    for section in ("data", "vae", "video", "action", "train"):
        assert getattr(default, section) == getattr(vanilla, section), section
    assert vanilla.loss.lambda_ig == vanilla.loss.lambda_align == vanilla.loss.lambda_hn == 0.0
    assert default.loss.lambda_ig > 0 and default.loss.lambda_align > 0 and default.loss.lambda_hn > 0


def test_paper_config_builds_ltx_2b_on_meta():
    from reworld.models.video_dit import video_dit_from_config

    cfg = load_config(CONFIGS[0].parent / "paper.yaml")
    video = dataclasses.replace(cfg.video, pretrained=None)
    model = video_dit_from_config(video, in_channels=128)
    tr = model.transformer.config
    assert (tr.num_layers, tr.num_attention_heads * tr.attention_head_dim, tr.in_channels) == (28, 2048, 128)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) > 1.5e9


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"config.loss: unknown key\(s\) \['lamda_ig'\]"):
        config_from_dict({"loss": {"lamda_ig": 0.5}})
