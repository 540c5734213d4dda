"""Training under `accelerate launch` (two CPU processes on gloo), and runs killed with SIGKILL.

Every run here is the tiny config on the tiny world, a few steps; subprocesses get one thread each.
"""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ports import free_port
from reworld.training import run_stage
from reworld.training.checkpoint import complete_checkpoints, latest_checkpoint

REPO = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
LAUNCH_TIMEOUT = 300  # [s] a launch that takes longer has hung (a normal one takes ~20 s)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def _launch(args: list[str], processes: int, cwd: Path) -> subprocess.CompletedProcess:
    """`accelerate launch` with the flags from STACK-NOTES (`--multi_gpu` + Accelerator(cpu=True) → MULTI_CPU)."""
    if processes == 1:
        flags = ["--cpu", "--num_processes", "1"]
    else:
        flags = ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                 "--main_process_port", str(free_port())]
    cmd = ACCELERATE + flags + ["--mixed_precision", "no", "--dynamo_backend", "no"] + args
    out = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


# Runs the real CLI's commands one after another in one launch (a JSON list: {"argv": [...], "dump": bool} or
# {"copy": [src, dst]}, a folder rank 0 copies while the others wait), so that the processes start once. The
# process group stays up between runs and is ended after the last one. With "dump", each rank writes its trained
# parameters beside the run (`<stage>-rank<i>-of-<n>.safetensors`). Each run's result goes to argv[2].
SEQUENCE = textwrap.dedent('''
    import json, os, shutil, sys
    import torch.distributed as dist
    from safetensors.torch import save_file
    import reworld.training.stages as stages
    from reworld.cli import main

    _run, dump, results = stages.run, [False], []

    def run(spec, config, out, max_steps, resume, accelerator):
        result = _run(spec, config, out, max_steps, resume, accelerator)
        if dump[0]:
            state = {f"{k}.{n}": t.detach().cpu().contiguous() for k, m in spec.models.items()
                     for n, t in m.state_dict().items()}
            name = f"{spec.name}-rank{accelerator.process_index}-of-{accelerator.num_processes}.safetensors"
            save_file(state, os.path.join(out, name), metadata={"type": accelerator.distributed_type.name})
        results.append(result)
        return result

    stages.run = run
    stages.end_run = lambda accelerator: accelerator.wait_for_everyone()
    for item in json.load(open(sys.argv[1])):
        if "copy" in item:
            if dist.get_rank() == 0:
                shutil.rmtree(item["copy"][1], ignore_errors=True)
                shutil.copytree(*item["copy"])
            dist.barrier()
            continue
        dump[0] = item["dump"]
        code = main(item["argv"])
        if code:
            sys.exit(code)
    if dist.get_rank() == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(results, f, default=float)
    dist.barrier()
    dist.destroy_process_group()
''')

# A noise-free stage through the real loop: a regression whose step is a function of the batch alone, so
# n processes must match one process on the same global batch. `head` never gets a gradient; weight decay
# is on, so a zero gradient in its place (instead of none) would move it.
NOISE_FREE = textwrap.dedent('''
    import os, sys
    import torch
    from safetensors.torch import save_file
    from reworld.config import load_config, replace
    from reworld.training.loop import StageSpec, run
    from reworld.training.stages.common import end_run, make_accelerator

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
            self.head = torch.nn.Linear(16, 2)  # unused, like the IG heads at lambda_ig = 0

        def save_pretrained(self, path, safe_serialization=True):
            os.makedirs(path, exist_ok=True)
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, os.path.join(path, "w.safetensors"))

    out = sys.argv[2]
    config = replace(load_config(sys.argv[1]), train={"weight_decay": 0.1, "lr": 1e-2})
    torch.manual_seed(0)
    net = Net()
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def step_fn(idx, generator):
        idx = torch.as_tensor(idx)
        return {"total": ((net.body(x[idx]) - y[idx]) ** 2).mean()}

    acc = make_accelerator()
    spec = StageSpec("toy", {"net": net}, [{"params": list(net.parameters())}], 16, step_fn, batch_size=4)
    run(spec, config, out, 5, False, acc)
    heads = [p.grad is None for p in net.head.parameters()]
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()},
              os.path.join(out, f"rank{acc.process_index}-of-{acc.num_processes}.safetensors"),
              metadata={"type": acc.distributed_type.name, "head_grad_none": str(all(heads))})
    end_run(acc)
''')


@pytest.fixture(scope="module")
def vae_run(tiny_config_path, tmp_path_factory):
    """A run folder holding a 1-step VAE (stage vae, one process)."""
    out = tmp_path_factory.mktemp("vae-run")
    run_stage("vae", str(tiny_config_path), str(out), max_steps=1)
    return out


def _fresh(vae_run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    shutil.copytree(vae_run / "vae", dest / "vae")
    shutil.copy(vae_run / "config.json", dest / "config.json")
    return dest


def _train_losses(out: Path) -> dict:
    rows = csv.DictReader(open(out / "logs" / "video.csv"))
    return {(int(r["step"]), r["name"]): float(r["value"]) for r in rows if r["kind"] == "train"}


# ---------------------------------------------------------------------------------------------- distributed
def _rank_states(out: Path, stage: str) -> tuple[dict, dict]:
    from safetensors import safe_open

    r0, r1 = (out / f"{stage}-rank{i}-of-2.safetensors" for i in (0, 1))
    with safe_open(str(r0), "pt") as f:
        assert f.metadata()["type"] == "MULTI_CPU"
    r0, r1 = load_file(str(r0)), load_file(str(r1))
    assert r0.keys() == r1.keys() and len(r0) > 10
    return r0, r1


def test_two_processes_match_one_on_the_same_global_batch(tiny_config_path, tmp_path):
    script = tmp_path / "noise_free.py"
    script.write_text(NOISE_FREE)
    one, two = tmp_path / "one", tmp_path / "two"
    _launch([str(script), str(tiny_config_path), str(one)], processes=1, cwd=REPO)
    _launch([str(script), str(tiny_config_path), str(two)], processes=2, cwd=REPO)
    from safetensors import safe_open

    ref = load_file(str(one / "rank0-of-1.safetensors"))
    with safe_open(str(one / "rank0-of-1.safetensors"), "pt") as f:
        assert f.metadata()["type"] == "NO"
    for rank in (0, 1):
        path = two / f"rank{rank}-of-2.safetensors"
        with safe_open(str(path), "pt") as f:
            assert f.metadata() == {"type": "MULTI_CPU", "head_grad_none": "True"}
        got = load_file(str(path))
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5, msg=f"rank {rank} {k}")
    torch.manual_seed(0)
    fresh = torch.nn.Linear(4, 16), torch.nn.Linear(16, 2), torch.nn.Linear(16, 2)  # Net's init order
    assert not torch.allclose(ref["body.0.weight"], fresh[0].weight)  # the body trained …
    assert torch.equal(ref["head.weight"], fresh[2].weight)  # … the unused head kept its initial values
    losses_one = [r for r in csv.DictReader(open(one / "logs" / "toy.csv"))]
    losses_two = [r for r in csv.DictReader(open(two / "logs" / "toy.csv"))]
    assert [(r["step"], r["name"]) for r in losses_one] == [(r["step"], r["name"]) for r in losses_two]
    for a, b in zip(losses_one, losses_two):
        assert float(a["value"]) == pytest.approx(float(b["value"]), rel=1e-5)


def test_cpu_flag_runs_one_process(vae_run, tiny_config_path, tmp_path):
    out = _fresh(vae_run, tmp_path / "cpu")
    res = _launch(["-m", "reworld", "train", "--stage", "video", "--config", str(tiny_config_path), "--out",
                   str(out), "--max-steps", "2"], processes=1, cwd=REPO)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["steps"] == 2 and result["finite"]
    assert latest_checkpoint(out, "video").name == "step-0000002"


# ---------------------------------------------------------------------------------------------- faults
STEPS = 12  # the killed and the uninterrupted runs; tiny.yaml checkpoints every 2 steps


@pytest.fixture(scope="module")
def uninterrupted(vae_run, tiny_config_path, tmp_path_factory):
    out = _fresh(vae_run, tmp_path_factory.mktemp("uninterrupted") / "run")
    run_stage("video", str(tiny_config_path), str(out), max_steps=STEPS)
    return _train_losses(out)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = LAUNCH_TIMEOUT) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {path} appeared"
        assert time.time() - t0 < timeout, f"{path} did not appear in {timeout} s"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def test_kill_9_mid_run_then_resume_reproduces_the_losses(vae_run, tiny_config_path, tmp_path, uninterrupted):
    out = _fresh(vae_run, tmp_path / "killed")
    cmd = [sys.executable, "-m", "reworld", "train", "--stage", "video", "--config", str(tiny_config_path),
           "--out", str(out), "--max-steps", str(STEPS)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(out / "checkpoints" / "video" / "step-0000004" / "meta.json", proc)
    _kill(proc)
    done = [int(p.name.split("-")[1]) for p in complete_checkpoints(out, "video")]
    assert done and max(done) < STEPS  # killed mid-run
    res = subprocess.run(cmd + ["--resume"], cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=LAUNCH_TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["start"] == max(done) and result["steps"] == STEPS
    got = _train_losses(out)
    assert got.keys() == uninterrupted.keys() and (STEPS, "total") in got
    for key, value in uninterrupted.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


# Kills itself nowhere: it only makes the checkpoint of step 4 hang half-written (one file, no meta.json),
# after saying so in a marker file, so that the test can SIGKILL it at exactly that moment.
SLOW_SAVE = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from diffusers import ModelMixin

    _save = ModelMixin.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        _save(self, save_directory, *args, **kwargs)
        if ".tmp-step-0000004-" in str(save_directory):
            Path(sys.argv[-1]).with_name("writing").write_text(str(save_directory))
            time.sleep(600)

    ModelMixin.save_pretrained = save_pretrained
    from reworld.cli import main
    sys.exit(main(sys.argv[1:-1]))
''')


def test_kill_during_checkpoint_write_keeps_the_previous_one(vae_run, tiny_config_path, tmp_path, uninterrupted):
    from reworld.models.video_dit import VideoDiT

    out = _fresh(vae_run, tmp_path / "killed-writing")
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    marker = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, str(script), "train", "--stage", "video", "--config",
                             str(tiny_config_path), "--out", str(out), "--max-steps", "6", str(tmp_path / "x")],
                            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(marker, proc)
    _kill(proc)
    parent = out / "checkpoints" / "video"
    partial = Path(marker.read_text()).parent  # the temporary folder, its model written, nothing else
    assert partial.parent == parent and (partial / "video_dit" / "config.json").is_file()
    assert not (partial / "meta.json").exists() and not (partial / "optimizer.safetensors").exists()
    assert not (parent / "step-0000004").exists()
    previous = latest_checkpoint(out, "video")
    assert previous.name == "step-0000002" and [p.name for p in complete_checkpoints(out, "video")] == [previous.name]
    VideoDiT.from_pretrained(previous / "video_dit")  # intact: loads strictly
    result = run_stage("video", str(tiny_config_path), str(out), max_steps=4, resume=True)
    assert result["start"] == 2
    got = _train_losses(out)
    assert sorted(got) == sorted(k for k in uninterrupted if k[0] <= 4)
    for key, value in got.items():
        assert value == pytest.approx(uninterrupted[key], rel=1e-4, abs=1e-6), key
    assert latest_checkpoint(out, "video").name == "step-0000004"


@pytest.mark.parametrize("kind", ["DEEPSPEED", "FSDP"])
def test_accelerate_sharded_backends_point_to_train_sharding(tiny_config, tmp_path, kind):
    """accelerate's own DeepSpeed/FSDP wrappers are not used (the stages call methods besides forward);
    the error names the supported way, `train.sharding: fsdp`."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from reworld.training.loop import StageSpec, TrainingError, run

    lin = torch.nn.Linear(2, 1)
    spec = StageSpec("toy", {"m": lin}, [{"params": list(lin.parameters())}], 4,
                     lambda idx, g: {"total": lin(torch.ones(len(idx), 2)).sum()})
    acc = SimpleNamespace(distributed_type=DistributedType[kind], process_index=0, num_processes=8,
                          is_main_process=True)
    with pytest.raises(TrainingError, match=f"{kind} is not used.*train.sharding: fsdp"):
        run(spec, tiny_config, tmp_path, 1, False, acc)


# ---------------------------------------------------------------------------------------------- sharding
def test_repeated_blocks_are_the_transformer_blocks(tiny_config):
    from reworld.models.action_dit import build_action_dit
    from reworld.models.video_dit import video_dit_from_config
    from reworld.training.sharding import repeated_blocks

    video = video_dit_from_config(tiny_config.video, tiny_config.vae.latent_channels)
    assert repeated_blocks(video) == list(video.transformer.transformer_blocks)
    action = build_action_dit(tiny_config.action, video_dim=32, num_video_blocks=3)
    assert repeated_blocks(action) == list(action.blocks)
    from reworld.models.vae import build_vae
    from reworld.training.sharding import own_units

    assert own_units(action) == ("projector",) and own_units(video) == ()
    assert own_units(build_vae(tiny_config.vae)) == ("encoder", "decoder")


def _exported(out: Path, name: str) -> dict:
    return load_file(str(out / name / "diffusion_pytorch_model.safetensors"))


def _assert_same(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


def _assert_same_adam_steps(a: dict, b: dict, lr: float, share: float = 0.05) -> None:
    """Two runs that took the same AdamW steps up to rounding. Adam divides by the gradient's own scale, so a
    gradient that differs in its last bits where it is ≈ 0 (a convolution summed in another order: FSDP computes on
    gathered copies of the weights) can move that element by up to 2·lr a step the other way; on an AVX-512 machine
    (2026-12-02) 2.6 % of the VAE's elements differed by more than 1e-6 after 2 steps, by at most lr / 3. Runs whose
    gradients really differ (ranks not averaged, a shard lost) are expected to differ on a large share of the elements
    by up to 2·lr (expected from Adam's first steps, lr·sign(g); not measured here)."""
    assert a.keys() == b.keys()
    n = sum(v.numel() for v in a.values())
    off = sum(int(((a[k] - b[k]).abs() > 1e-6).sum()) for k in a)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert off <= share * n and worst < lr, f"{off} of {n} elements differ by > 1e-6, the largest by {worst:.2e}"


def test_fsdp_matches_ddp_in_every_stage_and_resumes(vae_run, tiny_config_path, tmp_path):
    """Two processes keep identical parameters under DDP (every rank takes the same step, bit for bit; rank 0
    alone writes the checkpoint and the log), and `train.sharding: fsdp` on two processes trains the same models as
    DDP (same global batch, same per-rank noise), and a sharded run resumes from its (unsharded) checkpoint. In stage
    video with `train.ema_decay` and a cosine schedule: the averages are kept as shards, gathered into the
    checkpoint, restored into shards on --resume, and the exported (EMA) Video DiT equals DDP's. The eight runs
    share one `accelerate launch` (SEQUENCE), as the real CLI called one after another."""
    import yaml

    doc = yaml.safe_load(tiny_config_path.read_text())
    from reworld.config import load_config

    doc_lr = load_config(tiny_config_path).train.lr
    cfgs = {}
    for kind in ("ddp", "fsdp"):
        doc["train"]["sharding"] = kind
        cfgs[kind] = tmp_path / f"{kind}.yaml"
        cfgs[kind].write_text(yaml.safe_dump(doc))
    doc["train"].update(ema_decay=0.9, lr_schedule="cosine", lr_warmup_steps=1)
    for kind in ("ddp", "fsdp"):
        doc["train"]["sharding"] = kind
        cfgs[f"{kind}-ema"] = tmp_path / f"{kind}-ema.yaml"
        cfgs[f"{kind}-ema"].write_text(yaml.safe_dump(doc))

    def train(kind: str, out: Path, stage: str, steps: int, *extra: str) -> dict:
        argv = ["train", "--stage", stage, "--config", str(cfgs[kind]), "--out", str(out), "--max-steps", str(steps),
                *extra]
        return {"argv": argv, "dump": kind.startswith("ddp")}  # each DDP rank writes its parameters

    def copy(src: Path, dst: Path) -> dict:
        return {"copy": [str(src), str(dst)]}

    ddp, fsdp = _fresh(vae_run, tmp_path / "ddp"), _fresh(vae_run, tmp_path / "fsdp")
    exports = tmp_path / "video-exports"
    plan = [
        # stage vae: the encoder and decoder are called outside forward
        train("ddp", tmp_path / "vae-ddp", "vae", 2), train("fsdp", tmp_path / "vae-fsdp", "vae", 2),
        # stage video: the sharded run stops at step 2 and resumes to 4
        train("ddp-ema", ddp, "video", 4), train("fsdp-ema", fsdp, "video", 2),
        train("fsdp-ema", fsdp, "video", 4, "--resume"),
        copy(ddp / "video_dit", exports / "ddp"), copy(fsdp / "video_dit", exports / "fsdp"),
        # stage joint (two sharded models, two learning rates; the negatives through `forward_with_negatives`, the
        # projector outside forward), from the same stage-1 Video DiT and the same stage-2 Action DiT (stage
        # action's one sharded model is a case of joint's two)
        train("ddp", ddp, "action", 2),
        copy(ddp / "video_dit", fsdp / "video_dit"), copy(ddp / "action_dit", fsdp / "action_dit"),
        train("ddp", ddp, "joint", 2), train("fsdp", fsdp, "joint", 2),
    ]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "sequence.py").write_text(SEQUENCE)
    _launch([str(tmp_path / "sequence.py"), str(tmp_path / "plan.json"), str(tmp_path / "results.json")],
            processes=2, cwd=REPO)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == sum("argv" in p for p in plan)

    # stage vae
    r0, r1 = _rank_states(tmp_path / "vae-ddp", "vae")
    for k in set(r0) - {"vae.latents_mean", "vae.latents_std"}:  # fitted after training by rank 0 alone
        assert torch.equal(r0[k], r1[k]), k
    _assert_same_adam_steps(_exported(tmp_path / "vae-ddp", "vae"), _exported(tmp_path / "vae-fsdp", "vae"),
                            lr=doc_lr)

    # stage video
    r0, r1 = _rank_states(ddp, "video")
    for k in r0:  # gradients are averaged, so every rank takes the same optimizer step, bit for bit
        assert torch.equal(r0[k], r1[k]), k
    # rank 0 wrote the checkpoint (step 4) from those same parameters, and one log
    ckpt = latest_checkpoint(ddp, "video")
    assert ckpt.name == "step-0000004" and json.loads((ckpt / "meta.json").read_text())["step"] == 4
    saved = load_file(str(ckpt / "video_dit" / "diffusion_pytorch_model.safetensors"))
    for k, v in saved.items():
        assert torch.equal(v, r0[f"video_dit.{k}"]), k
    assert sorted({s for s, _ in _train_losses(ddp)}) == [1, 2, 3, 4]
    ckpt = latest_checkpoint(fsdp, "video")
    assert json.loads((ckpt / "meta.json").read_text())["sharding"] == "fsdp"
    assert (ckpt / "ema.safetensors").is_file()
    resumed = results[4]
    assert resumed["start"] == 2 and resumed["finite"]
    _assert_same(_exported(exports, "ddp"), _exported(exports, "fsdp"), 1e-5)
    _assert_same(load_file(str(latest_checkpoint(ddp, "video") / "ema.safetensors")),
                 load_file(str(latest_checkpoint(fsdp, "video") / "ema.safetensors")), 1e-5)
    opt_ddp = load_file(str(latest_checkpoint(ddp, "video") / "optimizer.safetensors"))
    opt_fsdp = load_file(str(latest_checkpoint(fsdp, "video") / "optimizer.safetensors"))
    _assert_same(opt_ddp, opt_fsdp, 1e-6)  # the AdamW moments came back from the shards in full
    losses_ddp, losses_fsdp = _train_losses(ddp), _train_losses(fsdp)
    assert losses_ddp.keys() == losses_fsdp.keys()
    for key, value in losses_ddp.items():
        assert losses_fsdp[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key

    # stage joint
    _assert_same(_exported(ddp, "action_dit"), _exported(fsdp, "action_dit"), 1e-5)
    _assert_same(_exported(ddp, "video_dit"), _exported(fsdp, "video_dit"), 1e-5)


# Records, on each rank, the dtype a transformer block's weights have while it computes, and the dtype of the
# parameters the optimizer steps, then runs the real CLI.
DTYPE_PROBE = textwrap.dedent('''
    import json, os, sys
    import reworld.training.stages as stages

    _run = stages.run

    def run(spec, config, out, max_steps, resume, accelerator):
        seen = set()
        block = spec.models["video_dit"].transformer.transformer_blocks[0].ff.net[2]
        block.register_forward_pre_hook(lambda m, args: seen.add(str(m.weight.dtype)))
        result = _run(spec, config, out, max_steps, resume, accelerator)
        master = {str(p.dtype) for p in spec.models["video_dit"].parameters()}
        with open(os.path.join(out, f"dtypes-rank{accelerator.process_index}.json"), "w") as f:
            json.dump({"compute": sorted(seen), "master": sorted(master)}, f)
        return result

    stages.run = run
    from reworld.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def test_fsdp_gathers_bf16_parameters_and_keeps_fp32_shards(vae_run, tiny_config_path, tmp_path):
    """`train.sharding: fsdp` with `train.mixed_precision: bf16`: FSDP's mixed-precision policy all-gathers the
    blocks' weights in bf16 for compute, the optimizer steps fp32 shards, and the exported model is fp32."""
    import yaml

    doc = yaml.safe_load(tiny_config_path.read_text())
    doc["train"].update(sharding="fsdp", mixed_precision="bf16")
    cfg = tmp_path / "fsdp-bf16.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    script = tmp_path / "dtype_probe.py"
    script.write_text(DTYPE_PROBE)
    out = _fresh(vae_run, tmp_path / "run")
    res = _launch([str(script), "train", "--stage", "video", "--config", str(cfg), "--out", str(out),
                   "--max-steps", "2"], processes=2, cwd=REPO)
    assert json.loads(res.stdout.strip().splitlines()[-1])["finite"]
    for rank in (0, 1):
        seen = json.loads((out / f"dtypes-rank{rank}.json").read_text())
        assert seen == {"compute": ["torch.bfloat16"], "master": ["torch.float32"]}, seen
    assert {str(v.dtype) for v in _exported(out, "video_dit").values()} == {"torch.float32"}
