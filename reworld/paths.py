"""Where things live on disk: the repository root, its default config and assets, and how a dataroot given
relative to the repository resolves. The one copy every layer and entry point uses."""
from __future__ import annotations

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
ASSETS = REPO_ROOT / "assets"
CHECKPOINTS = ASSETS / "checkpoints"  # the embedded default: shipped checkpoints and the video judge
JUDGE_CONFIG = REPO_ROOT / "configs" / "world4s.yaml"  # the clips the video judge reads
JUDGE_CHECKPOINT = CHECKPOINTS / "judge"  # the video judge (`WorldJudge`), validated (validation.json)
# the first offline metric network (`ReWorldVideoNet`), for the first checkpoints' clips (5 frames at 64×128): not
# embedded since 2026-12-08 (no embedded checkpoint reads its clips; `assets/` ≤ 100 MB), written here beside those
# checkpoints by scripts/train_embedded.sh, as they are
CLIP_NET_CHECKPOINT = REPO_ROOT / "runs" / "v1" / "video_net"


def resolve_dataroot(path: str | Path) -> str:
    """An absolute or existing path as it is; otherwise the path relative to the repository root (so the
    configs' `data/synth` works from any working directory)."""
    p = Path(path)
    return str(p if p.is_absolute() or p.exists() else REPO_ROOT / p)


def default_judge(checkpoint: str | Path) -> str | None:
    """The shipped video judge's folder, when it is there and reads the clips of `checkpoint` (its config.json:
    frames before and after t = 0, frame rate)."""
    judge, run = Path(JUDGE_CHECKPOINT) / "config.json", Path(checkpoint) / "config.json"
    if not (judge.is_file() and run.is_file()):
        return None
    j, d = json.loads(judge.read_text()), json.loads(run.read_text()).get("data", {})
    spec = (j.get("context_frames"), j.get("future_frames"), float(j.get("frame_rate", 0)))
    return str(JUDGE_CHECKPOINT) if spec == (d.get("context_frames"), d.get("future_frames"),
                                             float(d.get("frame_rate", -1))) else None


def default_clip_net(checkpoint: str | Path | None = None) -> str | None:
    """The shipped metric network's folder, when it is there and, given a checkpoint, reads its clips (the last
    context frame and the future: `num_frames`; `frame_size`)."""
    net = CLIP_NET_CHECKPOINT / "config.json"
    if not net.is_file():
        return None
    if checkpoint is not None:
        run = Path(checkpoint) / "config.json"
        if not run.is_file():
            return None
        n, d = json.loads(net.read_text()), json.loads(run.read_text()).get("data", {})
        if (n.get("num_frames"), list(n.get("frame_size", []))) != (
                1 + d.get("future_frames", -1), [d.get("image_height"), d.get("image_width")]):
            return None
    return str(CLIP_NET_CHECKPOINT)
