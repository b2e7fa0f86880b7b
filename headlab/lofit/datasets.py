"""LoFiT training and evaluation data: one JSONL format per loss, and loaders for published datasets.

Records (all text is rendered with headlab's one prompt renderer, `headlab.data.prompts.render_prompt`):

- `Completion`: a prompt and gold answers; supervised loss on the first answer only. JSONL lines are either
  `{"prompt", "completion"}` (optional "answers": aliases; optional "metric": "contains" or "exact") or a
  headlab task example (docs/data.md).
- `Preference`: `{"prompt", "chosen", "rejected"}`, for the DPO loss (LoFiT's TruthfulQA recipe).
- `MultipleChoice`: TruthfulQA MC1/MC2, scored by log-likelihood over the choices.

Published formats read from local files (never downloaded):
- TruthfulQA: the repo's `mc_task.json` (a list; `mc1_targets`/`mc2_targets` map choice -> 0/1) or the
  Hugging Face `multiple_choice` export as JSON/JSONL (`{"choices": [...], "labels": [...]}`).
- MQuAKE: `MQuAKE-CF-3k.json` style cases (`requested_rewrite`, `questions`, `new_answer`,
  `new_answer_alias`): the edits become the context, the answer is the post-edit answer.
- CLUTRR: the CSV files (`story`, `query` like "('Ann', 'Bob')", `target_text`).
"""

from __future__ import annotations

import ast
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError, where
from headlab.core.io import iter_jsonl, read_json, require
from headlab.data.prompts import render_prompt


@dataclass
class Completion:
    prompt: str
    answers: list[str]
    task: str = "qa"                     # scoring: "qa" (substring match), "exact" (exact match) or a task name
    gold_doc_ids: list[int] = field(default_factory=list)
    id: str = ""

    @property
    def completion(self) -> str:
        return self.answers[0]


@dataclass
class Preference:
    prompt: str
    chosen: str
    rejected: str


@dataclass
class MultipleChoice:
    prompt: str
    choices: list[str]
    mc1_labels: list[int]                # exactly one 1: the best answer
    mc2_labels: list[int]                # every true answer is 1
    id: str = ""


# A prompt/completion record's optional "metric": whether the answer may sit inside a longer reply ("contains",
# the default) or must be the whole reply ("exact", after SQuAD normalisation).
COMPLETION_METRICS = {"contains": "qa", "exact": "exact"}


def _read_json_or_jsonl(path: Path) -> list[tuple[int | None, Any]]:
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found")
    if path.suffix == ".jsonl":
        return list(iter_jsonl(path))
    return [(None, d) for d in read_json(path, expect=list)]


def load_records(path: str | Path, tokenizer) -> list[Completion] | list[Preference]:
    """Read a training/evaluation JSONL: completions, task examples, or preference pairs (one kind per file)."""
    from headlab.data.example import example_from_dict
    from headlab.data.task_prompts import render_task_prompt

    path = Path(path)
    out: list = []
    for lineno, obj in iter_jsonl(path):
        if "chosen" in obj or "rejected" in obj:
            rec: Any = Preference(*(require(obj, k, str, path, lineno) for k in ("prompt", "chosen", "rejected")))
        elif "task" in obj and "context" in obj:
            ex = example_from_dict(obj, path, lineno)
            rec = Completion(render_task_prompt(ex, tokenizer), list(ex.answers), ex.task, ex.gold_doc_ids, ex.id)
        elif "prompt" in obj:
            prompt = require(obj, "prompt", str, path, lineno)
            completion = require(obj, "completion", str, path, lineno, check=lambda s: bool(s.strip()))
            aliases = obj.get("answers", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise HeadlabError(f"{where(path, lineno, 'answers')} must be a list of strings")
            metric = obj.get("metric", "contains")
            if metric not in COMPLETION_METRICS:
                raise HeadlabError(f"{where(path, lineno, 'metric')} must be one of {sorted(COMPLETION_METRICS)}, "
                                   f"got {metric!r}")
            rec = Completion(prompt, [completion, *aliases], COMPLETION_METRICS[metric], id=str(obj.get("id", lineno)))
        else:
            raise HeadlabError(f"{where(path, lineno)}: not a LoFiT record (expected prompt/completion, "
                               "prompt/chosen/rejected, or a task example)")
        if out and type(rec) is not type(out[0]):
            raise HeadlabError(f"{where(path, lineno)}: mixes {type(out[0]).__name__} and "
                               f"{type(rec).__name__} records")
        out.append(rec)
    if not out:
        raise HeadlabError(f"{path}: no records")
    return out


# ---- TruthfulQA ------------------------------------------------------------------------------------------
def _targets(obj: dict, key: str, path: Path, lineno: int | None, index: int) -> tuple[list[str], list[int]]:
    loc = where(path, lineno, f"{key}") if lineno else f"{path}: record {index}: field '{key}'"
    t = obj.get(key)
    if isinstance(t, dict) and "choices" in t:
        choices, labels = t.get("choices"), t.get("labels")
    elif isinstance(t, dict):
        choices, labels = list(t), list(t.values())
    else:
        raise HeadlabError(f"{loc} is missing or not an object")
    ok = (isinstance(choices, list) and isinstance(labels, list) and len(choices) == len(labels) >= 2
          and all(isinstance(c, str) for c in choices) and all(lab in (0, 1) for lab in labels) and any(labels))
    if not ok:
        raise HeadlabError(f"{loc} needs >= 2 string choices with 0/1 labels, at least one 1")
    return choices, [int(lab) for lab in labels]


def load_truthfulqa(path: str | Path, tokenizer) -> list[MultipleChoice]:
    """TruthfulQA multiple-choice items from mc_task.json or the Hugging Face export."""
    path = Path(path)
    items = []
    for i, (lineno, obj) in enumerate(_read_json_or_jsonl(path)):
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
            raise HeadlabError(f"{where(path, lineno, 'question')} is missing" if lineno
                               else f"{path}: record {i}: field 'question' is missing")
        c1, l1 = _targets(obj, "mc1_targets", path, lineno, i)
        c2, l2 = _targets(obj, "mc2_targets", path, lineno, i)
        if sum(l1) != 1:
            raise HeadlabError(f"{path}: record {i}: field 'mc1_targets' must have exactly one true choice")
        # MC1 and MC2 share the question; score over the MC2 choice list, MC1 over its own list.
        prompt = render_prompt(tokenizer, "", obj["question"]).lstrip()
        items.append(MultipleChoice(prompt, c1, l1, [], str(i)))
        items.append(MultipleChoice(prompt, c2, [], l2, str(i)))
    if not items:
        raise HeadlabError(f"{path}: no records")
    return items


def truthfulqa_preferences(items: list[MultipleChoice]) -> list[Preference]:
    """DPO pairs from MC2 items: every true answer paired with a false one (cycled), as LoFiT trains."""
    pairs = []
    for it in items:
        if not it.mc2_labels:
            continue
        true = [c for c, lab in zip(it.choices, it.mc2_labels, strict=True) if lab]
        false = [c for c, lab in zip(it.choices, it.mc2_labels, strict=True) if not lab]
        for k, good in enumerate(true):
            if false:
                pairs.append(Preference(it.prompt, good, false[k % len(false)]))
    return pairs


# ---- MQuAKE ----------------------------------------------------------------------------------------------
def load_mquake(path: str | Path, tokenizer) -> list[Completion]:
    """MQuAKE cases: the requested edits, stated as facts, are the context; the gold is the new answer."""
    path = Path(path)
    out = []
    for i, (lineno, case) in enumerate(_read_json_or_jsonl(path)):
        loc = where(path, lineno) if lineno else f"{path}: case {i}"
        try:
            facts = [r["prompt"].format(r["subject"]) + " " + r["target_new"]["str"] + "."
                     for r in case["requested_rewrite"]]
            question = case["questions"][0]
            answers = [case["new_answer"], *case.get("new_answer_alias", [])]
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise HeadlabError(f"{loc}: field {e} is missing or malformed") from None
        if not all(isinstance(a, str) for a in answers) or not isinstance(question, str):
            raise HeadlabError(f"{loc}: field 'new_answer' must be a string")
        out.append(Completion(render_prompt(tokenizer, " ".join(facts), question), answers,
                              id=str(case.get("case_id", i))))
    return out


# ---- CLUTRR ----------------------------------------------------------------------------------------------
def load_clutrr(path: str | Path, tokenizer) -> list[Completion]:
    """CLUTRR CSV rows: the story is the context; the answer is the relation (`target_text`)."""
    path = Path(path)
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found")
    from headlab.core.inputs import read_text

    out = []
    with io.StringIO(read_text(path), newline="") as f:  # decoded whole: a bad byte is located, not raised
        reader = csv.DictReader(f)
        missing = {"story", "query", "target_text"} - set(reader.fieldnames or [])
        if missing:
            raise HeadlabError(f"{path}: field '{sorted(missing)[0]}' is missing from the CSV header")
        for lineno, row in enumerate(reader, start=2):
            try:
                a, b = ast.literal_eval(row["query"])
            except (ValueError, SyntaxError, TypeError):
                raise HeadlabError(f"{where(path, lineno, 'query')} must look like \"('Ann', 'Bob')\"") from None
            if not row["target_text"].strip():
                raise HeadlabError(f"{where(path, lineno, 'target_text')} is empty")
            question = f"How is {b} related to {a}?"
            out.append(Completion(render_prompt(tokenizer, row["story"].strip(), question),
                                  [row["target_text"].strip()], id=row.get("id") or str(lineno)))
    if not out:
        raise HeadlabError(f"{path}: no records")
    return out
