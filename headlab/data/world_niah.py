"""Toy needle-in-a-haystack probes: one fact sentence hidden in toy-world filler, asked about at the end."""

from __future__ import annotations

import random

from headlab.core.errors import HeadlabError
from headlab.data.probes import Probe, text_probe
from headlab.data.prompts import encode_prompt, render_prompt
from headlab.data.world import World

# The probes `headlab detect`, `knockout` and `patch` use without --probes / --data.
DEFAULT_PROBES = 24
DEFAULT_CONTEXT_TOKENS = 192  # inside the shipped model's 256 positions with room for the answer


def niah_records(tokenizer, n: int, context_tokens: int, seed: int, diversity: str = "diverse",
                 realism: str = "real", split: str = "train") -> list[dict]:
    """`n` probes {context, needle, question, answer, short_answer, depth}; each rendered prompt is about
    `context_tokens` tokens.

    The needle is a fact sentence; the answer is that same sentence, since the toy model answers by
    copying it. Depths are spread evenly from the start (0.0) to the end (1.0) of the haystack.
    """
    if n < 1:
        raise HeadlabError(f"toy probes: field 'n' must be >= 1, got {n}")
    world = World(0, split)  # the pretraining world's entity pool; the seed only moves the draws
    rng = random.Random(f"niah-{seed}")
    out = []
    for i in range(n):
        fact = world.sample_fact(rng)
        needle = world.fact_sentence(fact, rng, realism)
        question = world.question(fact)
        overhead = len(encode_prompt(tokenizer, render_prompt(tokenizer, needle, question)))
        if overhead >= context_tokens:
            raise HeadlabError(f"toy probes: field 'context_tokens' ({context_tokens}) is too "
                               f"small for a needle and question ({overhead} tokens)")
        # Add filler until the haystack holds the tokens left; sentence costs are additive because
        # every sentence after the first starts with a space that its first token absorbs.
        filler: list[str] = []
        # 2 tokens of slack: the needle's first token can change once a space precedes it.
        budget = context_tokens - overhead - 2
        misses = 0
        while misses < 8:  # near the end, try a few more draws for a short sentence that still fits
            s = world.filler_sentence(rng, diversity)
            cost = len(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
            if cost > budget:
                misses += 1
                continue
            filler.append(s)
            budget -= cost
        depth = i / (n - 1) if n > 1 else 0.5
        filler.insert(round(depth * len(filler)), needle)
        out.append({"context": " ".join(filler), "needle": needle, "question": question, "answer": needle,
                    "short_answer": world.short_answer(fact), "depth": round(depth, 3)})
    return out


def default_probes(tokenizer, seed: int = 0) -> list[Probe]:
    """The default toy needle-in-a-haystack probes as text probes (ids "toy-0", "toy-1", ...)."""
    records = niah_records(tokenizer, n=DEFAULT_PROBES, context_tokens=DEFAULT_CONTEXT_TOKENS, seed=seed)
    return [text_probe(tokenizer, r["context"], r["needle"], r["question"], r["answer"], f"toy-{i}")
            for i, r in enumerate(records)]
