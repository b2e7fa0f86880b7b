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

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from headlab.data.probes import Probe, text_probe
from headlab.data.prompts import encode_prompt, render_prompt
from headlab.errors import HeadlabError, where


@dataclass
class NiahSpec:
    haystack_text: str
    needles: list[dict]
    lengths: list[int]
    depths: list[float]


def load_niah_spec(path: str | Path) -> NiahSpec:
    path = Path(path)
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.suffix != ".json" else json.loads(
            path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise HeadlabError(f"{path}: cannot parse spec ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise HeadlabError(f"{path}: expected a mapping with haystack, needles, lengths, depths")
    for field in ("haystack", "needles", "lengths", "depths"):
        if not isinstance(raw.get(field), list) or not raw[field]:
            raise HeadlabError(f"{where(path, None, field)} must be a non-empty list")
    files = []
    for pattern in raw["haystack"]:
        matched = sorted(path.parent.glob(str(pattern))) if any(c in str(pattern) for c in "*?[") else [
            path.parent / str(pattern)]
        missing = [m for m in matched if not m.is_file()]
        if not matched or missing:
            raise HeadlabError(f"{where(path, None, 'haystack')}: no haystack file at {pattern}")
        files.extend(matched)
    needles = []
    for i, n in enumerate(raw["needles"]):
        if not isinstance(n, dict) or not all(isinstance(n.get(k), str) and n[k].strip()
                                              for k in ("needle", "question")):
            raise HeadlabError(f"{where(path, None, f'needles[{i}]')} needs string needle and question")
        needles.append(n)
    if not all(isinstance(x, int) and x > 0 for x in raw["lengths"]):
        raise HeadlabError(f"{where(path, None, 'lengths')} must be positive integers")
    if not all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in raw["depths"]):
        raise HeadlabError(f"{where(path, None, 'depths')} must be numbers in [0, 1]")
    text = "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    return NiahSpec(text, needles, list(raw["lengths"]), [float(d) for d in raw["depths"]])


def insert_at_depth(haystack: str, needle: str, depth: float) -> str:
    """Insert the needle after the sentence end nearest to `depth` of the haystack."""
    target = int(len(haystack) * depth)
    ends = [0] + [i + 2 for i in range(len(haystack) - 1) if haystack[i] in ".!?" and haystack[i + 1].isspace()]
    ends.append(len(haystack))
    cut = min(ends, key=lambda e: abs(e - target))
    before, after = haystack[:cut].rstrip(), haystack[cut:].lstrip()
    return " ".join(part for part in (before, needle, after) if part)


def niah_context(tokenizer, haystack_ids: list[int], needle: dict, length: int, depth: float) -> str:
    """A context whose rendered prompt is about `length` tokens, with the needle at `depth`."""
    overhead = len(encode_prompt(tokenizer, render_prompt(tokenizer, "", needle["question"])))
    budget = length - overhead - len(tokenizer(" " + needle["needle"], add_special_tokens=False)["input_ids"])
    if budget <= 0:
        raise HeadlabError(f"length {length} is too short for the prompt and needle ({length - budget} tokens)")
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
                context = niah_context(tokenizer, haystack_ids, needle, length, depth)
                probes.append(text_probe(tokenizer, context, needle["needle"], needle["question"],
                                         needle.get("answer"), probe_id=f"needle{i}-len{length}-depth{depth:g}"))
    return probes
