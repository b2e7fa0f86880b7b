"""Gold supporting spans inside document text: sentence boundaries and the sentence that carries a fact.

Real datasets mark which *document* is gold, not which characters; the retrieval score needs a needle short
enough that copying from it is meaningful, so loaders narrow a gold document to the sentence with the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from headlab.data.metrics import normalize_answer

# A sentence: a run up to and including terminal punctuation (or the end of the text).
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.MULTILINE)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence in `text`, with surrounding whitespace trimmed."""
    spans = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def answer_sentence_span(text: str, answers: Sequence[str]) -> tuple[int, int]:
    """The first sentence of `text` mentioning any answer (case-insensitive); the whole text if none does."""
    wanted = [a.lower() for a in answers if a.strip()]
    for start, end in sentence_spans(text):
        sentence = text[start:end].lower()
        if any(a in sentence for a in wanted):
            return start, end
    return 0, len(text)


def best_overlap_sentence_span(text: str, statement: str) -> tuple[int, int]:
    """The sentence of `text` sharing the most normalised words with `statement` (first on ties).

    Used where a document paraphrases a statement (SummHay insights), so no exact match exists.
    """
    target = set(normalize_answer(statement).split())
    best, best_score = (0, len(text)), -1
    for start, end in sentence_spans(text):
        score = len(target & set(normalize_answer(text[start:end]).split()))
        if score > best_score:
            best, best_score = (start, end), score
    return best
