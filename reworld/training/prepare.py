"""Per-clip files on disk, so that training never holds a split's frames, features or negatives in memory.

Three kinds, each one safetensors file per clip, `OUT/prepared/<kind>-<key>/<split>/<sample token>.safetensors`,
written atomically (a file is whole or absent):
- `prepare_latents`: VAE latents, the clips streamed through a `DataLoader` (`train.num_workers` processes
  decode the JPEGs). Key: the VAE's weights and the clip settings.
- `prepare_negatives`: the hard negatives of each clip (`reworld.planning.hard_negatives`), from the map
  geometry and the logged trajectories alone (no image is decoded). Key: K, the seed and the data settings.
- `prepare_hidden_states`: the frozen Video DiT's hidden states of the blocks the Action DiT reads, pooled as
  configured, in bf16 (stage `action` with `action.feature_cache`). Key: the Video DiT's and VAE's weights, the
  blocks, σ, pooling and the clip settings. Each clip's noise comes from its own generator, seeded by the run's
  seed and the clip's token, so the files do not depend on batching or the number of processes.
Under several processes each rank makes its share (`tokens[rank::world]`) and waits for the others; files
already there are not made again, so a second call, or a run resumed after a kill, does no work twice.

`ClipStore` (and `LatentStore`, `NegativeStore`, `HiddenStateStore`) read them back by index, as the stages
index a tensor (`store[idx]` → a batch on the device); host memory does not grow with the number of clips. In
training the loop reads each step's files ahead through a `DataLoader` (`train.num_workers` processes, pinned
memory on CUDA) and `serve`s them to the stores, so the step finds its batch already read.
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
from reworld.models.layers import CheckpointError, file_digest
from reworld.models.vae import encode_frames


def _pixels_doc(config: Config) -> list:
    """What decides a clip's pixels beyond its size: the camera and how its image is fitted to the frame (a folder
    prepared before either was in its key, 2026-12-05, is not read again)."""
    return [config.data.camera, config.data.image_fit]


def latents_folder(out: Path, config: Config, vae_dir: Path, split: str) -> Path:
    d = config.data
    doc = {"vae": file_digest(vae_dir), "data": [d.dataroot, d.version, d.image_height, d.image_width,
                                                 d.context_frames, d.future_frames, d.frame_rate],
           "pixels": _pixels_doc(config)}
    return out / "prepared" / f"latents-{_key(doc)}" / split


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
    missing = _my_missing(folder, tokens)
    if missing:  # the devkit's tables are opened only when there is work
        dev = torch.device(device)
        # the global RNG as it was: a DataLoader draws its base seed from it, and the stage initialises its model
        # after this, so a run that encodes the clips itself would otherwise start from another init than one that
        # finds them encoded
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            _encode_missing(config, folder, vae, split, missing, device, batch)
    _barrier()
    return folder


def _encode_missing(config: Config, folder: Path, vae, split: str, missing: list[str], device, batch: int) -> None:
    """Encode the clips `missing` of `split` into one latent file each (no gradients: the caller's `no_grad`)."""
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
            write_clip_file(folder, clip.sample_token, {"latents": lat})


def _key(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _data_doc(config: Config) -> list:
    d = config.data
    return [d.dataroot, d.version, d.image_height, d.image_width, d.context_frames, d.future_frames, d.frame_rate,
            d.horizon_s, d.num_poses]


def token_seed(seed: int, token: str) -> int:
    """A clip's own seed: the run's seed and the clip's token, nothing about batches or processes."""
    return int(hashlib.sha256(f"{seed}:{token}".encode()).hexdigest()[:15], 16)


def _my_missing(folder: Path, tokens: list[str]) -> list[str]:
    """This rank's share of `tokens` whose file is not in `folder` yet."""
    folder.mkdir(parents=True, exist_ok=True)
    rank, world = _rank_world()
    return [t for t in tokens[rank::world] if not (folder / f"{t}.safetensors").is_file()]


def write_clip_file(folder: Path, token: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    path = folder / f"{token}.safetensors"
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)  # a file is whole or absent: nothing half-written is ever read


# ---------------------------------------------------------------------------------------------- hard negatives
def negatives_folder(out: Path, config: Config, split: str) -> Path:
    """Keyed by K, the seed, the clip settings and the scorer that labels the negatives (its every setting), so a
    change of scorer (e.g. NAVSIM's simulation) never reuses negatives another one labelled."""
    import dataclasses

    from reworld.planning.pdm import PDMScorerConfig

    scorer = {k: v for k, v in dataclasses.asdict(PDMScorerConfig()).items()}
    doc = {"k": config.loss.hn_num_negatives, "seed": config.train.seed, "data": _data_doc(config), "scorer": scorer,
           "agents": "navsim-observation"}  # the loader's agents since 2026-12-04 (entering, leaving, to horizon + 1 s)
    return out / "prepared" / f"negatives-{_key(doc)}" / split


def prepare_negatives(config: Config, out: Path, split: str, tokens: list[str]) -> Path:
    """K hard negatives per clip of `split` (this rank's share of the missing ones); returns the folder once every
    rank is done. Each file: `trajectories` (K, 8, 3), `mask` (K,) (fewer than K when the generator finds fewer),
    and the kinds' counts in its metadata."""
    from reworld.planning.hard_negatives import generate_hard_negatives
    from reworld.planning.scene import PlanningScene

    folder = negatives_folder(out, config, split)
    missing = _my_missing(folder, tokens)
    if missing:
        k = config.loss.hn_num_negatives
        ds = NuScenesClips(config.data, split=split, geometry=True, frames=False)  # geometry only: no image
        index = {ref.sample_token: i for i, ref in enumerate(ds.samples)}
        for token in missing:
            clip = ds[index[token]]
            hn = generate_hard_negatives(PlanningScene.from_clip(clip), clip.target.trajectory.numpy(), k=k,
                                         seed=token_seed(config.train.seed, token) % (2**31))
            trajs, mask = torch.zeros(k, 8, 3), torch.zeros(k, dtype=torch.uint8)
            m = len(hn.trajectories)
            if m:
                trajs[:m] = torch.from_numpy(np.asarray(hn.trajectories, dtype=np.float32))
                mask[:m] = 1
            counts = {kind: int(c) for kind, c in hn.counts.items()}
            write_clip_file(folder, token, {"trajectories": trajs, "mask": mask}, {"counts": json.dumps(counts)})
    _barrier()
    return folder


# ---------------------------------------------------------------------------------------------- hidden states
def hidden_states_folder(out: Path, config: Config, video_dir: Path, vae_dir: Path, blocks: list[int],
                         split: str) -> Path:
    doc = {"video": file_digest(video_dir), "vae": file_digest(vae_dir), "blocks": list(blocks),
           "sigma": config.action.feature_sigma, "pool": config.action.feature_pool, "seed": config.train.seed,
           "data": _data_doc(config), "pixels": _pixels_doc(config)}
    if config.action.feature_draws != 1:  # one draw keeps the key (and the files) it always had
        doc["draws"] = config.action.feature_draws
    if config.action.align_sigma is not None:  # the files also hold the alignment target's own pass
        doc["align"] = [config.action.align_sigma, config.action.align_video_block]
    return out / "prepared" / f"features-{_key(doc)}" / split


def check_feature_draws(draws) -> int:
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"action.feature_draws must be an integer ≥ 1, got {draws!r}")
    return draws


def draw_seed(seed: int, token: str, draw: int) -> int:
    """The noise seed of a clip's feature draw: draw 0 is the one-draw cache's (`token_seed`), so both agree on it."""
    return token_seed(seed, token if draw == 0 else f"{token}/draw{draw}")


def step_draw(seed: int, step: int, token: str, draws: int) -> int:
    """Which of a clip's `draws` cached noise draws training step `step` reads: a function of the run's seed, the
    step and the clip alone (so a resumed run, any batch and any number of processes read the same)."""
    return int(hashlib.sha256(f"{seed}:{step}:{token}".encode()).hexdigest()[:8], 16) % draws


def draw_key(block: int | str, draw: int) -> str:
    """The tensor name of block `block`'s draw (`block{k}`, `block{k}@{d}`), or of the target's (`target@{d}`)."""
    name = block if isinstance(block, str) else f"block{block}"
    return name if draw == 0 else f"{name}@{draw}"


@torch.no_grad()
def prepare_hidden_states(config: Config, folder: Path, video_dit, latents, tokens: list[str], command: torch.Tensor,
                          ego_status: torch.Tensor, n_ctx: int, blocks: list[int], device, batch: int = 8) -> Path:
    """The Video DiT hidden states (`reworld.pipelines.hidden_states`) of the clips `tokens` (rows of `latents`,
    `command`, `ego_status`) with no file yet in `folder` (this rank's share), in bf16, one file per clip holding
    `action.feature_draws` noise draws (`block{k}`, then `block{k}@{d}`); with `action.align_sigma`, each draw's
    alignment-target frame means too (`target`, `target@{d}`: block `align_video_block` with the future at that σ)."""
    from reworld.pipelines.hidden_states import target_frames, video_hidden_states

    draws = check_feature_draws(config.action.feature_draws)
    missing = set(_my_missing(folder, tokens))
    rows = [i for i, t in enumerate(tokens) if t in missing]
    video_dit.eval()
    for i in range(0, len(rows), batch):
        idx = rows[i:i + batch]
        files: list[dict] = [{} for _ in idx]
        for d in range(draws):
            gens = [torch.Generator().manual_seed(draw_seed(config.train.seed, tokens[j], d)) for j in idx]
            feats = video_hidden_states(video_dit, latents[idx], command[idx].to(device), ego_status[idx].to(device),
                                        n_ctx, blocks, config.action.feature_sigma, config.action.feature_pool, gens)
            for row in range(len(idx)):
                files[row].update({draw_key(k, d): f[row].to(torch.bfloat16).cpu() for k, f in zip(blocks, feats)})
            align_sigma = config.action.align_sigma
            if align_sigma is not None:
                gens = [torch.Generator().manual_seed(draw_seed(config.train.seed, f"{tokens[j]}/target", d))
                        for j in idx]
                frames = target_frames(video_dit, latents[idx], command[idx].to(device), ego_status[idx].to(device),
                                       n_ctx, config.action.align_video_block, align_sigma, gens)
                for row in range(len(idx)):
                    files[row][draw_key("target", d)] = frames[row].to(torch.bfloat16).cpu()
        for row, j in enumerate(idx):
            write_clip_file(folder, tokens[j], files[row])
    _barrier()
    return folder


# ---------------------------------------------------------------------------------------------- reading
class ClipStore:
    """Per-clip files of `tokens` in `folder`, indexed like tensors with a leading clip axis: `store[idx]` gives a
    dict of the batch's tensors on `device` (floating ones as `dtype` when given). `folder` may also be a list, one
    folder per token (clips of several worlds, each prepared in its own folder: `joined`)."""

    what = "prepared"
    made_by = "prepare"

    def __init__(self, folder: Path | list[Path], tokens: list[str], device, dtype: torch.dtype | None = None):
        self.tokens, self.device, self.dtype = list(tokens), torch.device(device), dtype
        folders = [Path(f) for f in folder] if isinstance(folder, (list, tuple)) else [Path(folder)] * len(self.tokens)
        if len(folders) != len(self.tokens):
            raise ValueError(f"{len(folders)} folders for {len(self.tokens)} tokens")
        # a joined store of no clips (every world's split empty) has no folder; it still reads as empty
        self.folder = folders[0] if folders else (None if isinstance(folder, (list, tuple)) else Path(folder))
        self.paths = [f / f"{t}.safetensors" for f, t in zip(folders, self.tokens)]
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            raise CheckpointError(f"{missing[0].parent}: no {self.what} file for {len(missing)} clip(s), e.g. "
                                  f"{missing[0].stem}; they are made by {self.made_by}")

    @classmethod
    def joined(cls, parts: list[tuple[Path, list[str]]], device, **kwargs):
        """One store over the clips of several folders, in the order given: `parts` = [(folder, tokens), …]."""
        folders = [Path(f) for f, tokens in parts for _ in tokens]
        return cls(folders, [t for _, tokens in parts for t in tokens], device, **kwargs)

    def read(self, i: int) -> dict[str, torch.Tensor]:
        path = self.paths[i]
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable {self.what} file ({e}); delete it to make it again") \
                from None

    def rows(self, idx) -> list[int]:
        if isinstance(idx, slice):
            return list(range(len(self.tokens))[idx])
        return [int(i) for i in np.atleast_1d(np.asarray(idx)).tolist()]

    def read_cpu(self, idx, step: int | None = None) -> dict[str, torch.Tensor]:
        """The batch `idx` read from its files, on the CPU (what a `DataLoader` worker does); `step`: the training
        step it is read for (the loop passes it; stores whose files hold several draws choose by it)."""
        files = [self.read(i) for i in self.rows(idx)]
        out = {}
        for name in files[0]:
            try:
                out[name] = torch.stack([f[name] for f in files])
            except (KeyError, RuntimeError) as e:
                raise CheckpointError(f"{self.folder}: the {self.what} files disagree on {name!r} ({e})") from None
        return out

    def serve(self, idx, tensors: dict[str, torch.Tensor] | None) -> None:
        """Hold a batch read ahead (by the training loop's `DataLoader`): the next `batch(idx)` of the same rows
        takes it instead of reading the files again."""
        self._served = None if tensors is None else (self.rows(idx), tensors)

    def batch(self, idx) -> dict[str, torch.Tensor]:
        served = getattr(self, "_served", None)
        rows = self.rows(idx)
        cpu = served[1] if served is not None and served[0] == rows else self.read_cpu(rows)
        out = {}
        for name, t in cpu.items():
            if self.dtype is not None and t.is_floating_point():
                t = t.to(self.dtype)
            out[name] = t.to(self.device, non_blocking=True)
        return out

    def __len__(self) -> int:
        return len(self.tokens)


class LatentStore(ClipStore):
    """The prepared latents of `tokens`, indexed like a (N, C, t, h, w) tensor on `device`."""

    what, made_by = "latent", "prepare_latents"

    def __init__(self, folder: Path, tokens: list[str], device):
        super().__init__(folder, tokens, device)
        self.shape = (len(self.tokens), *self._read(0).shape)

    def _read(self, i: int) -> torch.Tensor:
        try:
            return self.read(i)["latents"]
        except KeyError:
            raise CheckpointError(f"{self.paths[i]}: not a readable latent file "
                                  f"(no 'latents'); delete it to encode the clip again") from None

    def read_cpu(self, idx, step: int | None = None) -> dict[str, torch.Tensor]:
        return {"latents": torch.stack([self._read(i) for i in self.rows(idx)])}

    def __getitem__(self, idx) -> torch.Tensor:
        return self.batch(idx)["latents"]


class NegativeStore(ClipStore):
    """The prepared hard negatives: `store[idx]` → (trajectories (B, K, 8, 3), mask (B, K) bool) on `device`."""

    what, made_by = "hard-negative", "prepare_negatives"

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.batch(idx)
        return b["trajectories"], b["mask"].bool()

    def counts(self) -> dict[str, int]:
        """The generator's counts per kind over every clip (read from the files' headers only)."""
        from safetensors import safe_open

        total: dict[str, int] = {}
        for t in self.tokens:
            with safe_open(str(self.folder / f"{t}.safetensors"), "pt") as f:
                for kind, c in json.loads((f.metadata() or {}).get("counts", "{}")).items():
                    total[kind] = total.get(kind, 0) + int(c)
        return total


class HiddenStateStore(ClipStore):
    """The prepared Video DiT hidden states: `store[idx]` → one (B, S', D) float32 tensor per block, on `device`.
    With several noise draws per file (`draws`, `seed`), a batch read for training step `step` takes each clip's
    draw `step_draw(seed, step, token, draws)`; read without a step (validation) it takes draw 0."""

    what, made_by = "hidden-state", "prepare_hidden_states"

    def __init__(self, folder: Path, tokens: list[str], blocks: list[int], device, draws: int = 1, seed: int = 0,
                 target: bool = False):
        super().__init__(folder, tokens, device, dtype=torch.float32)
        self.blocks, self.draws, self.seed = list(blocks), check_feature_draws(draws), seed
        self.names = [f"block{k}" for k in self.blocks] + (["target"] if target else [])

    def read_cpu(self, idx, step: int | None = None) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        out: dict[str, list] = {name: [] for name in self.names}
        for i in self.rows(idx):
            token = self.tokens[i]
            d = 0 if step is None or self.draws == 1 else step_draw(self.seed, step, token, self.draws)
            path = self.folder / f"{token}.safetensors"
            try:
                with safe_open(str(path), "pt") as f:  # only this step's draw is read
                    for name in self.names:
                        out[name].append(f.get_tensor(draw_key(name, d)))
            except (SafetensorError, OSError, ValueError) as e:
                raise CheckpointError(f"{path}: not a readable {self.what} file ({e}); delete it to make it again") \
                    from None
            except KeyError as e:  # safetensors names a missing tensor in a SafetensorError on some versions
                raise CheckpointError(f"{path}: no hidden states {e.args[0]} (made with fewer draws?)") from None
        return {name: torch.stack(ts) for name, ts in out.items()}

    def target(self, idx) -> torch.Tensor:
        """The alignment target's frame means (B, t, D) of the batch (a store made with `target=True`)."""
        if "target" not in self.names:
            raise ValueError("this hidden-state store holds no alignment target (action.align_sigma is not set)")
        return self.batch(idx)["target"]

    def __getitem__(self, idx) -> list[torch.Tensor]:
        b = self.batch(idx)
        try:
            return [b[f"block{k}"] for k in self.blocks]
        except KeyError as e:
            raise CheckpointError(f"{self.folder}: no hidden states of {e.args[0]} in the files") from None
