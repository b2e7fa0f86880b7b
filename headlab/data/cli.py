"""`headlab data ...`: make synthetic task data, convert real datasets, show examples.

`add_data_commands(subparsers)` registers the commands on headlab's top-level parser; each handler maps to
one library function and raises HeadlabError on bad input (printed as one line by headlab.cli.main).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from pathlib import Path
from typing import Any

from headlab.data.example import (
    HAYSTACK_DIVERSITIES,
    NEEDLE_REALISMS,
    TASKS,
    TaskExample,
    load_examples,
    save_examples,
)
from headlab.errors import HeadlabError
from headlab.io import atomic_write_json


def load_tokenizer(spec: str | None) -> Any:
    """A fast tokenizer from a tokenizer.json file or a local model folder (default: the shipped model's)."""
    from headlab import loading

    if spec is None:
        try:
            from headlab.toy import default_model_dir
        except ImportError:
            raise HeadlabError("no --tokenizer given and no shipped tiny model installed") from None
        spec = str(default_model_dir())
    path = Path(spec).expanduser()
    if not (path.is_dir() or (path.is_file() and path.suffix == ".json")):
        raise HeadlabError(f"{spec}: tokenizer not found (give a tokenizer.json or a local model folder)")
    return loading.load_tokenizer(path)


def _make(args: argparse.Namespace) -> None:
    from headlab.data.tasks import GenConfig, config_dict, generate_examples

    config = GenConfig(args.task, args.needle, args.haystack, n=args.n, length=args.length,
                       seed=args.seed, depth=args.depth, doc_sentences=tuple(args.doc_sentences),
                       max_support=args.max_support, split=args.split)
    config.check()
    writer = None
    if args.llm_url:
        from headlab.data.llm_docs import LLMDocWriter

        if not args.llm_model:
            raise HeadlabError("data make: field 'llm_model' is required with --llm-url")
        cache = args.llm_cache or str(Path(args.out).parent / "llm-cache")
        key = os.environ.get(args.llm_api_key_env) if args.llm_api_key_env else None
        writer = LLMDocWriter(args.llm_url, args.llm_model, cache, api_key=key, seed=args.seed)
    tokenizer = load_tokenizer(args.tokenizer)
    examples = generate_examples(config, tokenizer, writer=writer)
    save_examples(examples, args.out)
    atomic_write_json(f"{args.out}.config.json", {**config_dict(config), "tokenizer": args.tokenizer,
                                                  "llm_url": args.llm_url, "llm_model": args.llm_model})
    print(f"wrote {len(examples)} examples to {args.out} (config in {args.out}.config.json)")


def _squad_options(args: argparse.Namespace) -> dict[str, Any]:
    """The SQuAD-only options the user gave (unset ones are None, so SquadConfig's defaults apply)."""
    given = {"task": args.task, "n_docs": args.docs, "gold_position": args.gold_position,
             "max_tokens": args.max_tokens, "split": args.split, "heldout_fraction": args.heldout_fraction,
             "exact_docs": args.exact_docs or None}
    return {k: v for k, v in given.items() if v is not None}


def _convert_squad(args: argparse.Namespace) -> None:
    from headlab.data.squad import SquadConfig, convert_squad

    config = SquadConfig(seed=args.seed, limit=args.limit, **_squad_options(args))
    config.check()
    tokenizer = load_tokenizer(args.tokenizer) if config.max_tokens is not None else None
    examples, report = convert_squad(args.file, config, tokenizer)
    save_examples(examples, args.out)
    atomic_write_json(f"{args.out}.config.json", {**report, "tokenizer": args.tokenizer})
    skipped = f", {report['skipped_too_long']} questions skipped as too long" if report["skipped_too_long"] else ""
    print(f"wrote {len(examples)} examples to {args.out}{skipped} (config in {args.out}.config.json)")


def _convert(args: argparse.Namespace) -> None:
    from headlab.data.loaders import load_mdqa, load_musique, load_summhay

    if args.format == "squad":
        return _convert_squad(args)
    extra = [*_squad_options(args), *(["tokenizer"] if args.tokenizer else [])]
    if extra:
        raise HeadlabError(f"data convert: field '{extra[0]}' applies to --format squad only")
    if args.format == "mdqa":
        examples = load_mdqa(args.file, limit=args.limit)
    elif args.format == "musique":
        examples = load_musique(args.file, limit=args.limit)
    else:
        max_docs = args.max_docs if args.max_docs > 0 else None
        examples = load_summhay(args.file, max_docs=max_docs, seed=args.seed, limit=args.limit)
    save_examples(examples, args.out)
    print(f"wrote {len(examples)} examples to {args.out}")


def format_example(ex: TaskExample, full: bool = False, width: int = 100) -> str:
    """A readable view: axes, question, answers, gold spans, and each document (gold marked with *)."""
    lines = [f"== {ex.id}  task={ex.task}  needle={ex.needle_realism}  haystack={ex.haystack_diversity}",
             f"question: {ex.question}", f"answers:  {' | '.join(ex.answers)}",
             f"gold:     documents {ex.gold_doc_ids}"]
    lines += [f"  span [{s}, {e}): {ex.context[s:e]}" for s, e in ex.gold_spans]
    for doc in ex.documents:
        mark = "*" if doc.id in ex.gold_doc_ids else " "
        body = doc.text if full else textwrap.shorten(doc.text, width=width, placeholder=" ...")
        lines.append(f" {mark}[{doc.id}] ({doc.title}) {body}")
    return "\n".join(lines)


def _show(args: argparse.Namespace) -> None:
    examples = load_examples(args.file)
    for ex in examples[: args.n]:
        print(format_example(ex, full=args.full))
        print()
    print(f"{len(examples)} examples in {args.file}")


def add_data_commands(subparsers: Any) -> None:
    """Register `data make`, `data convert` and `data show` on headlab's subparsers."""
    parser = subparsers.add_parser("data", help="long-context task data: synthetic, converted, shown")
    data = parser.add_subparsers(dest="data_command", required=True)

    mk = data.add_parser("make", help="generate synthetic task examples along the paper's axes",
                         description="Multi-document QA, multi-hop QA or citation examples built on the toy "
                                     "world, at a needle realism and haystack diversity, fitted to a prompt "
                                     "length in tokens of a tokenizer.")
    mk.add_argument("--task", required=True, choices=TASKS)
    mk.add_argument("--needle", default="real", choices=NEEDLE_REALISMS, help="needle realism")
    mk.add_argument("--haystack", default="diverse", choices=HAYSTACK_DIVERSITIES, help="haystack diversity")
    mk.add_argument("--n", type=int, default=100, help="number of examples")
    mk.add_argument("--length", type=int, default=1024, help="prompt length in tokens (template included)")
    mk.add_argument("--tokenizer", help="tokenizer.json or local model folder (default: shipped tiny model)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--depth", type=float, help="position of the first gold document, 0..1 (default: random)")
    mk.add_argument("--doc-sentences", type=int, nargs=2, default=[2, 5], metavar=("MIN", "MAX"),
                    help="filler sentences per document")
    mk.add_argument("--max-support", type=int, default=2, help="citation: most supporting documents")
    mk.add_argument("--split", choices=["train", "heldout"],
                    help="toy-world name split (default: heldout for --needle real, else train)")
    mk.add_argument("--llm-url", help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) that "
                                      "writes the documents; off by default; diverse haystack only")
    mk.add_argument("--llm-model", help="model name to request from --llm-url")
    mk.add_argument("--llm-cache", help="completion cache folder (default: llm-cache next to --out)")
    mk.add_argument("--llm-api-key-env", help="name of the environment variable holding the API key")
    mk.add_argument("--out", required=True, help="output JSONL file")
    mk.set_defaults(func=_make)

    cv = data.add_parser("convert", help="convert a real dataset (MDQA, MuSiQue, SummHay, SQuAD) to headlab JSONL",
                         description="Read a real dataset from a local file into headlab's task JSONL. SQuAD "
                                     "v1.1 becomes multi-document QA or citation: each question's paragraph among "
                                     "paragraphs of other articles, at a chosen position.")
    cv.add_argument("file")
    cv.add_argument("--format", required=True, choices=["mdqa", "musique", "summhay", "squad"])
    cv.add_argument("--limit", type=int, help="at most this many examples")
    cv.add_argument("--max-docs", type=int, default=20, help="summhay: documents per example (0: all)")
    cv.add_argument("--seed", type=int, default=0, help="summhay, squad: seed of the distractor choice")
    cv.add_argument("--task", choices=["mdqa", "citation"], help="squad: the task to build (default mdqa)")
    cv.add_argument("--docs", type=int, help="squad: documents per example, gold included (default 10)")
    cv.add_argument("--gold-position", help="squad: first, middle, last, random (default) or a 0-based index")
    cv.add_argument("--max-tokens", type=int, help="squad: drop distractors until the prompt fits this many "
                                                   "tokens of --tokenizer (chat template included)")
    cv.add_argument("--exact-docs", action="store_true",
                    help="squad with --max-tokens: skip a question that cannot fit all --docs documents")
    cv.add_argument("--tokenizer", help="squad with --max-tokens: tokenizer.json or local model folder "
                                        "(default: shipped tiny model)")
    cv.add_argument("--split", choices=["all", "train", "heldout"],
                    help="squad: all articles (default) or the train / held-out part; the parts share no article")
    cv.add_argument("--heldout-fraction", type=float, help="squad: share of articles held out (default 0.25)")
    cv.add_argument("--out", required=True, help="output JSONL file")
    cv.set_defaults(func=_convert)

    sh = data.add_parser("show", help="print a few examples of a task JSONL file readably")
    sh.add_argument("file")
    sh.add_argument("--n", type=int, default=3, help="how many examples")
    sh.add_argument("--full", action="store_true", help="print whole documents")
    sh.set_defaults(func=_show)
