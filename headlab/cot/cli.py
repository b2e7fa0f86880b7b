"""`headlab cot run|report`: thin front-ends over headlab.cot.run.run_cot and headlab.cot.report.write_report."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> None:
    from headlab.cot.datasets import parse_categories
    from headlab.cot.report import print_summary, write_report
    from headlab.cot.run import CotConfig, run_cot

    config = CotConfig(data=args.data, model=args.model, endpoint=args.endpoint, modes=args.modes.split(","),
                       limit=args.limit, shots=args.shots, seed=args.seed,
                       direct_max_new_tokens=args.direct_max_new_tokens, cot_max_new_tokens=args.cot_max_new_tokens,
                       plan_max_new_tokens=args.plan_max_new_tokens, batch_size=args.batch_size, device=args.device,
                       dtype=args.dtype, categories=parse_categories(args.category), cache=args.cache,
                       threads=args.threads)
    path = run_cot(config, args.out)
    summary = write_report(args.out, resamples=args.resamples)
    print_summary(summary)
    print(f"wrote {path}, {Path(args.out) / 'report.html'}, report.md, summary.json, cot_gain.png")


def _report(args: argparse.Namespace) -> None:
    from headlab.cot.report import print_summary, write_report

    summary = write_report(args.dir, resamples=args.resamples)
    print_summary(summary)
    print(f"wrote {Path(args.dir) / 'report.html'}, report.md, summary.json, cot_gain.png")


def add_cot_commands(sub) -> None:
    cot = sub.add_parser("cot", help="direct answer vs chain of thought per dataset (Sprague et al. 2024)")
    cot = cot.add_subparsers(dest="cot_command", required=True)
    r = cot.add_parser("run", help="answer every item directly and with chain of thought, then report",
                       description="Zero-shot (or few-shot) direct answers and chain of thought on local dataset "
                                   "files, greedy decoding, replies cached on disk (a killed run resumes).")
    r.add_argument("--model", required=True,
                   help="model folder or hub id (Hugging Face backend), or the model name at --endpoint")
    r.add_argument("--data", nargs="+", required=True,
                   help="dataset files: BIG-bench task.json, GSM8K .jsonl, MMLU .csv, CommonsenseQA .jsonl")
    r.add_argument("--out", required=True, help="run folder")
    r.add_argument("--endpoint", help="OpenAI-compatible base URL (e.g. http://127.0.0.1:8000/v1); key from "
                                      "$OPENAI_API_KEY")
    r.add_argument("--modes", default="direct,cot", help="comma-separated: direct, cot, plan (plan then solve)")
    r.add_argument("--limit", type=int, help="items per dataset (a seeded random subset)")
    r.add_argument("--shots", type=int, default=0, help="few-shot demonstrations per dataset")
    r.add_argument("--category", action="append", default=[], metavar="DATASET=CATEGORY",
                   help="override a dataset's category (repeatable), e.g. navigate=math")
    r.add_argument("--direct-max-new-tokens", type=int, default=32)
    r.add_argument("--cot-max-new-tokens", type=int, default=256, help="the cap on a chain of thought")
    r.add_argument("--plan-max-new-tokens", type=int, default=256)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--device", default="cpu")
    r.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice; 1 on a "
                                                           "machine shared with other jobs)")
    r.add_argument("--cache", help="reply cache folder (default: OUT/cache); share it between runs")
    r.add_argument("--seed", type=int, default=0, help="seed of the subset and few-shot draws")
    r.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    r.set_defaults(func=_run)
    rep = cot.add_parser("report", help="accuracy tables with bootstrap intervals, the '=' split and the figure")
    rep.add_argument("dir", help="a `headlab cot run` folder")
    rep.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    rep.set_defaults(func=_report)
