"""Short task documents for pretraining: the study's three tasks, rendered and answered, inside 256 tokens.

The study fine-tunes the shipped model to answer multi-document QA, multi-hop QA and citation prompts at
1024 tokens and more. A base model that has never seen the task format cannot show whether that extension
helps, so pretraining mixes in the same tasks at its own short context, the way a real instruct model can
already do a task inside its window before context extension. Names and wordings come from the world's
`train` split only; the study evaluates on `heldout` names and wordings.
"""

from __future__ import annotations

import random
from typing import Any

from headlab.core.errors import HeadlabError
from headlab.data.example import HAYSTACK_DIVERSITIES, TASKS
from headlab.data.task_prompts import render_task_prompt
from headlab.data.tasks import GenConfig, generate_example
from headlab.toy.corpus import pick_from_mix

# Needle realism of pretraining task documents: mostly natural wordings, some fixed templates and symbols.
_REALISM_MIX = (("real", 0.6), ("templated", 0.2), ("symbolic", 0.2))


def task_document(tokenizer: Any, rng: random.Random, max_tokens: int, seed: int = 0,
                  split: str = "train") -> str:
    """One task prompt followed by its gold answer and a newline, at most `max_tokens` prompt tokens.

    The length is drawn between 3/4 of `max_tokens` and `max_tokens`; a draw too short for the task's gold
    documents is redrawn.
    """
    for _ in range(20):
        config = GenConfig(task=rng.choice(TASKS), needle_realism=pick_from_mix(rng, _REALISM_MIX),
                           haystack_diversity=rng.choice(HAYSTACK_DIVERSITIES), n=1,
                           length=rng.randint(max_tokens * 3 // 4, max_tokens), seed=seed,
                           doc_sentences=(1, 4), split=split)
        try:
            example = generate_example(config, tokenizer, rng.randrange(10**9))
        except HeadlabError:
            continue
        return f"{render_task_prompt(example, tokenizer)} {example.answers[0]}\n"
    raise HeadlabError(f"toy pretraining: field 'seq_len' ({max_tokens}) is too short for task documents")
