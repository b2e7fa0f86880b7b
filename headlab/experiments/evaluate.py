"""Evaluation: greedy answers scored against gold, for the `evaluate` command and under an intervention.

Task evaluation (`evaluate_examples`): greedy answers to task prompts, scored with the data module's metrics.

    records, summary = evaluate_examples(model, tokenizer, examples, EvalConfig())
    write_evaluation(records, summary, "runs/eval", config)

Each record holds the example id, the prediction, the gold answers and ids, and its scores. The summary has
the mean headline score (`task_score`: substring match for QA, citation F1), by task, by the depth of the
first gold document (its place in the document list, 0 = first, 1 = last) and by context length.

Scoring under an intervention (`EvalItem`, `load_eval_items`, `score_items`; knockout and patching): one
JSONL file holds either task examples (lines with a "task" field, scored by `task_score`) or probes (text or
token probes, or a .json/.yaml needle-in-a-haystack spec). A probe scores 1 when the response recalls at
least half of the needle's words (token ids for token probes), the success criterion of the retrieval score,
else 0; the mean over probes is the needle-in-a-haystack accuracy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headlab.core.distributed import map_items
from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json, atomic_write_text, iter_jsonl
from headlab.core.progress import progress_bar
from headlab.data.example import TaskExample, load_examples
from headlab.data.probe_files import load_probes
from headlab.data.probes import Probe
from headlab.data.task_registry import task_score, task_spec
from headlab.data.training import prompt_ids
from headlab.experiments.detect import unigram_recall, words
from headlab.mech.generate import greedy_generate, left_pad


@dataclass
class EvalConfig:
    max_new_tokens: int = 32
    batch_size: int = 8
    depth_bins: int = 5
    allow_long_context: bool = False  # run prompts past the model's max_position_embeddings (before extension)


def generate_with_progress(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                           desc: str = "generate") -> list[list[int]]:
    """`greedy_generate` batch by batch under a progress bar (longest prompts first, outputs in input order)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for lo in progress_bar(range(0, len(order), batch_size), desc=desc, leave=False):
        idx = order[lo:lo + batch_size]
        outs = greedy_generate(model, tokenizer, [prompts[i] for i in idx], max_new_tokens, batch_size)
        for i, out in zip(idx, outs, strict=True):
            results[i] = out
    return results


def gold_depth(example: TaskExample) -> float | None:
    """Place of the first gold document in the document list: 0.0 first .. 1.0 last (None without gold)."""
    if not example.gold_doc_ids or not example.documents:
        return None
    ids = [d.id for d in example.documents]
    if len(ids) == 1:
        return 0.5
    return ids.index(example.gold_doc_ids[0]) / (len(ids) - 1)


def depth_bin(depth: float, bins: int) -> str:
    """Equal-width bin label such as "0.4-0.6" (the last bin includes 1.0)."""
    i = min(int(depth * bins), bins - 1)
    return f"{i / bins:.1f}-{(i + 1) / bins:.1f}"


def length_key(example: TaskExample, n_prompt_tokens: int) -> int:
    """The length group: the generator's target length when recorded, else the prompt's token count."""
    target = example.metadata.get("length")
    return target if isinstance(target, int) and not isinstance(target, bool) else n_prompt_tokens


def score_prediction(example: TaskExample, prediction: str) -> dict[str, float]:
    """Headline score plus the task's detail metrics (EM and F1 for QA; precision, recall, F1 for citation)."""
    spec = task_spec(example.task)
    return {"score": spec.score(prediction, example.answers, example.gold_doc_ids),
            **spec.details(prediction, example.answers, example.gold_doc_ids)}


def _check_example_lengths(examples: Sequence[TaskExample], prompts: list[list[int]], model, config: EvalConfig,
                           source: str) -> None:
    from headlab.model.loading import max_positions

    limit = max_positions(model.config)
    if config.allow_long_context or limit is None:
        return
    # The prompt must fit; generated tokens may run a little past the end (data made with `--length N` fills
    # N tokens), which RoPE models handle, so they are not counted.
    for ex, ids in zip(examples, prompts, strict=True):
        if len(ids) > limit:
            raise HeadlabError(f"{source}: example '{ex.id}' has {len(ids)} prompt tokens, more than the model's "
                               f"{limit} positions (pass --allow-long-context to evaluate past them)")


def evaluate_examples(model, tokenizer, examples: Sequence[TaskExample], config: EvalConfig | None = None,
                      source: str = "evaluation") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Greedy-answer every example; return per-example records and the summary."""
    config = config or EvalConfig()
    if not examples:
        raise HeadlabError(f"{source}: no examples")
    prompts = [prompt_ids(ex, tokenizer) for ex in examples]
    _check_example_lengths(examples, prompts, model, config, source)
    # Sharded across processes under `accelerate launch` (a no-op otherwise); outputs come back in order.
    outputs = map_items(lambda block: generate_with_progress(model, tokenizer, block, config.max_new_tokens,
                                                             config.batch_size, desc="evaluate"), prompts)
    records = []
    for ex, ids, out in zip(examples, prompts, outputs, strict=True):
        prediction = tokenizer.decode(out, skip_special_tokens=True).strip()
        depth = gold_depth(ex)
        records.append({"id": ex.id, "task": ex.task, "prediction": prediction, "gold": ex.answers,
                        "gold_doc_ids": ex.gold_doc_ids, **score_prediction(ex, prediction),
                        "depth": None if depth is None else round(depth, 4), "prompt_tokens": len(ids),
                        "length": length_key(ex, len(ids))})
    return records, summarize(records, config.depth_bins)


def _means(records: list[dict], key) -> dict[str, dict[str, float]]:
    groups: dict[Any, list[float]] = defaultdict(list)
    for r in records:
        k = key(r)
        if k is not None:
            groups[k].append(r["score"])
    return {str(k): {"score": sum(v) / len(v), "n": len(v)} for k, v in sorted(groups.items())}


def summarize(records: list[dict[str, Any]], depth_bins: int = 5) -> dict[str, Any]:
    """Mean score overall, by task, by gold-document depth bin and by context length."""
    return {
        "n": len(records),
        "score": sum(r["score"] for r in records) / len(records),
        "by_task": _means(records, lambda r: r["task"]),
        "by_depth": _means(records, lambda r: None if r["depth"] is None else depth_bin(r["depth"], depth_bins)),
        "by_length": _means(records, lambda r: r["length"]),
    }


def plot_breakdown(summary: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Score by gold-document depth and by context length, side by side."""
    import matplotlib.pyplot as plt

    from headlab.core.plots import save_figure

    fig, (ax_d, ax_l) = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((ax_d, "by_depth", "gold document depth"), (ax_l, "by_length", "context length")):
        groups = summary[key]
        names = list(groups) if key == "by_depth" else sorted(groups, key=int)
        ax.plot(range(len(names)), [groups[n]["score"] for n in names], marker="o")
        ax.set_xticks(range(len(names)), names, rotation=30 if key == "by_depth" else 0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(label)
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"mean score {summary['score']:.3f} (n={summary['n']})")
    save_figure(fig, path)


def write_evaluation(records: list[dict], summary: dict, out: str | Path, config: dict[str, Any]) -> None:
    """predictions.jsonl, summary.json, config.json and scores.png under `out`, each written atomically."""
    out = Path(out)
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "config.json", config)
    plot_breakdown(summary, out / "scores.png")


# --- scoring under an intervention (knockout, patching) ----------------------------------------------

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
    return [EvalItem(ex.id, prompt_ids(ex, tokenizer), example=ex) for ex in examples]


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
