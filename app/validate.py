"""Server-side checks of every value that arrives from the UI or the API, before anything touches a model.

Each check returns the converted value or raises `gr.Error` with a short message that names the field.
Gradio's own component checks (dropdown choices, slider bounds) are not relied on: an API client can
send anything JSON can carry (NaN included).
"""
from __future__ import annotations

import math
import re
from numbers import Real

import gradio as gr

from reworld.data.types import COMMANDS

MAX_STEPS = 200  # denoising steps per request
GUIDANCE_RANGE = (0.0, 5.0)  # intermediate-supervised guidance w
MAX_SEED = 2**31 - 1
SAMPLES_RANGE = (1, 64)  # trajectory samples per plan
LOGGED = "logged"  # command choice: the clip's own driving command
COMMAND_CHOICES = (LOGGED, *COMMANDS)
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _integer(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise gr.Error(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or float(value) != int(value):
        raise gr.Error(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise gr.Error(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def steps(value) -> int:
    return _integer(value, "steps", 1, MAX_STEPS)


def seed(value) -> int:
    return _integer(value, "seed", 0, MAX_SEED)


def num_samples(value) -> int:
    return _integer(value, "number of trajectory samples", *SAMPLES_RANGE)


def count(value, name: str, lo: int, hi: int) -> int:
    return _integer(value, name, lo, hi)


def guidance(value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise gr.Error(f"guidance w must be a finite number, got {value!r}")
    lo, hi = GUIDANCE_RANGE
    if not lo <= float(value) <= hi:
        raise gr.Error(f"guidance w must be in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def command(value) -> str | None:
    """None for the clip's logged command, else one of COMMANDS."""
    if value in (None, "", LOGGED):
        return None
    if value not in COMMANDS:
        raise gr.Error(f"command must be one of {list(COMMAND_CHOICES)}, got {value!r}")
    return value


def name(value, what: str, known) -> str:
    """A name picked from a list (scene, checkpoint, CSV): never a path, a URL or anything not listed."""
    if not isinstance(value, str) or not value:
        raise gr.Error(f"{what} must be a non-empty name, got {value!r}")
    if "/" in value or "\\" in value or ".." in value or value.startswith("~") or _URL.match(value):
        raise gr.Error(f"{what} must be a plain name, not a path or URL: {value!r}")
    if value not in known:
        shown = sorted(known)
        more = f" … ({len(shown)} in all)" if len(shown) > 12 else ""
        raise gr.Error(f"unknown {what} {value!r}; known: {', '.join(shown[:12])}{more}")
    return value


def listed_file(value, what: str, known) -> str:
    """A file the server listed itself, relative to its folder (`known`), possibly one folder down
    ("c3-fixed/planner_study.csv"): only an exact member of the list, never `..`, an absolute path or a URL."""
    if not isinstance(value, str) or not value:
        raise gr.Error(f"{what} must be a non-empty name, got {value!r}")
    if ("\\" in value or ".." in value or value.startswith(("/", "~")) or _URL.match(value)
            or value.count("/") > 1):
        raise gr.Error(f"{what} must be a file of the list, not a path or URL: {value!r}")
    if value not in known:
        raise gr.Error(f"unknown {what} {value!r}; known: {', '.join(sorted(known))}")
    return value


def names(values, what: str, known, lo: int = 1, hi: int = 2) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not lo <= len(values) <= hi:
        raise gr.Error(f"pick {lo} to {hi} {what}(s), got {values!r}")
    out = [name(v, what, known) for v in values]
    if len(set(out)) != len(out):
        raise gr.Error(f"the same {what} is listed twice: {out}")
    return out
