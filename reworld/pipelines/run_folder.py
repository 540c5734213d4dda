"""A run folder (or a shipped checkpoint) on disk: its `config.json` and where each component lives.

```
RUN/config.json        the run's configuration (`reworld.config`)
RUN/vae/               AutoencoderKLLTXVideo (save_pretrained); or a pointer in RUN/components.json; or none,
                       when the run uses a pretrained VAE (`vae.pretrained` in its config: an LTX-Video folder)
RUN/video_dit/         VideoDiT
RUN/action_dit/        ActionDiT (after stage action)
RUN/model_index.json   diffusers-style index of the components (written after every stage and by ship)
```
Training writes this layout (`reworld.training.stages`); the pipeline, evaluation, analysis and the app read it
through here.
"""
from __future__ import annotations

import json
from pathlib import Path

from reworld.config import Config, config_from_dict
from reworld.models.layers import CheckpointError, diffusers_component


def read_run_config(path: Path) -> Config:
    """The configuration of the run folder `path`; a missing folder or config is a `CheckpointError`."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a ReWorld checkpoint: no config.json")
    return config_from_dict(json.loads((path / "config.json").read_text()))


def vae_folder(path: Path, config: Config) -> Path:
    """Where the VAE of the run folder `path` lives: its own `vae/`, else where `components.json` points,
    else the pretrained folder its config names (`vae.pretrained`), else `path/vae` (missing: the loader says so)."""
    own = component_dir(path, "vae")
    if not own.exists() and config.vae.pretrained:
        pretrained = Path(config.vae.pretrained)
        return diffusers_component(pretrained, "vae", "AutoencoderKLLTXVideo") if pretrained.is_dir() else pretrained
    return own


def component_dir(path: Path, name: str) -> Path:
    """`path/name`, or where `path/components.json` points for it (e.g. `{"vae": "../vae"}`: two shipped
    checkpoints sharing one VAE). A pointer may only lead to a sibling of `path`."""
    own = path / name
    pointers = path / "components.json"
    if own.exists() or not pointers.is_file():
        return own
    target = json.loads(pointers.read_text()).get(name)
    if target is None:
        return own
    resolved = (path / target).resolve()
    if resolved.parent != path.resolve().parent:
        raise CheckpointError(f"{pointers}: {name} must point to a sibling folder of {path}, got {target!r}")
    return resolved


MODEL_INDEX = "model_index.json"
COMPONENTS = {  # name → (library, class), as diffusers' model_index.json lists a pipeline's components
    "vae": ("diffusers", "AutoencoderKLLTXVideo"),
    "video_dit": ("reworld.models.video_dit", "VideoDiT"),
    "action_dit": ("reworld.models.action_dit", "ActionDiT"),
}


def write_model_index(path: Path, config: Config) -> Path:
    """`path/model_index.json`: the pipeline class and, per component, its library and class, or
    `[null, null]` when the run has none yet (diffusers' layout). A pretrained VAE outside the folder is named
    under `_vae_folder`. Written atomically."""
    import diffusers

    doc: dict = {"_class_name": "WorldActionPipeline", "_diffusers_version": diffusers.__version__}
    for name, entry in COMPONENTS.items():
        folder = vae_folder(path, config) if name == "vae" else path / name
        doc[name] = list(entry) if (folder / "config.json").is_file() else [None, None]
    if not (path / "vae").is_dir() and config.vae.pretrained:
        doc["_vae_folder"] = str(config.vae.pretrained)
    tmp = path / f".{MODEL_INDEX}.tmp"
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path / MODEL_INDEX)
    return path / MODEL_INDEX
