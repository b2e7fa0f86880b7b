"""Pretraining text for the toy model: facts in filler, then questions answered by copying the fact.

Every document is a context followed by one or more question/answer pairs in headlab's plain prompt
format, `f"{context}\\n\\nQuestion: {question}\\nAnswer:"`, and the answer is `" " + the fact sentence
exactly as the context stated it` followed by a newline. Copying the whole sentence (rather than a short
answer) is what needle-in-a-haystack detection scores, and learning to find and copy it is what makes
retrieval heads appear.
"""

from __future__ import annotations

import random

from headlab.data.world import Fact, World

# Haystack diversity mix during pretraining: mostly prose, but the other two kinds appear so the model
# can still find a needle when the study swaps the haystack.
_DIVERSITY_MIX = (("diverse", 0.7), ("repetitive", 0.15), ("symbolic", 0.15))


def render_prompt(context: str, question: str) -> str:
    """headlab's plain prompt (no chat template)."""
    return f"{context}\n\nQuestion: {question}\nAnswer:"


def pick_from_mix(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    """One name from (name, probability) pairs."""
    x = rng.random()
    for name, p in mix:
        x -= p
        if x < 0:
            return name
    return mix[-1][0]


def document(world: World, rng: random.Random, n_filler: int) -> str:
    """One pretraining document: facts placed among `n_filler` filler sentences, then 1-3 questions.

    Half the documents are needle-style (one to three facts in a long haystack), half are fact-dense
    (several facts per paragraph, so the question has to pick the right one among distractors).
    """
    diversity = pick_from_mix(rng, _DIVERSITY_MIX)
    n_facts = rng.randint(1, 3) if rng.random() < 0.5 else rng.randint(4, 8)
    facts = world.sample_facts(rng, n_facts)
    realism = "real" if rng.random() < 0.7 else "templated"
    stated = {f: world.fact_sentence(f, rng, realism) for f in facts}
    sentences = world.filler_sentences(rng, n_filler, diversity)
    for f in facts:
        sentences.insert(rng.randint(0, len(sentences)), stated[f])
    context = " ".join(sentences)
    asked: list[Fact] = rng.sample(facts, k=min(len(facts), rng.randint(1, 3)))
    # A follow-up question continues the text exactly as a fresh prompt would: "...answer.\n\nQuestion:".
    text = context
    for f in asked:
        text = render_prompt(text, world.question(f)) + " " + stated[f]
    return text + "\n"
