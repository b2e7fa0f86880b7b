"""`headlab study`: the whole synthetic-context-extension study as one resumable command."""

from __future__ import annotations

import argparse
from pathlib import Path


def _study(args: argparse.Namespace) -> None:
    from headlab.study.config import build_config
    from headlab.study.stages import build_study

    config = build_config(args.preset, args.config, device=args.device, dtype=args.dtype, base_model=args.model,
                          seed=args.seed)
    status = build_study(config, args.out).run(progress=not args.no_progress)
    done = sum(1 for v in status.values() if v != "skipped")
    print(f"study: {done} stages run, {len(status) - done} already done; report: {Path(args.out) / 'report'}")
    findings = Path(args.out) / "report" / "findings.md"
    if findings.is_file():
        print(findings.read_text(encoding="utf-8"), end="")


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
    s.set_defaults(func=_study)
