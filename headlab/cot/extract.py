"""The final answer of a response, per answer type, and whether it is right.

An *answer statement* is the text after "answer is" / "answer:" up to the end of its sentence. When a response
has statements, every statement must name the same single answer: "The answer is A or B" or "The answer is 12.
... The answer is 15." is `ambiguous` and scores as wrong. A response with no statement falls back on one line
(the first for a direct answer, the last for a chain of thought): status `fallback`; a number there is its last
number (what a derivation ends on). Nothing found is `none`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headlab.cot.datasets import LETTERS, NUMBER_WORDS, Item, canonical_number, normalize_text

MARKER = re.compile(r"\banswer\s*(?:is|:)\s*:?", re.IGNORECASE)
SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|\b(?:" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
YESNO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
PAREN_LETTER = re.compile(r"\(([A-Z])\)")
BARE_LETTER = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])(?!\s+[a-z])")


@dataclass
class Extraction:
    answer: str | None
    status: str  # "ok", "fallback", "ambiguous", "none" (or "truncated", set by the run for a cut-off CoT)


def statements(response: str) -> list[str]:
    """The text of each answer statement (an empty one borrows the next non-empty line)."""
    out = []
    for m in MARKER.finditer(response):
        rest = response[m.end():]
        if not rest.split("\n", 1)[0].strip(" *:\t"):
            rest = rest.lstrip(" *:\t\n")
        end = SENTENCE_END.search(rest)
        out.append((rest[:end.start()] if end else rest).strip(" *\t"))
    return out


def candidates(span: str, item: Item) -> list[str]:
    """Answers of the item's type mentioned in `span`, in order, canonical form."""
    kind = item.answer_type
    if kind == "number":
        span = span.rsplit("=", 1)[-1]  # "3 + 5 = 8": the result
        found = (canonical_number(m.group().rstrip(",")) for m in NUMBER.finditer(span))
        return [n for n in found if n is not None]
    if kind == "yesno":
        return [{"true": "yes", "false": "no"}.get(w.lower(), w.lower()) for w in YESNO.findall(span)]
    if kind == "text":
        text = normalize_text(span)
        return [text] if text else []
    labels = LETTERS[:len(item.choices)]
    letters = [x for x in PAREN_LETTER.findall(span) if x in labels]
    if not letters:
        letters = [x for x in BARE_LETTER.findall(span) if x in labels]
    if letters:
        return letters
    return _options_named(span, item)


def _options_named(span: str, item: Item) -> list[str]:
    """Letters of the options whose text the span states (an option inside a longer named option is not)."""
    said = f" {normalize_text(span)} "
    texts = {LETTERS[i]: normalize_text(c) for i, c in enumerate(item.choices)}
    exact = [k for k, t in texts.items() if t and f" {t} " == said]
    if exact:
        return exact
    named = [k for k, t in texts.items() if t and f" {t} " in said]
    return [k for k in named if not any(k != o and f" {texts[k]} " in f" {texts[o]} " for o in named)]


def extract(response: str, item: Item, mode: str = "cot") -> Extraction:
    stated = statements(response)
    if stated:
        answers = []
        for span in stated:
            found = set(candidates(span, item))
            if len(found) > 1:
                return Extraction(None, "ambiguous")
            answers.extend(found)
        if len(set(answers)) > 1:
            return Extraction(None, "ambiguous")
        if answers:
            return Extraction(answers[0], "ok")
    lines = [ln for ln in response.splitlines() if ln.strip()]
    if not lines:
        return Extraction(None, "none")
    found = candidates(lines[0] if mode == "direct" else lines[-1], item)
    if item.answer_type == "number" and found:
        return Extraction(found[-1], "fallback")
    if len(set(found)) > 1:
        return Extraction(None, "ambiguous")
    return Extraction(found[0], "fallback") if found else Extraction(None, "none")


def is_correct(answer: str | None, item: Item) -> bool:
    if answer is None:
        return False
    if item.answer_type == "number":
        value = float(answer)
        return any(abs(value - float(g)) <= 1e-6 * max(1.0, abs(float(g))) for g in item.gold)
    if item.answer_type == "text":
        return normalize_text(answer) in item.gold
    return answer in item.gold
