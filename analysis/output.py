"""Writing figures (self-contained offline HTML) and numbers (strict JSON) for the CLI and the app."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and ±inf become null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_json(data: Any, path: str | Path) -> Path:
    """Strict JSON at `path`, written whole or not at all (a temporary file beside it, then renamed): a summary cut
    off mid-write never replaces the last good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False)  # fails before anything is written
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def emit_json(data: Any, path: str | Path | None = None) -> int:
    """A script's numbers: printed as JSON, and written to `path` when given; 0 (the exit status)."""
    print(json.dumps(to_jsonable(data), indent=2, allow_nan=False))
    if path:
        write_json(data, path)
    return 0


def write_figure(fig, path: str | Path, self_contained: bool = False) -> Path:
    """Write a plotly figure as HTML that opens without internet: plotly.js goes into the same folder
    (`plotly.min.js`, shared by every figure there) or, with `self_contained`, into the file itself.
    A CDN link is never used: viewers of these files are offline too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True if self_contained else "directory", full_html=True)
    return path
