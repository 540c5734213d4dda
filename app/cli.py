"""`python -m app`: load the checkpoints and the dataset (making the embedded synthetic world on first
start), build the demo, and serve it on 127.0.0.1 unless told otherwise."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from reworld.paths import ASSETS, CHECKPOINTS, REPO_ROOT, resolve_dataroot

DEFAULT_CHECKPOINTS = tuple(CHECKPOINTS / name for name in ("reworld", "vanilla"))
MAX_FILE_SIZE = "5mb"  # the app takes no uploads; anything larger is refused by Gradio


def _log(msg: str) -> None:
    print(f"[app] {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description="ReWorld Studio: the Gradio app.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--checkpoint", action="append", metavar="DIR",
                   help="checkpoint folder (repeatable; default: the embedded reworld and vanilla checkpoints)")
    p.add_argument("--dataroot", help="nuScenes-format root (default: the checkpoint's, the synthetic world)")
    p.add_argument("--version", help="table version under --dataroot, e.g. v1.0-mini")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="VAE and Video DiT precision (default auto: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's default, the machine's cores; the embedded world4s "
                        "models generate 1.7× faster on 2 cores than on 1. On a machine busy with other jobs, use 1 "
                        "or set OMP_WAIT_POLICY=PASSIVE: spinning threads stall there (benchmarks/bench_app.py "
                        "--compare-env measures both))")
    p.add_argument("--share", action="store_true", help="public Gradio link; needs --auth")
    p.add_argument("--auth", metavar="USER:PASS", help="require this login")
    return p


def parse_auth(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must be USER:PASS with both parts non-empty")
    return user, password


def _names(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    return [n if names.count(n) == 1 else f"{n}-{i + 1}" for i, n in enumerate(names)]


def model_dtype(name: str, device: str | None):
    """The torch dtype of `--dtype` on `device` (auto: bfloat16 on CUDA, where it halves memory and time)."""
    import torch

    from reworld.runtime import default_device

    if name == "auto":
        cuda = (torch.device(device) if device else default_device()).type == "cuda"
        return torch.bfloat16 if cuda else None
    return {"float32": None, "bfloat16": torch.bfloat16}[name]


def load_pipelines(paths: list[str | Path] | None, device: str | None = None, dtype: str = "auto") -> dict:
    """name → WorldActionPipeline. Explicit folders must all exist; of the embedded defaults, those present."""
    from reworld.models.layers import CheckpointError
    from reworld.pipelines import WorldActionPipeline

    if paths:
        folders = [Path(p) for p in paths]
    else:
        folders = [p for p in DEFAULT_CHECKPOINTS if (p / "config.json").is_file()]
        if not folders:
            raise CheckpointError(
                "no embedded checkpoint yet: " + " and ".join(str(p) for p in DEFAULT_CHECKPOINTS)
                + " are missing. Train them (python -m reworld train …) or pass --checkpoint DIR.")
    out, shared = {}, {}  # checkpoints with the same VAE folder share one VAE object
    for name, folder in zip(_names(folders), folders):
        t0 = time.perf_counter()
        out[name] = WorldActionPipeline.from_pretrained(folder, device=device, shared_vaes=shared,
                                                        torch_dtype=model_dtype(dtype, device))
        _log(f"loaded {name} from {folder} on {out[name].device} ({out[name].video_dit.dtype}) in "
             f"{time.perf_counter() - t0:.1f} s")
    return out


def open_dataset(data_cfg, dataroot: str | None = None, version: str | None = None):
    """The clips of every scene; the embedded synthetic world is generated first if it is absent."""
    from reworld.config import DataConfig
    from reworld.data.loader import NuScenesClips

    changes = {k: v for k, v in (("dataroot", dataroot), ("version", version)) if v}
    cfg = DataConfig(**{**{f: getattr(data_cfg, f) for f in data_cfg.__dataclass_fields__}, **changes})
    root = Path(resolve_dataroot(cfg.dataroot))
    default_root = (REPO_ROOT / DataConfig.dataroot).resolve()
    is_default_world = root.resolve() == default_root and cfg.version == DataConfig.version
    if is_default_world and (not (root / cfg.version / "scene.json").is_file() or _stale_world(root)):
        _make_world(root, cfg)
    return NuScenesClips(cfg, split="all", dataroot=str(root), version=cfg.version)


def _stale_world(root: Path) -> bool:
    """The embedded world was written by an older generator (e.g. synth-1.0, before nuScenes' timing)."""
    from reworld.data.synth import GENERATOR_VERSION, world_generator

    return world_generator(root) != GENERATOR_VERSION


def _make_world(root: Path, cfg) -> None:
    from tqdm import tqdm

    from reworld.data.synth import generate_world

    _log(f"generating the synthetic world in {root} ({cfg.synth_scenes} scenes)")
    bar = tqdm(total=cfg.synth_scenes, desc="synthetic world", unit="scene")

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    generate_world(root, num_scenes=cfg.synth_scenes, seed=cfg.synth_seed, version=cfg.version,
                   image_size=(cfg.synth_image_height, cfg.synth_image_width), progress=progress)
    bar.close()


def serve(demo, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, auth=None,
          prevent_thread_lock: bool = False):
    """Launch with the app's safety settings: heavy jobs one at a time, files served only from the app's
    output folder and the assets, no share without auth, a small upload limit."""
    if share and not auth:
        raise ValueError("--share makes the app public: it needs --auth USER:PASS")
    ctx = demo.reworld_context
    demo.queue(default_concurrency_limit=1)
    quieter_queue(demo)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth,
                       allowed_paths=[str(ctx.out_dir), str(ASSETS)], max_file_size=MAX_FILE_SIZE,
                       prevent_thread_lock=prevent_thread_lock, show_error=False, ssr_mode=False,
                       quiet=prevent_thread_lock, css=_css())


QUEUE_POLL_S = 0.01


def quieter_queue(demo) -> None:
    """Gradio's queue looks for new events every 1 ms while it has nothing to start (`Queue.sleep_when_free`, a
    private setting of the pinned gradio 6.31): ≈ 10 % of a core while the app waits or a job runs, taken from the
    model's two threads on a 2-core machine. Every 10 ms instead (an event starts at most 10 ms later): the loop
    thread used 0.99 s of CPU in 10 idle seconds before, 0.26 s after, and pick → video + plan took 0.93× the time
    (medians 2.52 against 2.71 s, three alternating app runs of 12 picks each beside a low-priority job). (Polling
    progress every 50 ms instead of 10 changed neither figure: left as it is.) A gradio without the setting is left
    as it is, and a test fails on it."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and isinstance(getattr(queue, "sleep_when_free", None), float):
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_POLL_S)


def _css() -> str:
    from .demo import CSS

    return CSS


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    from reworld.models.layers import CheckpointError

    t0 = time.perf_counter()
    try:
        auth = parse_auth(args.auth)
        if args.share and not auth:
            raise ValueError("--share makes the app public: it needs --auth USER:PASS")
        if args.version and not args.dataroot:
            raise ValueError("--version needs --dataroot")
        if args.threads < 0:
            raise ValueError("--threads must be ≥ 0")
        _check_port(args.host, args.port)  # before minutes of loading, not after
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        pipelines = load_pipelines(args.checkpoint, args.device, args.dtype)
        first = next(iter(pipelines.values()))
        dataset = open_dataset(first.clip_spec, args.dataroot, args.version)
        _log(f"dataset {dataset.root} ({dataset.version}): {len(dataset.samples)} samples")
        from .demo import create_demo

        demo = create_demo(pipelines, dataset)
    except (ValueError, OSError, CheckpointError) as e:  # DatasetError, ConfigError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    _log(f"ready to serve after {time.perf_counter() - t0:.1f} s; http://{args.host}:{args.port}")
    # a plain `kill` ends the app like Ctrl-C does, so exit handlers remove the app's output folder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(demo, args.host, args.port, args.share, auth)
    except OSError as e:  # the port was taken while the models loaded
        print(f"error: {e}".splitlines()[0] + f" (pass another --port than {args.port})", file=sys.stderr)
        return 2
    return 0


def _check_port(host: str, port: int) -> None:
    """A short error when the port is taken (Gradio would end in a traceback after the models loaded)."""
    import socket

    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1–65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a listener still blocks it
        try:
            s.bind((host, port))
        except OSError:
            raise OSError(f"port {port} on {host} is in use (another app?): pass a free one with --port") from None
