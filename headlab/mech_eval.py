"""Scoring data under an intervention: task examples (task metric) or needle-in-a-haystack probes (accuracy).

One JSONL file holds either task examples (lines with a "task" field, scored by `task_score`) or probes
(text or token probes, or a .json/.yaml needle-in-a-haystack spec). A probe scores 1 when the response
recalls at least half of the needle's words (token ids for token probes), the success criterion of the
retrieval score, else 0; the mean over probes is the needle-in-a-haystack accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from headlab.data.example import TaskExample, load_examples
from headlab.data.metrics import task_score
from headlab.data.probes import Probe, load_probes
from headlab.data.prompts import encode_prompt
from headlab.data.task_prompts import render_task_prompt
from headlab.detect import unigram_recall, words
from headlab.distributed import map_items
from headlab.errors import HeadlabError
from headlab.generate import greedy_generate, left_pad
from headlab.io import iter_jsonl

SUCCESS_RECALL = 0.5


@dataclass
class EvalItem:
    id: str
    prompt_ids: list[int]
    example: TaskExample | None = None
    probe: Probe | None = None

    @property
    def stops_at_newline(self) -> bool:
        return self.probe is None or self.probe.is_text

    def score(self, response_ids: list[int], tokenizer) -> float:
        text = tokenizer.decode(response_ids, skip_special_tokens=True)
        if self.example is not None:
            ex = self.example
            return task_score(ex.task, text.strip(), ex.answers, ex.gold_doc_ids)
        p = self.probe
        recall = (unigram_recall(words(p.needle), words(text)) if p.is_text
                  else unigram_recall(p.needle_ids, response_ids))
        return float(recall >= SUCCESS_RECALL)


def items_from_probes(probes: list[Probe]) -> list[EvalItem]:
    return [EvalItem(p.id, p.input_ids, probe=p) for p in probes]


def items_from_examples(examples: list[TaskExample], tokenizer) -> list[EvalItem]:
    return [EvalItem(ex.id, encode_prompt(tokenizer, render_task_prompt(ex, tokenizer)), example=ex)
            for ex in examples]


def load_eval_items(path: str | Path, tokenizer, max_positions: int | None = None) -> list[EvalItem]:
    """Task examples or probes from one file; the first record decides which. A needle-in-a-haystack spec
    asking for prompts beyond `max_positions` is refused before its haystack is tokenized."""
    path = Path(path)
    if path.suffix in (".json", ".yaml", ".yml"):
        return items_from_probes(load_probes(path, tokenizer, max_positions, max_positions))
    first = next(iter_jsonl(path), None)
    if first is None:
        raise HeadlabError(f"{path}: no records in file")
    if "task" in first[1]:
        return items_from_examples(load_examples(path), tokenizer)
    return items_from_probes(load_probes(path, tokenizer))


def check_lengths(items: list[EvalItem], max_positions: int | None, max_new_tokens: int) -> None:
    if max_positions is None:
        return
    for it in items:
        if len(it.prompt_ids) + max_new_tokens > max_positions:
            raise HeadlabError(f"{it.id}: prompt of {len(it.prompt_ids)} tokens + {max_new_tokens} new tokens is "
                               f"longer than the model's maximum of {max_positions} positions")


def score_items(model: nn.Module, tokenizer, items: list[EvalItem], max_new_tokens: int,
                batch_size: int) -> list[float]:
    """Greedy-decode every item (under whatever intervention is active) and score it; input order.

    Under `accelerate launch` each process scores its block of items and all get every score back.
    """
    return map_items(lambda block: _score_block(model, tokenizer, block, max_new_tokens, batch_size), items)


def _score_block(model: nn.Module, tokenizer, items: list[EvalItem], max_new_tokens: int,
                 batch_size: int) -> list[float]:
    scores: list[float] = [0.0] * len(items)
    for newline in (True, False):
        idx = [i for i, it in enumerate(items) if it.stops_at_newline == newline]
        if not idx:
            continue
        responses = greedy_generate(model, tokenizer, [items[i].prompt_ids for i in idx],
                                    max_new_tokens=max_new_tokens, batch_size=batch_size, stop_at_newline=newline)
        for i, r in zip(idx, responses, strict=True):
            scores[i] = items[i].score(r, tokenizer)
    return scores


def prompt_batches(items: list[EvalItem], pad_id: int, batch_size: int, device: torch.device | str = "cpu"):
    """Left-padded (input_ids, attention_mask) batches of the prompts: a reference set for `head_means`."""
    for lo in range(0, len(items), batch_size):
        yield left_pad([it.prompt_ids for it in items[lo:lo + batch_size]], pad_id, device)
