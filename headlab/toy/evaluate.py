"""Quality of a toy checkpoint: held-out perplexity and needle-in-a-haystack accuracy by context length.

    headlab toy evaluate [--model DIR] [--lengths 192 256 512 1024] [--write]

`--write` stores the figures in the checkpoint's training.json under "quality".
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch

from headlab.core.io import atomic_write_json, read_json
from headlab.core.progress import progress_bar
from headlab.data.prompts import encode_prompt, render_prompt
from headlab.data.world import World
from headlab.data.world_niah import niah_records
from headlab.mech.generate import greedy_generate
from headlab.model.loading import load_model
from headlab.toy.corpus import document


@torch.no_grad()
def perplexity(model, tok, split: str = "train", n_docs: int = 64, seed: int = 12345) -> float:
    """Per-token perplexity on fresh documents (a random stream never used in training).

    `split="heldout"` also uses held-out names and wordings.
    """
    world = World(0, split)
    rng = random.Random(f"eval-ppl-{seed}-{split}")
    limit = model.config.max_position_embeddings
    nll, count = 0.0, 0
    for _ in range(n_docs):
        ids = tok(document(world, rng, rng.randint(0, 12)))["input_ids"][:limit]
        x = torch.tensor([ids])
        logits = model(input_ids=x).logits[0, :-1]
        nll += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
        count += len(ids) - 1
    return math.exp(nll / count)


def answer(model, tok, context: str, question: str, max_new_tokens: int = 40) -> str:
    """Greedy answer to the plain prompt, up to its first newline or EOS (generate.stop_ids's rule)."""
    prompt = encode_prompt(tok, render_prompt(tok, context, question))
    [ids] = greedy_generate(model, tok, [prompt], max_new_tokens, batch_size=1)
    return tok.decode(ids, skip_special_tokens=True).strip()


def niah_accuracy(model, tok, context_tokens: int, n: int = 40, seed: int = 777, split: str = "train",
                  diversity: str = "diverse") -> dict:
    """Share of probes answered with the needle sentence exactly, and with its short answer anywhere."""
    probes = niah_records(tok, n, context_tokens, seed, diversity=diversity, split=split)
    exact = short = 0
    for p in progress_bar(probes, desc=f"niah {context_tokens}", leave=False):
        got = answer(model, tok, p["context"], p["question"])
        exact += got == p["needle"]
        short += p["short_answer"] in got
    return {"context_tokens": context_tokens, "n": n, "exact_sentence": exact / n, "short_answer": short / n}


def task_accuracy(model, tok, length: int, n: int = 30, seed: int = 4242) -> dict[str, float]:
    """Mean task score per study task on held-out "real" examples (held-out names and wordings) of
    `length` prompt tokens: what the study's evaluation measures, here at a length of the caller's choice."""
    from headlab.data.example import TASKS
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.experiments.evaluate import EvalConfig, evaluate_examples

    out = {}
    for task in TASKS:
        examples = generate_examples(GenConfig(task, "real", "diverse", n=n, length=length, seed=seed), tok)
        _, summary = evaluate_examples(model, tok, examples, EvalConfig(allow_long_context=True))
        out[task] = round(summary["score"], 3)
    return out


def evaluate(model_dir: str | Path, lengths: list[int], n: int = 40) -> dict:
    from headlab.data.niah import check_lengths, length_limit
    from headlab.model.loading import inspect

    # Lengths are checked against the model's positions before any weight is read: a typo such as
    # 100000000 would otherwise build prompts until the machine's memory is gone.
    positions = inspect(model_dir).max_positions
    check_lengths(lengths, length_limit(positions), "toy evaluate", positions, "lengths")
    model, tok = load_model(model_dir)  # checked (whole safetensors, no pickle) before it loads
    quality = {"ppl_heldout_docs": round(perplexity(model, tok, "train"), 3),
               "ppl_heldout_names": round(perplexity(model, tok, "heldout"), 3),
               "niah": [niah_accuracy(model, tok, L, n) for L in lengths],
               "niah_heldout_names": [niah_accuracy(model, tok, L, n, split="heldout") for L in lengths[:1]],
               "tasks": {str(L): task_accuracy(model, tok, L, n) for L in lengths if L >= 256}}
    return quality


def evaluate_and_record(model_dir: str | Path, lengths: list[int], n: int = 40, write: bool = False) -> dict:
    """`evaluate`, seeded; with `write`, the figures go into the folder's training.json under "quality"."""
    torch.manual_seed(0)
    quality = evaluate(model_dir, lengths, n)
    if write:
        path = Path(model_dir) / "training.json"
        meta = read_json(path) if path.is_file() else {}
        meta["quality"] = quality
        atomic_write_json(path, meta)
    return quality

