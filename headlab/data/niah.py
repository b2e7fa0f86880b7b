"""Needle-in-a-haystack probes from a spec file (JSON or YAML).

    haystack: [essays/*.txt]          # text files, relative to the spec; globs allowed
    needles:
      - {needle: "...", question: "...", answer: "..."}   # answer optional
    lengths: [1000, 2000, 4000]       # prompt length in tokens of the model's tokenizer
    depths: [0.0, 0.25, 0.5, 0.75, 1.0]  # where the needle goes, as a fraction of the haystack

One probe per (needle, length, depth). The haystack is cut to fit the length and the needle is inserted at
the sentence boundary nearest the depth.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from headlab.core.errors import HeadlabError, where
from headlab.core.io import read_document
from headlab.data.probes import Probe, text_probe
from headlab.data.prompts import encode_prompt, render_prompt


@dataclass
class NiahSpec:
    haystack_text: str
    needles: list[dict]
    lengths: list[int]
    depths: list[float]
    source: str = ""  # the spec file, named by errors found after it was read (a length too short)


# A sweep may run past the model's positions on purpose (to show where retrieval breaks), but not without
# bound: a typo such as 100000000 would otherwise grow the process until the kernel kills it.
PAST_CONTEXT_FACTOR = 8
NO_MODEL_LIMIT = 1 << 20  # tokens, when the model states no maximum


def length_limit(max_positions: int | None, allow_long_context: bool = True) -> int:
    """The longest prompt a NIAH spec may ask for, given the model's positions."""
    if max_positions is None:
        return NO_MODEL_LIMIT
    return max_positions * PAST_CONTEXT_FACTOR if allow_long_context else max_positions


def check_lengths(lengths: list[int], limit: int | None, source: str, max_positions: int | None = None,
                  field: str = "lengths") -> None:
    too_long = [n for n in lengths if limit is not None and n > limit]
    if too_long:
        model = f"the model has {max_positions} positions; " if max_positions else ""
        raise HeadlabError(f"{where(source, None, field)}: {too_long[0]} tokens is too long ({model}"
                           f"at most {limit} here)")


def load_niah_spec(path: str | Path, max_length: int | None = None, max_positions: int | None = None) -> NiahSpec:
    """Read and check a spec; `max_length` refuses longer prompts before any haystack is tokenized."""
    from headlab.core.inputs import read_text

    path = Path(path)
    raw = read_document(path, "spec")
    if not isinstance(raw, dict):
        raise HeadlabError(f"{path}: expected a mapping with haystack, needles, lengths, depths")
    for field in ("haystack", "needles", "lengths", "depths"):
        if not isinstance(raw.get(field), list) or not raw[field]:
            raise HeadlabError(f"{where(path, None, field)} must be a non-empty list")
    files = []
    for pattern in raw["haystack"]:
        if not isinstance(pattern, str) or not pattern.strip():
            raise HeadlabError(f"{where(path, None, 'haystack')} must list file names or globs")
        full = path.parent / Path(pattern).expanduser()  # an absolute pattern stays absolute
        matched = [Path(m) for m in sorted(glob.glob(str(full)))] if any(c in pattern for c in "*?[") else [full]
        missing = [m for m in matched if not m.is_file()]
        if not matched or missing:
            raise HeadlabError(f"{where(path, None, 'haystack')}: no haystack file at {pattern}")
        files.extend(matched)
    needles = []
    for i, n in enumerate(raw["needles"]):
        if not isinstance(n, dict) or not all(isinstance(n.get(k), str) and n[k].strip()
                                              for k in ("needle", "question")):
            raise HeadlabError(f"{where(path, None, f'needles[{i}]')} needs string needle and question")
        if n.get("answer") is not None and not isinstance(n["answer"], str):
            raise HeadlabError(f"{where(path, None, f'needles[{i}].answer')} must be a string")
        needles.append(n)
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in raw["lengths"]):
        raise HeadlabError(f"{where(path, None, 'lengths')} must be positive integers")
    check_lengths(raw["lengths"], max_length, str(path), max_positions)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in raw["depths"]):
        raise HeadlabError(f"{where(path, None, 'depths')} must be numbers in [0, 1]")
    text = "\n\n".join(read_text(f) for f in files)
    if not text.strip():
        raise HeadlabError(f"{where(path, None, 'haystack')}: the haystack files hold no text")
    return NiahSpec(text, needles, list(raw["lengths"]), [float(d) for d in raw["depths"]], str(path))


def insert_at_depth(haystack: str, needle: str, depth: float) -> str:
    """Insert the needle after the sentence end nearest to `depth` of the haystack."""
    target = int(len(haystack) * depth)
    ends = [0] + [i + 2 for i in range(len(haystack) - 1) if haystack[i] in ".!?" and haystack[i + 1].isspace()]
    ends.append(len(haystack))
    cut = min(ends, key=lambda e: abs(e - target))
    before, after = haystack[:cut].rstrip(), haystack[cut:].lstrip()
    return " ".join(part for part in (before, needle, after) if part)


def niah_context(tokenizer, haystack_ids: list[int], needle: dict, length: int, depth: float,
                 source: str = "") -> str:
    """A context whose rendered prompt is about `length` tokens, with the needle at `depth`; `source` is the
    spec file that asked for it."""
    overhead = len(encode_prompt(tokenizer, render_prompt(tokenizer, "", needle["question"])))
    budget = length - overhead - len(tokenizer(" " + needle["needle"], add_special_tokens=False)["input_ids"])
    if budget <= 0:
        raise HeadlabError(f"{where(source or 'spec', None, 'lengths')}: {length} tokens is too short for the "
                           f"prompt and needle ({length - budget} tokens)")
    if len(haystack_ids) < budget:  # repeat a short haystack rather than fail
        haystack_ids = haystack_ids * (budget // max(len(haystack_ids), 1) + 1)
    haystack = tokenizer.decode(haystack_ids[:budget], skip_special_tokens=True)
    return insert_at_depth(haystack, needle["needle"], depth)


def niah_probes(spec: NiahSpec, tokenizer) -> list[Probe]:
    haystack_ids = tokenizer(spec.haystack_text, add_special_tokens=False)["input_ids"]
    probes = []
    for i, needle in enumerate(spec.needles):
        for length in spec.lengths:
            for depth in spec.depths:
                context = niah_context(tokenizer, haystack_ids, needle, length, depth, spec.source)
                probes.append(text_probe(tokenizer, context, needle["needle"], needle["question"],
                                         needle.get("answer"), probe_id=f"needle{i}-len{length}-depth{depth:g}"))
    return probes
