"""Task metrics as plain functions: QA exact match / token F1 / substring match, citation P/R/F1.

Answer normalisation follows the SQuAD convention (lower case, drop punctuation and the articles a/an/the,
collapse whitespace), so scores are comparable with published numbers. Every QA metric takes the best score
over the gold answers, because datasets list aliases ("NYC", "New York City").
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_CITATION = re.compile(r"\[\s*(\d+)\s*\]")


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation and articles, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def substring_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if any normalised gold answer occurs in the normalised prediction (lost-in-the-middle accuracy).

    Matching is on whole words, so the answer "1" does not match inside "1990".
    """
    pred = f" {normalize_answer(prediction)} "
    return float(any(normalize_answer(a) and f" {normalize_answer(a)} " in pred for a in answers))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # Both empty counts as agreement (an answer that normalises to nothing, like "the").
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best bag-of-words F1 between the normalised prediction and any gold answer (0.0 if none given)."""
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(a).split()) for a in answers), default=0.0)


def parse_citations(text: str) -> list[int]:
    """Document ids cited as "[3]" in a response, in order of first appearance, without duplicates."""
    seen: dict[int, None] = {}
    for match in _CITATION.finditer(text):
        seen.setdefault(int(match.group(1)), None)
    return list(seen)


def citation_prf(predicted: Iterable[int], gold: Iterable[int]) -> dict[str, float]:
    """Precision, recall and F1 of cited document ids against the gold ids (sets; duplicates ignored).

    Conventions for empty sets: citing nothing when nothing is gold is perfect (1, 1, 1); citing nothing when
    something is gold scores precision 0 (no correct citation was made), recall 0, F1 0.
    """
    pred, ref = set(predicted), set(gold)
    if not pred and not ref:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    hit = len(pred & ref)
    precision = hit / len(pred) if pred else 0.0
    recall = hit / len(ref) if ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hit else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
