"""Generated against true futures, frame by frame at native resolution: the figure a reader looks at first.

`futures_grid` samples one future per clip (fixed seed) and lays out, per clip, two rows (the truth, the world
model's future) and one column per horizon: the t = 0 frame, then the future frame nearest each asked horizon. Cells
are the clips' own pixels (no resampling); a label strip names the scene and the horizons, and each generated cell
carries its PSNR against the true frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from reworld.evaluation.video import psnr

LABEL_H = 12  # [px] height of a label strip
GAP = 2  # [px] between cells


@dataclass
class FuturesGrid:
    image: np.ndarray  # (H, W, 3) uint8
    horizons_s: list[float]  # the frames' times after t = 0, per column after the first
    clips: list[dict] = field(default_factory=list)  # per clip: scene, sample token, PSNR per horizon

    def to_dict(self) -> dict:
        return {"horizons_s": self.horizons_s, "clips": self.clips, "image_size": list(self.image.shape[:2])}


def future_columns(horizons: list[float], frame_rate: float, future_frames: int) -> list[int]:
    """Future frame indices (0-based, into the future frames) nearest each horizon [s]; an error for a horizon the
    clips do not reach."""
    cols = []
    for h in horizons:
        k = int(round(float(h) * frame_rate))
        if not 1 <= k <= future_frames:
            raise ValueError(f"horizon {h:g} s is outside the clips' future (1/{frame_rate:g} to "
                             f"{future_frames / frame_rate:g} s)")
        cols.append(k - 1)
    return cols


def _to_uint8(frame: torch.Tensor) -> np.ndarray:
    return ((frame.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def futures_grid(pipe, clips, horizons: list[float], steps: int = 20, guidance: float | None = None,
                 seed: int = 0) -> FuturesGrid:
    if not clips:
        raise ValueError("futures_grid needs at least one clip")
    data = pipe.config.data
    cols = future_columns(horizons, data.frame_rate, data.future_frames)
    w = pipe.default_guidance if guidance is None else guidance
    h, wd = clips[0].observation.frames.shape[-2:]
    n_cols = 1 + len(cols)
    width = n_cols * wd + (n_cols - 1) * GAP
    block = LABEL_H + 2 * h + GAP
    canvas = Image.new("RGB", (width, LABEL_H + len(clips) * block), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(["t = 0"] + [f"+{(k + 1) / data.frame_rate:.2f}".rstrip("0").rstrip(".") + " s"
                                          for k in cols]):
        draw.text((j * (wd + GAP) + 2, 0), text, fill=(0, 0, 0))
    rows = []
    for i, clip in enumerate(clips):
        gen = pipe.generate(clip, steps=steps, guidance=w, seed=seed + i).frames
        truth = clip.target.frames
        top = LABEL_H + i * block
        draw.text((2, top), f"{clip.scene_name}: true (top), generated (bottom)", fill=(0, 0, 0))
        now = Image.fromarray(_to_uint8(clip.observation.frames[-1]))
        canvas.paste(now, (0, top + LABEL_H))
        canvas.paste(now, (0, top + LABEL_H + h))
        scores = []
        for j, k in enumerate(cols, start=1):
            x = j * (wd + GAP)
            canvas.paste(Image.fromarray(_to_uint8(truth[k])), (x, top + LABEL_H))
            canvas.paste(Image.fromarray(_to_uint8(gen[k])), (x, top + LABEL_H + h))
            scores.append(float(psnr(gen[k:k + 1], truth[k:k + 1]).mean()))
        rows.append({"scene": clip.scene_name, "sample_token": clip.sample_token, "psnr_db": scores})
    return FuturesGrid(np.asarray(canvas), [(k + 1) / data.frame_rate for k in cols], rows)
