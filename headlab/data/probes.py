"""Probes: long-context inputs with a known needle span (docs/definitions.md#probe).

A text probe (context, needle, question, optional answer) is rendered with the model's prompt template and
its needle located in the prompt tokens; a token probe gives `input_ids`, `needle_start`, `needle_end`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from headlab.core.errors import HeadlabError, where
from headlab.core.io import require
from headlab.data.prompts import encode_prompt, render_prompt

NEEDLE_OVERLAP = 0.9  # a window is the needle when it shares more than this fraction of the needle's token set


@dataclass
class Probe:
    id: str
    input_ids: list[int]
    needle_start: int
    needle_end: int
    needle: str | None = None  # text of the needle, for text probes (success filter on words)
    answer: str | None = None
    newline_stop: bool | None = None  # stop at a newline token; default: for text probes only

    @property
    def is_text(self) -> bool:
        return self.needle is not None

    @property
    def stops_at_newline(self) -> bool:
        return self.is_text if self.newline_stop is None else self.newline_stop

    @property
    def needle_ids(self) -> list[int]:
        return self.input_ids[self.needle_start:self.needle_end]


def locate_needle(prompt_ids: list[int], needle_ids: list[int]) -> int | None:
    """Start of the first window of len(needle_ids) tokens whose token set covers > 90% of the needle's.

    Callers pass only the part of the prompt where the needle may be (the context, for text probes)."""
    n = len(needle_ids)
    needle_set = set(needle_ids)
    if n == 0 or n > len(prompt_ids):
        return None
    window = Counter(prompt_ids[:n])
    for start in range(len(prompt_ids) - n + 1):
        if start:
            old, new = prompt_ids[start - 1], prompt_ids[start + n - 1]
            window[old] -= 1
            if window[old] == 0:
                del window[old]
            window[new] += 1
        if sum(1 for t in needle_set if t in window) / len(needle_set) > NEEDLE_OVERLAP:
            return start
    return None


def text_probe(tokenizer, context: str, needle: str, question: str, answer: str | None = None,
               probe_id: str = "probe") -> Probe:
    """Render a text probe and locate its needle; a needle not found is an error naming the probe."""
    prompt = render_prompt(tokenizer, context, question)
    prompt_ids = encode_prompt(tokenizer, prompt)
    searchable = prompt_ids[:context_end_token(tokenizer, prompt, context, len(prompt_ids))]
    # Inside the context the needle usually follows a space, which byte-level tokenizers fold into the
    # first token; try the needle as given, then with a leading space.
    for variant in (needle, " " + needle.lstrip()):
        needle_ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
        start = locate_needle(searchable, needle_ids)
        if start is not None:
            return Probe(probe_id, prompt_ids, start, start + len(needle_ids), needle=needle, answer=answer)
    raise HeadlabError(f"{probe_id}: needle not found in the context: {needle[:60]!r}")


def context_end_token(tokenizer, prompt: str, context: str, prompt_length: int) -> int:
    """How many prompt tokens lie before the context's end: a needle that occurs only in the question (or the
    template) must not count as found, or copies from the question would score as retrieval.

    The prefix is tokenized on its own, so a token straddling the context's end may shift the count by one;
    one token of slack keeps a needle that ends the context. A template that rewrites the context (so it is
    not found verbatim) falls back to the whole prompt, as before."""
    text = context.strip()
    at = prompt.find(text)
    if at < 0:
        return prompt_length
    return len(encode_prompt(tokenizer, prompt[:at + len(text)])) + 1


MAX_CHARS_PER_TOKEN = 64  # no tokenizer's token is longer: a context past this many per position cannot fit


def probe_from_record(record: dict, tokenizer, path: str | Path, lineno: int | None,
                      max_positions: int | None = None) -> Probe:
    """A probe from one JSONL object: a token probe if it has input_ids, else a text probe.

    With `max_positions`, a text context that could not fit even at MAX_CHARS_PER_TOKEN is refused before it
    is tokenized (a tokenizer handed hundreds of megabytes allocates gigabytes, or aborts the process)."""
    probe_id = str(record.get("id", f"{Path(path).name}:{lineno}"))
    if "input_ids" in record:
        ids = require(record, "input_ids", list, path, lineno,
                      lambda v: len(v) > 0 and all(isinstance(t, int) and not isinstance(t, bool) for t in v))
        start = require(record, "needle_start", int, path, lineno)
        end = require(record, "needle_end", int, path, lineno)
        if not 0 <= start < end <= len(ids):
            raise HeadlabError(f"{where(path, lineno, 'needle_end')}: needle span [{start}, {end}) is not "
                               f"inside the {len(ids)} input ids")
        vocab = len(tokenizer)
        outside = [t for t in ids if not 0 <= t < vocab]
        if outside:  # an embedding lookup would fail deep inside the model (or read garbage on a GPU)
            raise HeadlabError(f"{where(path, lineno, 'input_ids')}: token id {outside[0]} is outside the "
                               f"tokenizer's vocabulary of {vocab}")
        return Probe(probe_id, ids, start, end)
    fields = {f: require(record, f, str, path, lineno, lambda v: bool(v.strip()))
              for f in ("context", "needle", "question")}
    if max_positions is not None and len(fields["context"]) > MAX_CHARS_PER_TOKEN * max_positions:
        raise HeadlabError(f"{where(path, lineno, 'context')}: {len(fields['context']):,} characters cannot fit "
                           f"in the model's {max_positions:,} positions")
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise HeadlabError(f"{where(path, lineno, 'answer')} has the wrong type ({type(answer).__name__})")
    try:
        return text_probe(tokenizer, fields["context"], fields["needle"], fields["question"], answer, probe_id)
    except HeadlabError as e:
        raise HeadlabError(f"{where(path, lineno, 'needle')}: {e}") from None



def check_context_length(probes: list[Probe], max_positions: int | None, max_new_tokens: int) -> None:
    """Every probe plus its generation must fit the model's maximum position count."""
    if max_positions is None:
        return
    for p in probes:
        if len(p.input_ids) + max_new_tokens > max_positions:
            raise HeadlabError(
                f"{p.id}: prompt of {len(p.input_ids)} tokens + {max_new_tokens} new tokens is longer than the "
                f"model's maximum of {max_positions} positions (pass allow_long_context to go beyond it)"
            )
