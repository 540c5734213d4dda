"""Fingerprint of a synthetic world (docs/study.md amendment 12): sha256 of every file, and the 16 × 16-block means of
the key-frame JPEGs (to size a codec's rounding if the bytes differ). `write` stores them in REF; `check` compares a
world generated elsewhere with them and prints JSON.

    python scripts/world_fingerprint.py data/synth write .c2dev/ref     # here, before a device run
    python scripts/world_fingerprint.py data/synth check .c2dev/ref     # there, after `reworld synth`
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def blocks(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    h, w, _ = a.shape
    return a.reshape(h // 16, 16, w // 16, 16, 3).mean(axis=(1, 3))


def key_frames(names) -> list[str]:
    return [k for k in names if k.startswith("samples/") and k.endswith(".jpg")]


def main(root: Path, mode: str, ref: Path) -> dict | None:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    sha = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    if mode == "write":
        ref.mkdir(parents=True, exist_ok=True)
        (ref / "sha.json").write_text(json.dumps(sha))
        np.savez_compressed(ref / "blocks.npz", **{k.replace("/", "|"): blocks(root / k).astype(np.float16)
                                                   for k in key_frames(sha)})
        return None
    want = json.loads((ref / "sha.json").read_text())
    blk = np.load(ref / "blocks.npz")
    missing, extra = sorted(set(want) - set(sha)), sorted(set(sha) - set(want))
    differ = sorted(k for k in set(want) & set(sha) if want[k] != sha[k])
    other = [k for k in differ if not k.endswith(".jpg")]
    diffs = [float(np.abs(blocks(root / k) - blk[k.replace("/", "|")].astype(np.float32)).max())
             for k in key_frames(differ)]
    return {"files": len(sha), "n_missing": len(missing), "missing": missing[:20], "n_extra": len(extra),
            "extra": extra[:20], "differ": len(differ), "n_non_jpeg_differ": len(other), "non_jpeg_differ": other[:20],
            "jpeg_block_maxdiff": max(diffs, default=0.0),
            "jpeg_block_meanmax": float(np.mean(diffs)) if diffs else 0.0}


if __name__ == "__main__":
    out = main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
    if out is not None:
        print(json.dumps(out))
