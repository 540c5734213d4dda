"""The one check of row arrays that come from outside (scene files, feature sets): a finite 2-D float array
whose rows have the expected width, with enough of them, or a short error naming the field."""
from __future__ import annotations

from typing import Any

import numpy as np


def finite_rows(value: Any, where: str, what: str, cols: int | None = None, min_rows: int = 1,
                dtype=np.float64, error: type[ValueError] = ValueError) -> np.ndarray:
    """`value` as a finite (R, cols) array of `dtype` with R ≥ `min_rows` (any cols ≥ 1 when `cols` is None).
    `what` describes a row for the message (e.g. "[x, y, heading]"); `error` is the ValueError subclass raised."""
    try:
        if hasattr(value, "detach"):  # a torch tensor (any dtype, any device)
            value = value.detach().cpu().double().numpy()
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise error(f"{where}: expected rows {what}") from None
    if arr.ndim != 2 or (arr.shape[1] != cols if cols is not None else arr.shape[1] < 1):
        raise error(f"{where}: expected rows {what}, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise error(f"{where}: expected at least {min_rows} rows {what}, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise error(f"{where}: contains NaN or inf")
    return arr
