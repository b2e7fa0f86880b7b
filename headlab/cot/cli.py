"""`headlab cot run|report`: typed front-ends over headlab.cot.run.run_cot and headlab.cot.report.write_report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from headlab.core.cli_floor import Command, Flag, opt
from headlab.core.stats import RESAMPLES
from headlab.cot.run import CotConfig
from headlab.model.options import ModelOptions


@dataclass(kw_only=True)
class CotRun:
    out: str = opt(help="run folder")
    resamples: int = RESAMPLES  # bootstrap resamples


def _run(model: ModelOptions, config: CotConfig, run: CotRun) -> None:
    """answer every item directly and with chain of thought, then report

    Zero-shot (or few-shot) direct answers and chain of thought on local dataset files, greedy decoding, replies
    cached on disk (a killed run resumes)."""
    from headlab.cot.report import print_summary, write_report
    from headlab.cot.run import run_cot

    path = run_cot(replace(config, model=model.model), run.out)
    summary = write_report(run.out, resamples=run.resamples)
    print_summary(summary)
    print(f"wrote {path}, {Path(run.out) / 'report.html'}, report.md, summary.json, cot_gain.png")


@dataclass(kw_only=True)
class CotReport:
    dir: str = opt(positional=True, help="a `headlab cot run` folder")
    resamples: int = RESAMPLES  # bootstrap resamples


def _report(run: CotReport) -> None:
    """accuracy tables with bootstrap intervals, the '=' split and the figure"""
    from headlab.cot.report import print_summary, write_report

    summary = write_report(run.dir, resamples=run.resamples)
    print_summary(summary)
    print(f"wrote {Path(run.dir) / 'report.html'}, report.md, summary.json, cot_gain.png")


def commands() -> list[Command]:
    from headlab.cot.datasets import parse_categories

    flags = {
        "model": Flag(required=True, help="model folder or hub id (Hugging Face backend), or the model name at "
                                          "--endpoint"),
        "data": Flag(help="dataset files: BIG-bench task.json, GSM8K .jsonl, MMLU .csv, CommonsenseQA .jsonl"),
        "endpoint": Flag(help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1); key from $OPENAI_API_KEY"),
        "modes": Flag(parse=lambda text: text.split(","),
                      help="comma-separated: direct, cot, plan (plan then solve) (default: direct,cot)"),
        "categories": Flag(flag="--category", repeat=True, metavar="DATASET=CATEGORY", parse=parse_categories,
                           help="override a dataset's category (repeatable), e.g. navigate=math"),
        "threads": Flag(help="torch CPU threads (default: torch's choice; 1 on a machine shared with other jobs)"),
        "cache": Flag(help="reply cache folder (default: OUT/cache); share it between runs"),
        "seed": Flag(help="seed of the subset and few-shot draws"),
        "unsafe_exec": Flag(help="where the machine cannot isolate plan mode's programs (no user namespaces), run "
                                 "them anyway under an in-process guard that a hostile program can switch off"),
    }
    hide = ("attn", "trust_remote_code", "device_map", "max_memory", "sandbox_cpu_seconds",
            "sandbox_memory_mb")
    return [Command("cot run", _run, flags=flags, hide=hide, config_file=True),
            Command("cot report", _report)]
