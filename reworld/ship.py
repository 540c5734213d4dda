"""`python -m reworld ship`: copy a trained run folder into a shipped checkpoint with its model card.

A shipped checkpoint holds `config.json`, `video_dit/`, `action_dit/` (when the run has a planner) and its
own `vae/`, or a `components.json` pointing at a shared sibling VAE folder, or, for a pretrained VAE, nothing:
its config's `vae.pretrained` names it; plus `eval.json` (the figures of
`python -m reworld eval` on the held-out split) and `MODEL_CARD.md` (commands, seeds, steps, wall time,
figures). Everything is safetensors + JSON.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from reworld.config import STAGES, config_from_dict
from reworld.evaluation.evaluate import judge_tables, report_tables
from reworld.pipelines.run_folder import read_run_config, write_model_index
from reworld.training.checkpoint import latest_checkpoint


def _stage_meta(run: Path) -> dict[str, dict]:
    out = {}
    for stage in STAGES:
        ckpt = latest_checkpoint(run, stage)
        if ckpt is not None:
            out[stage] = json.loads((ckpt / "meta.json").read_text())
    return out


def ship(run: str, dest: str, shared_vae: str | None, config_path: str, eval_report: dict | None,
         commands: list[str]) -> Path:
    run_dir, dest_dir = Path(run), Path(dest)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    config = read_run_config(run_dir)
    tmp = dest_dir.with_name(f".{dest_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config_json = json.loads((run_dir / "config.json").read_text())
    shared = Path(shared_vae) if shared_vae else None
    if shared is not None and shared.resolve().parent != dest_dir.resolve().parent:
        raise ValueError(f"--shared-vae {shared} must be a sibling of {dest_dir} (the checkpoint points at it as "
                         f"../{shared.name})")
    # a run that read the shared folder as its pretrained VAE (e.g. `train --vae assets/checkpoints/world4s_vae`)
    # ships pointing at its sibling, not at the absolute path of the machine it was trained on
    reads_shared = (shared is not None and not (run_dir / "vae").is_dir() and bool(config.vae.pretrained)
                    and Path(config.vae.pretrained).resolve() == shared.resolve())
    if reads_shared:
        config_json["vae"]["pretrained"] = None
    (tmp / "config.json").write_text(json.dumps(config_json, indent=2))
    shutil.copytree(run_dir / "video_dit", tmp / "video_dit")
    if (run_dir / "action_dit").is_dir():  # a run stopped after stage video ships as a world model alone
        shutil.copytree(run_dir / "action_dit", tmp / "action_dit")
    # a pretrained VAE (no vae/ in the run) stays where the config's `vae.pretrained` says: nothing to copy
    if (run_dir / "vae").is_dir() or not config.vae.pretrained or reads_shared:
        if shared is not None:
            if not shared.is_dir():
                shutil.copytree(run_dir / "vae", shared)
            (tmp / "components.json").write_text(json.dumps({"vae": f"../{shared.name}"}))
        else:
            shutil.copytree(run_dir / "vae", tmp / "vae")
    write_model_index(tmp, config_from_dict(config_json))
    meta = _stage_meta(run_dir)
    if eval_report is not None:
        (tmp / "eval.json").write_text(json.dumps(eval_report, indent=2))
    (tmp / "MODEL_CARD.md").write_text(model_card(config_json, meta,
                                                  eval_report, commands, config_path))
    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    tmp.replace(dest_dir)
    return dest_dir


def _generator_flag(dataroot: str) -> str:
    """` --generator <version>` of the synthetic world the run read, else ""."""
    from reworld.data.synth import world_generator
    from reworld.paths import resolve_dataroot

    generator = world_generator(resolve_dataroot(dataroot)) if dataroot else None
    return f" --generator {generator}" if generator else ""


def model_card(config: dict, meta: dict[str, dict], report: dict | None, commands: list[str],
               config_path: str) -> str:
    loss = config["loss"]
    lines = [
        f"# ReWorld checkpoint `{config['name']}`",
        "",
        "Trained by this repository's own commands on the synthetic world (`python -m reworld synth --out "
        f"data/synth --scenes {config['data']['synth_scenes']} --seed {config['data']['synth_seed']}"
        f"{_generator_flag(config['data'].get('dataroot', ''))}`), split by "
        f"scene (val_fraction {config['data']['val_fraction']}, split_seed {config['data']['split_seed']}).",
        "",
        f"Losses: λ_ig = {loss['lambda_ig']} (intermediate guidance), λ_align = {loss['lambda_align']} "
        f"(cross-modal alignment), λ_hn = {loss['lambda_hn']} (hard-negative InfoNCE). Seed "
        f"{config['train']['seed']}. Config: `{config_path}`.",
        "",
        "## Commands",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "## Stages",
        "",
        "| stage | steps | wall time of the last run segment [s] |",
        "|---|---|---|",
    ]
    for stage in STAGES:
        if stage in meta:
            lines.append(f"| {stage} | {meta[stage]['step']} | {meta[stage].get('seconds', float('nan'))} |")
    if report is not None:
        lines += evaluation_section(report)
    return "\n".join(lines) + "\n"


def evaluation_section(report: dict) -> list[str]:
    """The card's `## Evaluation` section, from an eval.json report."""
    s = report["settings"]
    world = f" of the `{s['world']}` world" if s.get("world") else ""
    scorer = {"navsim": "NAVSIM v1.1's PDM score (LQR-tracked, its collision/TTC rules, PDM-Closed EP)",
              "spline": "the first, untracked spline PDM score"}.get(s.get("scorer", "spline"), s.get("scorer"))
    return ["", "## Evaluation", "",
            f"`python -m reworld eval --checkpoint <this folder> --split {report['split']} "
            f"--seed {s['seed']}` on {report['num_clips']} held-out clips{world} (video on {s.get('video_clips', 0)} "
            f"clips, {s['video_steps']} steps, w = {s.get('guidance')}); planning scored by {scorer}, L2 against "
            f"the {s.get('future_poses', 'uniform')} future poses:", "",
            *report_tables(report["planners"], report.get("video") or {}), *judge_section(report)]


def judge_section(report: dict) -> list[str]:
    """The video judge's figures of an eval.json report, with the command that makes them, or nothing."""
    judge, s = report.get("judge") or {}, report["settings"]
    if not judge:
        return []
    every, k = s.get("judge_every", 1), judge["samples_per_clip"]
    return ["", f"The video judge (`{Path(s['judge']).name}`) on {judge['clips']} held-out clips"
            f"{'' if every == 1 else f' (one in {every}, in scene order)'}, {k} sampled futures each "
            f"({judge['video_horizon_s']:g} s of future; `--judge-every {every} --judge-samples {k}`): its reading "
            "errors at each second ahead, its Fréchet distance and KID against the same clips' real futures, and the "
            "baselines:", *judge_tables(judge)]


def reevaluate(checkpoint: str, report: dict) -> Path:
    """Replace a shipped checkpoint's eval.json and its card's `## Evaluation` section (all else kept), each file
    written whole or not at all."""
    dest = Path(checkpoint)
    card = (dest / "MODEL_CARD.md").read_text()
    head = card.split("\n## Evaluation\n")[0].rstrip("\n")
    for name, text in (("eval.json", json.dumps(report, indent=2)),
                       ("MODEL_CARD.md", head + "\n" + "\n".join(evaluation_section(report)) + "\n")):
        tmp = dest / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(dest / name)
    return dest
