"""`headlab data ...`: make synthetic task data, convert real datasets, show examples.

`commands()` gives the commands to headlab's CLI floor; each handler maps to one library function and raises
HeadlabError on bad input (printed as one line by headlab.cli.main).
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from headlab.core.cli_floor import Command, Flag, given, opt
from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json
from headlab.data.example import (
    HAYSTACK_DIVERSITIES,
    NEEDLE_REALISMS,
    TASKS,
    TaskExample,
    load_examples,
    save_examples,
)
from headlab.data.squad import SquadConfig
from headlab.data.tasks import GenConfig


def load_tokenizer(spec: str | None) -> Any:
    """A fast tokenizer from a tokenizer.json file or a local model folder (default: the shipped model's)."""
    from headlab.model import loading

    if spec is None:
        spec = str(loading.default_model_dir())
    path = Path(spec).expanduser()
    if not (path.is_dir() or (path.is_file() and path.suffix == ".json")):
        raise HeadlabError(f"{spec}: tokenizer not found (give a tokenizer.json or a local model folder)")
    return loading.load_tokenizer(path)


@dataclass(kw_only=True)
class MakeOptions:
    tokenizer: str | None = opt(None, help="tokenizer.json or local model folder (default: shipped tiny model)")
    llm_url: str | None = opt(None, help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) that writes "
                                         "the documents; off by default; diverse haystack only")
    llm_model: str | None = None  # model name to request from --llm-url
    llm_cache: str | None = None  # completion cache folder (default: llm-cache next to --out)
    llm_api_key_env: str | None = None  # name of the environment variable holding the API key
    out: str = opt(help="output JSONL file")


def _make(config: GenConfig, run: MakeOptions) -> None:
    """generate synthetic task examples along the paper's axes

    Multi-document QA, multi-hop QA or citation examples built on the toy world, at a needle realism and
    haystack diversity, fitted to a prompt length in tokens of a tokenizer."""
    from headlab.data.tasks import config_dict, generate_examples

    config.check()
    writer = None
    if run.llm_url:
        from headlab.data.llm_docs import LLMDocWriter

        if not run.llm_model:
            raise HeadlabError("data make: field 'llm_model' is required with --llm-url")
        cache = run.llm_cache or str(Path(run.out).parent / "llm-cache")
        key = os.environ.get(run.llm_api_key_env) if run.llm_api_key_env else None
        writer = LLMDocWriter(run.llm_url, run.llm_model, cache, api_key=key, seed=config.seed)
    tokenizer = load_tokenizer(run.tokenizer)
    examples = generate_examples(config, tokenizer, writer=writer)
    save_examples(examples, run.out)
    atomic_write_json(f"{run.out}.config.json", {**config_dict(config), "tokenizer": run.tokenizer,
                                                 "llm_url": run.llm_url, "llm_model": run.llm_model})
    print(f"wrote {len(examples)} examples to {run.out} (config in {run.out}.config.json)")


@dataclass(kw_only=True)
class ConvertOptions:
    file: str = opt(positional=True, help="the dataset file")
    format: str = opt(choices=("mdqa", "musique", "summhay", "squad"))
    max_docs: int = 20  # summhay: documents per example (0: all)
    tokenizer: str | None = opt(None, help="squad with --max-tokens: tokenizer.json or local model folder "
                                           "(default: shipped tiny model)")
    out: str = opt(help="output JSONL file")


def _convert(run: ConvertOptions, squad: SquadConfig) -> None:
    """convert a real dataset (MDQA, MuSiQue, SummHay, SQuAD) to headlab JSONL

    Read a real dataset from a local file into headlab's task JSONL. SQuAD v1.1 becomes multi-document QA or
    citation: each question's paragraph among paragraphs of other articles, at a chosen position."""
    from headlab.data.loaders import load_mdqa, load_musique, load_summhay

    if run.format == "squad":
        return _convert_squad(run, squad)
    squad_only = [f.name for f in fields(SquadConfig) if f.name in given(squad) - {"seed", "limit"}]
    extra = [*squad_only, *(["tokenizer"] if run.tokenizer else [])]
    if extra:
        raise HeadlabError(f"data convert: field '{extra[0]}' applies to --format squad only")
    if run.format == "mdqa":
        examples = load_mdqa(run.file, limit=squad.limit)
    elif run.format == "musique":
        examples = load_musique(run.file, limit=squad.limit)
    else:
        max_docs = run.max_docs if run.max_docs > 0 else None
        examples = load_summhay(run.file, max_docs=max_docs, seed=squad.seed, limit=squad.limit)
    save_examples(examples, run.out)
    print(f"wrote {len(examples)} examples to {run.out}")


def _convert_squad(run: ConvertOptions, config: SquadConfig) -> None:
    from headlab.data.squad import convert_squad

    config.check()
    tokenizer = load_tokenizer(run.tokenizer) if config.max_tokens is not None else None
    examples, report = convert_squad(run.file, config, tokenizer)
    save_examples(examples, run.out)
    atomic_write_json(f"{run.out}.config.json", {**report, "tokenizer": run.tokenizer})
    skipped = f", {report['skipped_too_long']} questions skipped as too long" if report["skipped_too_long"] else ""
    print(f"wrote {len(examples)} examples to {run.out}{skipped} (config in {run.out}.config.json)")


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


@dataclass(kw_only=True)
class ShowOptions:
    file: str = opt(positional=True, help="a task JSONL file")
    n: int = 3  # how many examples
    full: bool = False  # print whole documents


def _show(run: ShowOptions) -> None:
    """print a few examples of a task JSONL file readably"""
    examples = load_examples(run.file)
    for ex in examples[: run.n]:
        print(format_example(ex, full=run.full))
        print()
    print(f"{len(examples)} examples in {run.file}")


def commands() -> list[Command]:
    make = {"task": Flag(choices=TASKS),
            "needle_realism": Flag(flag="--needle", choices=NEEDLE_REALISMS, help="needle realism"),
            "haystack_diversity": Flag(flag="--haystack", choices=HAYSTACK_DIVERSITIES, help="haystack diversity"),
            "n": Flag(help="number of examples"),
            "doc_sentences": Flag(metavar=("MIN", "MAX"), help="filler sentences per document"),
            "max_support": Flag(help="citation: most supporting documents"),
            "split": Flag(choices=("train", "heldout"),
                          help="toy-world name split (default: heldout for --needle real, else train)"),
            "depth": Flag(help="position of the first gold document, 0..1 (default: random)")}
    squad = {"task": Flag(choices=("mdqa", "citation"), help="squad: the task to build (default mdqa)"),
             "n_docs": Flag(flag="--docs", help="squad: documents per example, gold included (default 10)"),
             "gold_position": Flag(help="squad: first, middle, last, random (default) or a 0-based index"),
             "seed": Flag(help="summhay, squad: seed of the distractor choice"),
             "limit": Flag(help="at most this many examples"),
             "max_tokens": Flag(help="squad: drop distractors until the prompt fits this many tokens of "
                                     "--tokenizer (chat template included)"),
             "split": Flag(choices=("all", "train", "heldout"),
                           help="squad: all articles (default) or the train / held-out part; the parts share no "
                                "article"),
             "heldout_fraction": Flag(help="squad: share of articles held out (default 0.25)"),
             "exact_docs": Flag(help="squad with --max-tokens: skip a question that cannot fit all --docs documents")}
    return [Command("data make", _make, flags=make, out="file"),
            Command("data convert", _convert, flags=squad, out="file"),
            Command("data show", _show)]
