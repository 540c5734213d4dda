"""Every shipped config loads; the paper-scale one builds LTX-Video 2B shapes (on the meta device, in the test)."""
import dataclasses
import json
from pathlib import Path

import pytest

from reworld.config import ConfigError, config_from_dict, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(path)
    # a study's frozen config keeps the name of the file it was frozen from, byte for byte (docs/study.md, amendment 19)
    frozen = {"study-c2": "world4s-vanilla"}
    assert cfg.name == frozen.get(path.stem, path.stem)


@pytest.mark.parametrize("pair", [("default", "vanilla"), ("world4s", "world4s-vanilla")])
def test_vanilla_differs_from_default_only_in_losses(pair):
    """The ablation pairs (the first embedded checkpoints; the world4s ones) differ only in their loss weights."""
    default, vanilla = (load_config(CONFIGS[0].parent / f"{name}.yaml") for name in pair)
    for section in ("data", "vae", "video", "action", "train"):
        assert getattr(default, section) == getattr(vanilla, section), section
    assert vanilla.loss.lambda_ig == vanilla.loss.lambda_align == vanilla.loss.lambda_hn == 0.0
    assert default.loss.lambda_ig > 0 and default.loss.lambda_align > 0 and default.loss.lambda_hn > 0
    assert dataclasses.replace(vanilla.loss, lambda_ig=default.loss.lambda_ig, lambda_align=default.loss.lambda_align,
                   lambda_hn=default.loss.lambda_hn) == default.loss


def test_paper_config_builds_ltx_2b_on_meta():
    from accelerate import init_empty_weights

    from reworld.models.video_dit import video_dit_from_config

    cfg = load_config(CONFIGS[0].parent / "paper.yaml")
    video = dataclasses.replace(cfg.video, pretrained=None)
    with init_empty_weights(include_buffers=False):  # shapes only: 2B parameters, no memory
        model = video_dit_from_config(video, in_channels=128)
    tr = model.transformer.config
    assert (tr.num_layers, tr.num_attention_heads * tr.attention_head_dim, tr.in_channels) == (28, 2048, 128)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) > 1.5e9


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"config.loss: unknown key\(s\) \['lamda_ig'\]"):
        config_from_dict({"loss": {"lamda_ig": 0.5}})


def test_retired_keys_of_older_configs_are_dropped_on_load():
    """Checkpoints written before a key was retired (the shipped ones carry video.meta_init) still open; a key
    that was never ours is still an error."""
    from reworld.config import RETIRED_KEYS, config_to_dict

    old = config_to_dict(load_config(CONFIGS[0].parent / "default.yaml"))
    for section, keys in RETIRED_KEYS.items():
        for key in keys:
            old[section][key] = 0
    cfg = config_from_dict(old)
    assert cfg == load_config(CONFIGS[0].parent / "default.yaml")
    shipped = Path(__file__).parent.parent / "assets" / "checkpoints" / "vanilla" / "config.json"
    doc = json.loads(shipped.read_text())
    doc["video"]["meta_init"] = True  # as the first embedded checkpoints, written before the retirement, carried it
    assert config_from_dict(doc) == config_from_dict(json.loads(shipped.read_text()))
    assert config_from_dict(doc).loss.lambda_ig == 0.0
    with pytest.raises(ConfigError, match="meta_nit"):
        config_from_dict({"video": {"meta_nit": True}})


def test_screen_arms_differ_from_their_control_only_in_what_they_test():
    """docs/world4s.md's screen arms (configs/screens/) differ from their control only in what they test: E13's W192
    is the control (configs/world4s.yaml as it was before R2) with 6 attention heads (width 192), nothing else; E14's,
    E15's and E16's likewise."""
    shipped = load_config(CONFIGS[0].parent / "world4s.yaml")
    # the screens' control: configs/world4s.yaml before R2 (width 128, one feature draw, unclipped negatives)
    assert (shipped.video.num_attention_heads, shipped.action.feature_draws, shipped.loss.hn_clip_z) == (6, 4, 3.0)
    base = dataclasses.replace(shipped, video=dataclasses.replace(shipped.video, num_attention_heads=4),
                               action=dataclasses.replace(shipped.action, feature_draws=1),
                               loss=dataclasses.replace(shipped.loss, hn_clip_z=0.0))
    w192 = load_config(CONFIGS[0].parent / "screens" / "e13-w192.yaml")
    assert w192.name == "e13-w192" and w192.video.num_attention_heads == 6 and base.video.num_attention_heads == 4
    narrow = dataclasses.replace(w192.video, num_attention_heads=4)
    assert dataclasses.replace(w192, name=base.name, video=narrow) == base
    # E14: the flow loss's future-frame weighting; E15: the motion head and its loss; E16: E15's arm at width 192
    late = load_config(CONFIGS[0].parent / "screens" / "e14-late.yaml")
    uniform = dataclasses.replace(late.loss, future_frame_weighting="uniform")
    assert late.loss.future_frame_weighting == "linear"
    assert dataclasses.replace(late, name=base.name, loss=uniform) == base
    motion = load_config(CONFIGS[0].parent / "screens" / "e15-motion.yaml")
    assert motion.video.motion_block == 3 and motion.loss.lambda_motion == 0.5
    assert dataclasses.replace(motion, name=base.name, video=dataclasses.replace(motion.video, motion_block=None),
                               loss=dataclasses.replace(motion.loss, lambda_motion=0.0)) == base
    both = load_config(CONFIGS[0].parent / "screens" / "e16-w192-motion.yaml")
    narrow = dataclasses.replace(both.video, num_attention_heads=4)
    assert dataclasses.replace(both, name=motion.name, video=narrow) == motion
    assert dataclasses.replace(both, name=w192.name, video=dataclasses.replace(both.video, motion_block=None),
                               loss=dataclasses.replace(both.loss, lambda_motion=0.0)) == w192
