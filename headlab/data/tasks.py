"""Synthetic long-context task data along the paper's axes (task x needle realism x haystack diversity).

    examples = generate_examples(GenConfig("multihop", "real", "diverse", n=100, length=1024), tokenizer)

Each example is a list of documents: the gold documents carry the plan's needles (needles.py), distractor
documents carry plausible look-alike facts, and every document is padded with filler prose at the haystack
diversity. Documents are added until the rendered prompt (task_prompts.py, the model's template) reaches
`length` tokens of `tokenizer` without exceeding it. The first gold document sits at `depth` (a fraction of
the document list; random when None); further gold documents go to random places.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from headlab.core.errors import HeadlabError, check_fields
from headlab.data.example import (
    HAYSTACK_DIVERSITIES,
    NEEDLE_REALISMS,
    TASKS,
    Document,
    TaskExample,
    document_header,
    render_context,
)
from headlab.data.needles import Needle, Plan, world_for
from headlab.data.prompts import render_prompt
from headlab.data.task_prompts import encode_prompt, render_task_prompt
from headlab.data.task_registry import task_spec
from headlab.data.world import World

__all__ = ["GenConfig", "TaskExample", "generate_example", "generate_examples"]


class DocumentWriter(Protocol):
    """Writes a document's text around a sentence it must contain verbatim (see llm_docs.py)."""

    def document(self, title: str, sentence: str) -> str: ...


MAX_LENGTH = 1 << 20  # prompt tokens: 1M, as headlab.data.niah allows a model that states no maximum


@dataclass
class GenConfig:
    task: str
    needle_realism: str = "real"
    haystack_diversity: str = "diverse"
    n: int = 100
    length: int = 1024                  # prompt tokens of the given tokenizer, template included
    seed: int = 0
    depth: float | None = None          # where the first gold document goes, 0 (first) .. 1 (last)
    doc_sentences: tuple[int, int] = (2, 5)  # filler sentences per document, min and max
    max_support: int = 2                # citation: statements are supported by 1..max_support documents
    split: str | None = None            # world split for names; default: heldout for real, else train

    def check(self) -> None:
        """Raise a HeadlabError naming the first invalid field."""
        checks = [
            ("task", self.task in TASKS, f"one of {', '.join(TASKS)}"),
            ("needle_realism", self.needle_realism in NEEDLE_REALISMS,
             f"one of {', '.join(NEEDLE_REALISMS)}"),
            ("haystack_diversity", self.haystack_diversity in HAYSTACK_DIVERSITIES,
             f"one of {', '.join(HAYSTACK_DIVERSITIES)}"),
            ("n", self.n >= 0, "a count >= 0"),
            ("length", self.length > 0, "a positive number of tokens"),
            # a typo such as 100000000 would build one prompt for hours; real models stop far below this
            ("length", self.length <= MAX_LENGTH, f"at most {MAX_LENGTH} tokens"),
            ("depth", self.depth is None or 0.0 <= self.depth <= 1.0, "a fraction in [0, 1]"),
            ("doc_sentences", 0 <= self.doc_sentences[0] <= self.doc_sentences[1], "min <= max, both >= 0"),
            ("max_support", self.max_support >= 1, ">= 1"),
        ]
        check_fields("data generation", self, checks)


@dataclass
class _Doc:
    title: str
    text: str
    needle_start: int  # character offset of the needle sentence in `text`
    needle_len: int
    tokens: int = 0    # estimated cost in the context (its own tokenization plus the separator)
    meta: dict = field(default_factory=dict)


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _build_doc(needle: Needle, world: World, config: GenConfig, rng: random.Random, tokenizer: Any,
               n_filler: int, writer: DocumentWriter | None) -> _Doc:
    if writer is not None:
        text = writer.document(needle.title, needle.sentence)
        start = text.find(needle.sentence)
    else:
        sentences = world.filler_sentences(rng, n_filler, config.haystack_diversity)
        pos = rng.randint(0, len(sentences))
        before = " ".join(sentences[:pos])
        start = len(before) + (1 if before else 0)
        text = " ".join(sentences[:pos] + [needle.sentence] + sentences[pos:])
    if start < 0:
        raise HeadlabError(f"document writer: text for {needle.title!r} lacks its needle sentence")
    doc = _Doc(needle.title, text, start, len(needle.sentence))
    # 99 stands for any id: ids are assigned after placement and cost about the same tokens.
    doc.tokens = _count(tokenizer, "\n\n" + document_header(Document(99, doc.title, "")) + text)
    return doc


def _place(gold: list[_Doc], distractors: list[_Doc], depth: float | None, rng: random.Random) -> list[int]:
    """Positions of the gold documents in a list of len(gold) + len(distractors)."""
    n = len(gold) + len(distractors)
    first = round(depth * (n - 1)) if depth is not None else rng.randrange(n)
    others = rng.sample([i for i in range(n) if i != first], len(gold) - 1)
    return [first, *others]


def _assemble(gold: list[_Doc], distractors: list[_Doc], positions: list[int]) -> list[_Doc]:
    slots: list[_Doc | None] = [None] * (len(gold) + len(distractors))
    for doc, pos in zip(gold, positions, strict=True):
        slots[pos] = doc
    rest = iter(distractors)
    return [d if d is not None else next(rest) for d in slots]


def generate_example(config: GenConfig, tokenizer: Any, index: int,
                     writer: DocumentWriter | None = None) -> TaskExample:
    """The `index`-th example of `config`: depends only on (config, index, tokenizer), so seeds reproduce."""
    tag = f"{config.task}-{config.needle_realism}-{config.haystack_diversity}-{config.seed}-{index}"
    rng = random.Random(tag)
    world = world_for(config.seed, config.needle_realism, config.split)
    spec = task_spec(config.task)
    plan = spec.plan(world, config.needle_realism, rng, config.max_support)
    question = f"{plan.question}\n{spec.instruction}"
    overhead = len(encode_prompt(tokenizer, render_prompt(tokenizer, "", question))["input_ids"])
    budget = config.length - overhead
    lo, hi = config.doc_sentences
    gold = [_build_doc(nd, world, config, rng, tokenizer, rng.randint(lo, hi), writer) for nd in plan.gold]
    used = sum(d.tokens for d in gold)
    distractors: list[_Doc] = []
    misses = 0
    while misses < 3:
        # Near the budget, try the smallest documents, and one document of a two-document group, before
        # stopping (a lone half of a distractor chain is still a plausible distractor). A short budget with no
        # distractor yet gets a bare needle sentence rather than failing.
        n_filler = rng.randint(lo, hi) if misses == 0 else lo if misses == 1 or distractors else 0
        needles = plan.distractors(rng)[: None if misses == 0 else 1]
        group = [_build_doc(nd, world, config, rng, tokenizer, n_filler, writer) for nd in needles]
        cost = sum(d.tokens for d in group)
        if used + cost <= budget:
            distractors.extend(group)
            used += cost
            misses = 0
        else:
            misses += 1
    if not distractors:
        raise HeadlabError(f"data generation: field 'length' ({config.length}) is too short for the gold "
                           f"documents and one distractor under this tokenizer")
    place_seed = f"{tag}-place"
    while True:
        # Per-document estimates can be off by a token or two at joins: drop distractors until it fits.
        positions = _place(gold, distractors, config.depth, random.Random(place_seed))
        example = _to_example(config, plan, index, gold, distractors, positions)
        n_tokens = len(encode_prompt(tokenizer, render_task_prompt(example, tokenizer))["input_ids"])
        if n_tokens <= config.length or len(distractors) == 1:
            break
        distractors.pop()
    if n_tokens > config.length:
        raise HeadlabError(f"data generation: field 'length' ({config.length}) is too short for this task "
                           f"under this tokenizer ({n_tokens} tokens needed)")
    example.metadata.update(prompt_tokens=n_tokens, length=config.length, seed=config.seed, index=index,
                            depth=config.depth, gold_positions=positions, n_documents=len(example.documents),
                            world_split=world.split, **plan.metadata)
    return example


def _to_example(config: GenConfig, plan: Plan, index: int, gold: list[_Doc], distractors: list[_Doc],
                positions: list[int]) -> TaskExample:
    ordered = _assemble(gold, distractors, positions)
    docs = [Document(i + 1, d.title, d.text) for i, d in enumerate(ordered)]
    context, starts = render_context(docs)
    spans = [(starts[p] + g.needle_start, starts[p] + g.needle_start + g.needle_len)
             for g, p in zip(gold, positions, strict=True)]
    gold_ids = [p + 1 for p in positions]
    answers = list(plan.answers)
    if task_spec(config.task).cites:
        # Supporting documents are interchangeable: list spans and ids in context order.
        spans, gold_ids = sorted(spans), sorted(gold_ids)
        answers = ["".join(f"[{g}]" for g in gold_ids)]
    ex_id = f"{config.task}-{config.needle_realism}-{config.haystack_diversity}-s{config.seed}-{index}"
    return TaskExample(ex_id, config.task, config.needle_realism, config.haystack_diversity, context,
                       plan.question, answers, docs, gold_ids, spans, {})


def generate_examples(config: GenConfig, tokenizer: Any,
                      writer: DocumentWriter | None = None) -> list[TaskExample]:
    """`config.n` examples (see the module docstring). `writer` (e.g. an LLMDocWriter) writes the documents'
    prose instead of the toy world's filler; it applies to the `diverse` haystack only."""
    config.check()
    if writer is not None and config.haystack_diversity != "diverse":
        raise HeadlabError("data generation: LLM-written documents apply to haystack 'diverse' only "
                           f"(got {config.haystack_diversity!r})")
    return [generate_example(config, tokenizer, i, writer) for i in range(config.n)]


def config_dict(config: GenConfig) -> dict:
    """The config as JSON-ready data (for config.json next to generated files)."""
    return asdict(config)
