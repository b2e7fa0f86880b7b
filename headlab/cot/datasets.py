"""Evaluation items read from local files in their published formats.

- BIG-bench JSON task (`task.json` with `examples`, each with `target_scores` and/or `target`),
- GSM8K JSONL (`question`, `answer` ending in `#### <number>`),
- MMLU CSV (no header: question, A, B, C, D, answer letter; one file per subject),
- CommonsenseQA JSONL (`question.stem`, `question.choices[{label, text}]`, `answerKey`).

Every item has an answer type (multiple-choice letter, number, yes/no, short text) that decides how its answer
is extracted and scored, and a category (math, symbolic, commonsense, knowledge, ...) that the user can override.
A bad file raises HeadlabError naming file, line (or example index) and field.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from headlab.core.errors import HeadlabError, where
from headlab.core.inputs import read_text
from headlab.core.io import iter_jsonl, read_json

ANSWER_TYPES = ("mc", "number", "yesno", "text")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The paper's groups. BIG-bench tasks not listed fall back on their keywords (see `bigbench_category`).
KNOWN_CATEGORIES = {
    "arithmetic": "math", "object_counting": "math", "multistep_arithmetic": "math", "elementary_math_qa": "math",
    "simple_arithmetic": "math", "modified_arithmetic": "math", "gsm8k": "math",
    "navigate": "symbolic", "boolean_expressions": "symbolic", "logical_deduction": "symbolic",
    "tracking_shuffled_objects": "symbolic", "date_understanding": "symbolic", "dyck_languages": "symbolic",
    "word_sorting": "symbolic", "web_of_lies": "symbolic", "formal_fallacies": "symbolic",
    "reasoning_about_colored_objects": "symbolic", "temporal_sequences": "symbolic",
    "strategyqa": "commonsense", "sports_understanding": "commonsense", "causal_judgment": "commonsense",
    "commonsenseqa": "commonsense", "disambiguation_qa": "commonsense", "snarks": "commonsense",
    "general_knowledge": "knowledge", "hindu_knowledge": "knowledge", "periodic_elements": "knowledge",
    "known_unknowns": "knowledge", "mmlu": "knowledge",
}
_KEYWORD_CATEGORIES = (("mathematics", "math"), ("arithmetic", "math"), ("logical reasoning", "symbolic"),
                       ("common sense", "commonsense"), ("memorization", "knowledge"),
                       ("context-free question answering", "knowledge"))
_YES = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


@dataclass
class Item:
    """One question. `gold` holds every accepted answer in canonical form (a letter for `mc`)."""

    id: str
    dataset: str
    category: str
    answer_type: str
    question: str
    gold: list[str]
    choices: list[str] = field(default_factory=list)  # option texts, labelled A, B, ... in order
    rationale: str | None = None  # a worked solution the file ships (GSM8K, strategyqa): few-shot CoT demos

    def to_dict(self) -> dict:
        return asdict(self)


def canonical_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5', 'three' -> '3', '$7' -> '7'; None when it is not a number."""
    t = text.strip().lower().replace(",", "").lstrip("$").rstrip(".")
    if t in NUMBER_WORDS:
        return str(NUMBER_WORDS[t])
    try:
        value = float(t)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def normalize_text(text: str) -> str:
    """Lowercase, punctuation and articles removed, spaces collapsed (SQuAD-style answer normalization)."""
    t = re.sub(r"[^\w\s]", " ", text.lower())
    t = re.sub(r"\b(a|an|the)\b", " ", t)
    return " ".join(t.split())


def dataset_category(name: str, keywords: list[str] | None = None) -> str:
    """Category of a dataset from its name (longest known prefix), else from BIG-bench keywords, else 'other'."""
    base = name.lower()
    for key in sorted(KNOWN_CATEGORIES, key=len, reverse=True):
        if base.startswith(key) or base.split("/")[0].startswith(key):
            return KNOWN_CATEGORIES[key]
    for word, category in _KEYWORD_CATEGORIES:
        if keywords and word in keywords:
            return category
    return "other"


# ---- BIG-bench ---------------------------------------------------------------------------------------------

def bigbench_name(path: Path) -> str:
    """'logical_deduction/three_objects' for .../benchmark_tasks/logical_deduction/three_objects/task.json."""
    parts = path.resolve().parts
    if path.name == "task.json":
        for anchor in ("benchmark_tasks", "bigbench"):
            if anchor in parts[:-1]:
                i = len(parts) - 1 - parts[::-1].index(anchor)
                if i < len(parts) - 2:
                    return "/".join(parts[i + 1:-1])
        return path.parent.name
    return path.stem


def _shuffled(options: list[str], key: str) -> list[str]:
    # BIG-bench often lists the right option first: shuffle each item's options with a seed of its own id
    # (random.Random seeds strings through SHA-512, so the order is the same in every process).
    out = list(options)
    random.Random(key).shuffle(out)
    return out


def bigbench_item(ex: dict, i: int, name: str, category: str, path: Path, preferred: str, prefix: str) -> Item:
    loc = f"{path}: examples[{i}]"
    if not isinstance(ex, dict):
        raise HeadlabError(f"{loc}: expected a JSON object")
    question = ex.get("input")
    if not isinstance(question, str) or not question.strip():
        raise HeadlabError(f"{loc}: field 'input' is missing or not a string")
    question = (prefix + question).strip()
    scores, target = ex.get("target_scores"), ex.get("target")
    if scores is not None and (not isinstance(scores, dict) or not scores
                               or not all(isinstance(v, (int, float)) for v in scores.values())):
        raise HeadlabError(f"{loc}: field 'target_scores' must map option text to a number")
    if target is not None and not (isinstance(target, str) or isinstance(target, list)
                                   and target and all(isinstance(t, str) for t in target)):
        raise HeadlabError(f"{loc}: field 'target' must be a string or a list of strings")
    if scores is None and target is None:
        raise HeadlabError(f"{loc}: field 'target_scores' or 'target' is missing")
    item_id = f"{name}:{i}"
    best = max(scores.values()) if scores else None
    right = [k for k, v in scores.items() if v == best and v > 0] if scores else []
    if scores and not right and (preferred != "exact_str_match" or target is None):
        raise HeadlabError(f"{loc}: field 'target_scores' has no option with a positive score")
    generative = preferred == "exact_str_match" or scores is None
    if not generative:
        if {k.strip().lower() for k in scores} <= set(_YES) and len(scores) == 2:
            return Item(item_id, name, category, "yesno", question, [_YES[right[0].strip().lower()]],
                        rationale=target if isinstance(target, str) else None)
        if len(scores) <= len(LETTERS):
            choices = _shuffled(list(scores), item_id)
            gold = [LETTERS[choices.index(r)] for r in right]
            return Item(item_id, name, category, "mc", question, gold, choices)
    golds = ([target] if isinstance(target, str) else target) if target is not None else right
    numbers = {n for n in (canonical_number(g) for g in golds) if n is not None}
    if numbers:  # object_counting lists "21" and "twenty one": the numeric forms are the answer
        return Item(item_id, name, category, "number", question, sorted(numbers))
    return Item(item_id, name, category, "text", question, sorted({normalize_text(g) for g in golds}))


def load_bigbench(path: Path, name: str | None = None, category: str | None = None) -> list[Item]:
    task = read_json(path)  # a located error for bytes that are not UTF-8 or not JSON
    examples = task.get("examples") if isinstance(task, dict) else None
    if not isinstance(examples, list) or not examples:
        raise HeadlabError(f"{path}: field 'examples' is missing or empty (a programmatic task has no task.json "
                           "examples)")
    name = name or bigbench_name(path)
    keywords = task.get("keywords") if isinstance(task.get("keywords"), list) else []
    category = category or dataset_category(name, keywords)
    preferred = str(task.get("preferred_score", ""))
    prefix = task.get("task_prefix") if isinstance(task.get("task_prefix"), str) else ""
    return [bigbench_item(ex, i, name, category, path, preferred, prefix) for i, ex in enumerate(examples)]


# ---- GSM8K, CommonsenseQA, MMLU ----------------------------------------------------------------------------

def load_gsm8k(path: Path, name: str | None = None, category: str | None = None) -> list[Item]:
    name = name or path.stem
    items = []
    for lineno, obj in iter_jsonl(path):
        question, answer = obj.get("question"), obj.get("answer")
        if not isinstance(question, str):
            raise HeadlabError(f"{where(path, lineno, 'question')} is missing or not a string")
        if not isinstance(answer, str) or "####" not in answer:
            raise HeadlabError(f"{where(path, lineno, 'answer')} must be a string ending in '#### <number>'")
        work, _, final = answer.rpartition("####")
        number = canonical_number(final)
        if number is None:
            raise HeadlabError(f"{where(path, lineno, 'answer')}: '{final.strip()}' after '####' is not a number")
        rationale = re.sub(r"<<[^>]*>>", "", work).strip()  # GSM8K's calculator annotations
        items.append(Item(f"{name}:{len(items)}", name, category or "math", "number", question.strip(), [number],
                          rationale=rationale or None))
    return items


def load_commonsenseqa(path: Path, name: str | None = None, category: str | None = None) -> list[Item]:
    name = name or path.stem
    items = []
    for lineno, obj in iter_jsonl(path):
        q = obj.get("question")
        stem = q.get("stem") if isinstance(q, dict) else None
        choices = q.get("choices") if isinstance(q, dict) else None
        if not isinstance(stem, str):
            raise HeadlabError(f"{where(path, lineno, 'question.stem')} is missing or not a string")
        if not isinstance(choices, list) or not choices or not all(
                isinstance(c, dict) and isinstance(c.get("label"), str) and isinstance(c.get("text"), str)
                for c in choices):
            raise HeadlabError(f"{where(path, lineno, 'question.choices')} must be a list of {{label, text}}")
        labels = [c["label"] for c in choices]
        if labels != list(LETTERS[:len(labels)]):
            raise HeadlabError(f"{where(path, lineno, 'question.choices')}: labels must be A, B, C, ... in order")
        key = obj.get("answerKey")
        if key not in labels:
            raise HeadlabError(f"{where(path, lineno, 'answerKey')} is missing or not one of the labels")
        items.append(Item(str(obj.get("id") or f"{name}:{len(items)}"), name, category or "commonsense", "mc",
                          stem.strip(), [key], [c["text"] for c in choices]))
    return items


def mmlu_name(path: Path) -> str:
    stem = re.sub(r"_(test|dev|val)$", "", path.stem)
    return f"mmlu/{stem}"


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, row) of a CSV file read through the one UTF-8 reader; a malformed row is one line."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise HeadlabError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
        yield reader.line_num, row


def load_mmlu(path: Path, name: str | None = None, category: str | None = None) -> list[Item]:
    name = name or mmlu_name(path)
    items = []
    for lineno, row in _csv_rows(path):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 6:
            raise HeadlabError(f"{path}:{lineno}: expected 6 columns (question, A, B, C, D, answer), "
                               f"got {len(row)}")
        question, options, answer = row[0], row[1:-1], row[-1].strip().upper()
        if answer not in LETTERS[:len(options)]:
            raise HeadlabError(f"{path}:{lineno}: column {len(row)} (answer) must be a letter A-"
                               f"{LETTERS[len(options) - 1]}, got '{row[-1]}'")
        items.append(Item(f"{name}:{len(items)}", name, category or "knowledge", "mc", question.strip(),
                          [answer], [o.strip() for o in options]))
    return items


def detect_format(path: Path) -> str:
    """'bigbench', 'gsm8k', 'commonsenseqa' or 'mmlu', from the file's extension and first record."""
    if path.suffix == ".csv":
        return "mmlu"
    if path.suffix == ".json":
        return "bigbench"
    if path.suffix in (".jsonl", ".gz"):
        for lineno, obj in iter_jsonl(path):
            if isinstance(obj.get("question"), dict) or "answerKey" in obj:
                return "commonsenseqa"
            if "answer" in obj:
                return "gsm8k"
            raise HeadlabError(f"{where(path, lineno)}: not GSM8K ('question', 'answer') nor CommonsenseQA "
                               "('question.stem', 'answerKey')")
        raise HeadlabError(f"{path}: file is empty")
    raise HeadlabError(f"{path}: unknown dataset format (expected task.json, .jsonl or .csv)")


LOADERS = {"bigbench": load_bigbench, "gsm8k": load_gsm8k, "commonsenseqa": load_commonsenseqa, "mmlu": load_mmlu}


def load_dataset(path: str | Path, category: str | None = None, fmt: str | None = None) -> list[Item]:
    """Items of one file; `category` overrides the dataset's default category."""
    path = Path(path)
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found")
    items = LOADERS[fmt or detect_format(path)](path, category=category)
    if not items:
        raise HeadlabError(f"{path}: no examples")
    return items


def parse_categories(specs: list[str]) -> dict[str, str]:
    """['navigate=math', ...] -> {'navigate': 'math'}."""
    out = {}
    for spec in specs:
        name, sep, category = spec.partition("=")
        if not sep or not name.strip() or not category.strip():
            raise HeadlabError(f"--category {spec}: expected DATASET=CATEGORY")
        out[name.strip()] = category.strip()
    return out
