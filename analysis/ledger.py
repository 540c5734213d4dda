"""What a study's runs are made under, kept in its ledger beside its results: the parsed base config and the digests
of the checkpoint's components the runs start from. The first run writes it (`<ledger>/config.json`); every later run
is compared with it before it trains, and a difference is a short error naming it, so that no seed joins a study
under another model (docs/study.md, amendment 19)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

IDENTITY = "config.json"


def identity(base: Path, checkpoint: Path, components=("vae",)) -> dict:
    """The parsed base config and `<component>_digest` (its safetensors' digest) for each of `components` of
    `checkpoint` (a component may live where the checkpoint's `components.json` points)."""
    from reworld.models.layers import file_digest
    from reworld.pipelines.run_folder import component_dir

    doc = {"config": yaml.safe_load(Path(base).read_text()) or {}}
    for name in components:
        folder = component_dir(Path(checkpoint), name)
        if not any(folder.glob("*.safetensors")):
            raise FileNotFoundError(f"{checkpoint}: no {name} weights ({folder})")
        doc[f"{name}_digest"] = file_digest(folder)
    return doc


def differences(held, given, prefix: str = "") -> list[str]:
    """The dotted keys at which two parsed configs differ, each with both values."""
    if isinstance(held, dict) and isinstance(given, dict):
        return [d for k in sorted(set(held) | set(given), key=str)
                for d in differences(held.get(k), given.get(k), f"{prefix}{k}.")]
    return [] if held == given else [f"{prefix[:-1]}: {held!r} in the ledger, {given!r} given"]


def check(folder: Path, given: dict, hint: str) -> None:
    """Write `given` as the ledger's identity if it has none; else raise a ValueError naming what differs (at most
    four items) followed by `hint`. Nothing else is written."""
    from .output import write_json

    path = Path(folder) / IDENTITY
    if not path.is_file():
        write_json(given, path)
        return
    held = json.loads(path.read_text())
    diffs = differences(held.get("config"), given.get("config"))
    diffs += [f"{k}: {held.get(k)} in the ledger, {given.get(k)} given"
              for k in sorted((set(held) | set(given)) - {"config"}) if held.get(k) != given.get(k)]
    if diffs:
        raise ValueError(f"{path.parent}: its runs were made under another base config or checkpoint "
                         f"({'; '.join(diffs[:4])}{'; …' if len(diffs) > 4 else ''}); {hint}")
