"""`headlab study`: the whole synthetic-context-extension study as one resumable command."""

from __future__ import annotations

import argparse
from pathlib import Path


def _study(args: argparse.Namespace) -> None:
    from headlab.distributed import launched
    from headlab.errors import HeadlabError
    from headlab.study.config import build_config
    from headlab.study.stages import build_study

    if launched():  # every process would run the whole study into the same folder
        raise HeadlabError("study: run it without accelerate launch/torchrun; --executor ray uses several GPUs")
    if args.executor != "ray" and (args.address or args.num_cpus):
        raise HeadlabError("study: --address and --num-cpus need --executor ray")
    config = build_config(args.preset, args.config, device=args.device, dtype=args.dtype, base_model=args.model,
                          seed=args.seed)
    executor = None
    if args.executor == "ray":
        from headlab.study.executor import RayExecutor

        # Model stages reserve a GPU only when they will use one.
        executor = RayExecutor(args.address, args.num_cpus, args.cpus_per_stage,
                               use_gpus=str(config.device).startswith("cuda"))
    _check_against_model(config, args.config or "study config")
    status = build_study(config, args.out).run(progress=not args.no_progress, executor=executor)
    done = sum(1 for v in status.values() if v != "skipped")
    print(f"study: {done} stages run, {len(status) - done} already done; report: {Path(args.out) / 'report'}")
    findings = Path(args.out) / "report" / "findings.md"
    if findings.is_file():
        print(findings.read_text(encoding="utf-8"), end="")


def _check_against_model(config, source: str) -> None:
    """What needs the base model's config (not its weights): checked before the first stage, not when the
    stage that needs it comes up minutes later."""
    from headlab.data.niah import check_lengths, length_limit
    from headlab.loading import inspect
    from headlab.study.stages import base_model_path

    positions = inspect(base_model_path(config), weights=True).max_positions  # weight files whole, too
    check_lengths(config.niah_lengths, length_limit(max(positions or 0, config.context_length) or None),
                  source, positions, "niah_lengths")


def add_study_commands(subparsers) -> None:
    s = subparsers.add_parser(
        "study", help="the paper's pipeline end to end (resumable), with an HTML report",
        description="Data -> fine-tune each variant -> evaluate -> task retrieval heads -> compare -> knockout "
                    "-> patching -> report. Re-running skips finished stages; a changed setting recomputes "
                    "its stage and what depends on it.")
    s.add_argument("--config", help="YAML or JSON study settings (see README); overrides the preset")
    s.add_argument("--preset", default="default",
                   help="default (MDQA and multi-hop, ~15 min on 2 CPU cores), quick (one task, CI) or full (~1 h)")
    s.add_argument("--out", default="runs/study", help="run folder")
    s.add_argument("--model", help="base model (default: the shipped tiny model)")
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", default=None)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--executor", choices=["sequential", "ray"], default="sequential",
                   help="sequential: one stage after another in this process; ray: every stage whose inputs "
                        "are done runs at once as a Ray task (a GPU each for model stages when there are GPUs)")
    s.add_argument("--address", help="with --executor ray: the cluster to join (auto, or ray://host:port); "
                                     "default: start a local Ray instance")
    s.add_argument("--num-cpus", type=int, help="with --executor ray and no --address: CPUs of the local instance")
    s.add_argument("--cpus-per-stage", type=int, default=1, help="with --executor ray: CPUs each stage reserves")
    s.set_defaults(func=_study)
