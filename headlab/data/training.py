"""Task examples as training rows: the rendered prompt, then the answer, with the loss on the answer only.

The target is what a model should generate after the prompt: for the plain template, " " + first answer +
"\\n" (the answer follows "Answer:" after a space and ends at a newline, where generation stops); for a chat
template, the first answer + EOS. For citation the first answer is the gold ids written as "[2][5]".
Prompt and target are tokenized separately, so the prompt's ids are exactly those the model sees at
evaluation time (`encode_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError, where
from headlab.core.io import iter_jsonl
from headlab.data.example import TaskExample, example_from_dict
from headlab.data.prompts import encode_prompt
from headlab.data.task_prompts import render_task_prompt

IGNORE_INDEX = -100  # label value that cross-entropy skips (the Hugging Face convention)
_KNOWN_FIELDS = frozenset(f.name for f in fields(TaskExample))


@dataclass
class LocatedExample:
    example: TaskExample
    path: str
    line: int

    def where(self, field: str | None = None) -> str:
        return where(self.path, self.line, field)


def load_task_data(path: str | Path) -> list[LocatedExample]:
    """Read a task JSONL strictly: every field validated, unknown fields and empty files rejected."""
    out = []
    for lineno, obj in iter_jsonl(path):
        unknown = sorted(set(obj) - _KNOWN_FIELDS)
        if unknown:
            raise HeadlabError(f"{where(path, lineno, unknown[0])} is not a task-example field "
                               f"(known: {', '.join(sorted(_KNOWN_FIELDS))})")
        out.append(LocatedExample(example_from_dict(obj, path, lineno), str(path), lineno))
    if not out:
        raise HeadlabError(f"{path}: no examples (the file is empty)")
    return out


def answer_text(example: TaskExample, tokenizer: Any) -> str:
    """The text the model should produce after the prompt."""
    if getattr(tokenizer, "chat_template", None):
        return example.answers[0] + (tokenizer.eos_token or "")
    return " " + example.answers[0] + "\n"


def prompt_ids(example: TaskExample, tokenizer: Any) -> list[int]:
    return list(encode_prompt(tokenizer, render_task_prompt(example, tokenizer)))


def encode_example(item: LocatedExample, tokenizer: Any, max_length: int, answer_only: bool = True
                   ) -> dict[str, list[int]]:
    """{"input_ids", "labels", "attention_mask"}; labels are IGNORE_INDEX on the prompt when `answer_only`.

    A row longer than `max_length` is an error naming the file, line and example: truncating would cut the
    answer or the documents, silently changing the task.
    """
    prompt = prompt_ids(item.example, tokenizer)
    target = tokenizer(answer_text(item.example, tokenizer), add_special_tokens=False)["input_ids"]
    ids = prompt + target
    if len(ids) > max_length:
        raise HeadlabError(f"{item.where()}: example '{item.example.id}' is {len(ids)} tokens (prompt and "
                           f"answer), longer than the target context {max_length}")
    labels = ([IGNORE_INDEX] * len(prompt) + target) if answer_only else list(ids)
    return {"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)}


def encode_all(items: list[LocatedExample], tokenizer: Any, max_length: int, answer_only: bool = True
               ) -> list[dict[str, list[int]]]:
    return [encode_example(it, tokenizer, max_length, answer_only) for it in items]
