"""Scoring for LoFiT runs: greedy answers scored by the task metric, and TruthfulQA MC1/MC2 by likelihood."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from headlab.core.distributed import map_items
from headlab.core.progress import progress_bar
from headlab.data.metrics import exact_match, substring_match
from headlab.data.prompts import encode_prompt, pad_id_of
from headlab.data.task_registry import task_score
from headlab.lofit.datasets import Completion, MultipleChoice
from headlab.lofit.train import collate, encode_pair, sequence_logprob
from headlab.mech.generate import greedy_generate
from headlab.model.seam import input_device


def greedy_answer(model, tokenizer, prompt: str, max_new_tokens: int = 32) -> str:
    """Greedy continuation of `prompt` up to its first newline or EOS (generate.stop_ids's rule)."""
    [ids] = greedy_generate(model, tokenizer, [encode_prompt(tokenizer, prompt)], max_new_tokens, batch_size=1)
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def score_completion(record: Completion, prediction: str) -> float:
    if record.task == "qa":
        return substring_match(prediction, record.answers)
    if record.task == "exact":
        return exact_match(prediction, record.answers)
    return task_score(record.task, prediction, record.answers, record.gold_doc_ids)


def evaluate_completions(model, tokenizer, records: Sequence[Completion], max_new_tokens: int = 32) -> dict:
    """Mean task score of greedy answers, plus the first few predictions for a look."""
    scores, shown = [], []
    # Sharded across processes under `accelerate launch` (a no-op otherwise); predictions come back in order.
    preds = map_items(lambda block: [greedy_answer(model, tokenizer, r.prompt, max_new_tokens)
                                     for r in progress_bar(block, desc="lofit eval", leave=False)], records)
    for r, pred in zip(records, preds, strict=True):
        scores.append(score_completion(r, pred))
        if len(shown) < 5:
            shown.append({"id": r.id, "prediction": pred, "answers": r.answers[:3]})
    return {"score": sum(scores) / len(scores), "n": len(scores), "examples": shown}


@torch.no_grad()
def choice_logprobs(model, tokenizer, item: MultipleChoice) -> torch.Tensor:
    """Summed log-probability of each choice after the prompt [n_choices]."""
    device = input_device(model)
    batch = collate([encode_pair(tokenizer, item.prompt, c) for c in item.choices],
                    pad_id_of(tokenizer), device)
    return sequence_logprob(model, batch).cpu()


def evaluate_multiple_choice(model, tokenizer, items: Sequence[MultipleChoice]) -> dict:
    """TruthfulQA MC1 (the best answer has the highest likelihood) and MC2 (normalised mass on true answers)."""
    mc1, mc2 = [], []
    logprobs = map_items(lambda block: [choice_logprobs(model, tokenizer, it)
                                        for it in progress_bar(block, desc="lofit eval mc", leave=False)], items)
    for it, lp in zip(items, logprobs, strict=True):
        if it.mc1_labels:
            mc1.append(float(it.mc1_labels[int(lp.argmax())] == 1))
        if it.mc2_labels:
            p = torch.softmax(lp.double(), 0)  # = exp(lp) / sum exp(lp), computed stably
            mc2.append(float(p[torch.tensor(it.mc2_labels, dtype=torch.bool)].sum()))
    out: dict = {"n": len({it.id for it in items})}
    if mc1:
        out["mc1"] = sum(mc1) / len(mc1)
    if mc2:
        out["mc2"] = sum(mc2) / len(mc2)
    return out
