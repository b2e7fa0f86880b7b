"""Task prompts and task probes: one TaskExample -> the prompt a model sees, and a token probe for detection.

The prompt itself comes from headlab's one renderer (`headlab.data.prompts.render_prompt`): the model's chat
template when it has one, else the plain template. Task-specific instructions are appended to the question, so
every task shares that renderer and the detection code sees exactly what evaluation sees.
"""

from __future__ import annotations

from typing import Any

from headlab.core.errors import HeadlabError
from headlab.data.example import TaskExample
from headlab.data.metrics import normalize_answer
from headlab.data.probes import Probe
from headlab.data.prompts import render_prompt
from headlab.data.task_registry import task_spec


def task_question(example: TaskExample) -> str:
    """The question with the task's answer-format instruction."""
    return f"{example.question}\n{task_spec(example.task).instruction}"


def render_task_prompt(example: TaskExample, tokenizer: Any) -> str:
    """The full prompt text for `example` under `tokenizer`'s template."""
    return render_prompt(tokenizer, example.context, task_question(example))


def encode_prompt(tokenizer: Any, prompt: str) -> dict[str, list]:
    """Token ids and character offsets of a rendered prompt.

    Same rule as `headlab.data.prompts.encode_prompt` (so the ids are identical): a chat template already
    wrote its special tokens into the text, so special tokens are added only for the plain template.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise HeadlabError("task probes need a fast tokenizer (offsets come from return_offsets_mapping)")
    add_special = not getattr(tokenizer, "chat_template", None)
    enc = tokenizer(prompt, add_special_tokens=add_special, return_offsets_mapping=True)
    return {"input_ids": list(enc["input_ids"]), "offsets": [tuple(o) for o in enc["offset_mapping"]]}


def char_to_token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The smallest token range [i, j) whose tokens cover characters [start, end).

    Tokens with empty offsets (special tokens) never count; a token that straddles a boundary is included.
    """
    first = last = None
    for i, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        if e > start and s < end:
            if first is None:
                first = i
            last = i
    if first is None or last is None:
        raise HeadlabError(f"no token covers characters [{start}, {end}) of the prompt")
    return first, last + 1


def _needle_span(example: TaskExample, which: str) -> tuple[int, int]:
    if not example.gold_spans:
        raise HeadlabError(f"example {example.id}: field 'gold_spans' is empty, so it has no needle")
    if which == "first":
        return example.gold_spans[0]
    if which == "answer":
        answers = [normalize_answer(a) for a in example.answers if normalize_answer(a)]
        for s, e in example.gold_spans:
            if any(a in normalize_answer(example.context[s:e]) for a in answers):
                return s, e
        return example.gold_spans[0]
    raise HeadlabError(f"task probe: field 'which' must be 'first' or 'answer', got {which!r}")


def task_probe(example: TaskExample, tokenizer: Any, which: str = "first") -> dict[str, Any]:
    """A token probe for the task retrieval score: the prompt's ids and the gold span's token range.

    With several gold spans the needle is the first one listed (`which="first"`, the default; for multi-hop
    that is the first hop), or the first span that contains a gold answer (`which="answer"`, the span a model
    copies its answer from). Returns {"input_ids", "needle_start", "needle_end"}.
    """
    s, e = _needle_span(example, which)
    prompt = render_task_prompt(example, tokenizer)
    # The context appears verbatim in both templates; locate it, then shift the span.
    offset = prompt.find(example.context)
    if offset < 0:
        raise HeadlabError(f"example {example.id}: the prompt template changed the context text, so the gold "
                           "span cannot be located")
    enc = encode_prompt(tokenizer, prompt)
    start, end = char_to_token_span(enc["offsets"], offset + s, offset + e)
    return {"input_ids": enc["input_ids"], "needle_start": start, "needle_end": end}


def task_probes(examples: list[TaskExample], tokenizer: Any, which: str = "first") -> list[Probe]:
    """`task_probe` for each example as detection's Probe objects (token probes, id = example id)."""
    probes = []
    for ex in examples:
        p = task_probe(ex, tokenizer, which)
        probes.append(Probe(ex.id, p["input_ids"], p["needle_start"], p["needle_end"], answer=ex.answers[0]))
    return probes
