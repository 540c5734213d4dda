"""Per-clip VAE latents on disk, so that training never holds a split's frames in memory.

`prepare_latents` encodes every clip of a split once, streaming the clips through a `DataLoader`
(`train.num_workers` processes decode the JPEGs) and writing one safetensors file per clip,
`OUT/prepared/latents-<key>/<split>/<sample token>.safetensors`, atomically. The key is made of the VAE's weights
and the clip settings, so another VAE or clip layout never reads stale latents. Under several processes each rank
encodes its share of the clips (`indices[rank::world]`) and waits for the others; files already there are not
encoded again, so a second call, or a run resumed after a kill, does no work twice.

`LatentStore` reads them back by index, as the stages index a tensor (`store[idx]` → (B, C, t, h, w) on the
device); host memory does not grow with the number of clips.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reworld.config import Config
from reworld.data.loader import NuScenesClips
from reworld.models.layers import CheckpointError
from reworld.models.vae import encode_frames


def file_digest(folder: Path) -> str:
    """A digest of the safetensors files of a model folder (what identifies its weights)."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def latents_folder(out: Path, config: Config, vae_dir: Path, split: str) -> Path:
    d = config.data
    doc = {"vae": file_digest(vae_dir), "data": [d.dataroot, d.version, d.image_height, d.image_width,
                                                 d.context_frames, d.future_frames, d.frame_rate]}
    key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
    return out / "prepared" / f"latents-{key}" / split


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _clips(batch: list) -> list:
    return batch  # a batch of Clip objects, as they come


@torch.no_grad()
def prepare_latents(config: Config, out: Path, vae, vae_dir: Path, split: str, tokens: list[str], device,
                    batch: int = 8) -> Path:
    """Encode the clips of `split` named by `tokens` that have no latent file yet (this rank's share of them);
    returns the folder. Every rank returns once all files exist."""
    folder = latents_folder(out, config, vae_dir, split)
    folder.mkdir(parents=True, exist_ok=True)
    rank, world = _rank_world()
    missing = [t for t in tokens[rank::world] if not (folder / f"{t}.safetensors").is_file()]
    if missing:  # the devkit's tables are opened only when there is work
        ds = NuScenesClips(config.data, split=split, geometry=False)
        index = {ref.sample_token: i for i, ref in enumerate(ds.samples)}
        todo = [index[t] for t in missing]
        vae.eval()
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, todo), batch_size=batch,
                                             num_workers=config.train.num_workers, collate_fn=_clips)
        for clips in loader:
            frames = torch.stack([torch.cat([c.observation.frames, c.target.frames]) for c in clips])
            latents = encode_frames(vae, frames.to(device)).cpu()  # (B, C, t, h, w)
            for clip, lat in zip(clips, latents):
                path = folder / f"{clip.sample_token}.safetensors"
                tmp = path.with_name(f".{path.name}.tmp")
                save_file({"latents": lat.contiguous()}, str(tmp))
                tmp.replace(path)  # a file is whole or absent: nothing half-written is ever read
    _barrier()
    return folder


class LatentStore:
    """The prepared latents of `tokens`, indexed like a (N, C, t, h, w) tensor on `device`."""

    def __init__(self, folder: Path, tokens: list[str], device):
        self.folder, self.tokens, self.device = Path(folder), list(tokens), torch.device(device)
        missing = [t for t in self.tokens if not (self.folder / f"{t}.safetensors").is_file()]
        if missing:
            raise CheckpointError(f"{self.folder}: no latents for {len(missing)} clip(s), e.g. {missing[0]}; "
                                  f"they are made by prepare_latents")
        self.shape = (len(self.tokens), *self._read(0).shape)

    def _read(self, i: int) -> torch.Tensor:
        path = self.folder / f"{self.tokens[i]}.safetensors"
        try:
            return load_file(str(path))["latents"]
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable latent file ({e}); delete it to encode the clip again") \
                from None

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            rows = range(len(self.tokens))[idx]
        else:
            rows = np.atleast_1d(np.asarray(idx)).tolist()
        return torch.stack([self._read(int(i)) for i in rows]).to(self.device)
