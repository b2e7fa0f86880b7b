"""Quality of a toy checkpoint: held-out perplexity and needle-in-a-haystack accuracy by context length.

    python -m headlab.toy.evaluate [--model DIR] [--lengths 192 256 512 1024] [--write]

`--write` stores the figures in the checkpoint's training.json under "quality".
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from headlab.data.prompts import encode_prompt, render_prompt
from headlab.io import atomic_write_json, read_json
from headlab.toy import default_model_dir
from headlab.toy.corpus import document
from headlab.toy.probes import niah_probes
from headlab.toy.world import World


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


@torch.no_grad()
def answer(model, tok, context: str, question: str, max_new_tokens: int = 40) -> str:
    """Greedy answer to the plain prompt, cut at the first newline."""
    ids = torch.tensor([encode_prompt(tok, render_prompt(tok, context, question))])
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=[tok.eos_token_id, *newline], pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0].strip()


def niah_accuracy(model, tok, context_tokens: int, n: int = 40, seed: int = 777, split: str = "train",
                  diversity: str = "diverse") -> dict:
    """Share of probes answered with the needle sentence exactly, and with its short answer anywhere."""
    probes = niah_probes(tok, n, context_tokens, seed, diversity=diversity, split=split)
    exact = short = 0
    for p in tqdm(probes, desc=f"niah {context_tokens}", leave=False):
        got = answer(model, tok, p["context"], p["question"])
        exact += got == p["needle"]
        short += p["short_answer"] in got
    return {"context_tokens": context_tokens, "n": n, "exact_sentence": exact / n, "short_answer": short / n}


def task_accuracy(model, tok, length: int, n: int = 30, seed: int = 4242) -> dict[str, float]:
    """Mean task score per study task on held-out "real" examples (held-out names and wordings) of
    `length` prompt tokens: what the study's evaluation measures, here at a length of the caller's choice."""
    from headlab.data.example import TASKS
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.evaluate import EvalConfig, evaluate_examples

    out = {}
    for task in TASKS:
        examples = generate_examples(GenConfig(task, "real", "diverse", n=n, length=length, seed=seed), tok)
        _, summary = evaluate_examples(model, tok, examples, EvalConfig(allow_long_context=True))
        out[task] = round(summary["score"], 3)
    return out


def evaluate(model_dir: str | Path, lengths: list[int], n: int = 40) -> dict:
    from headlab.data.niah import check_lengths, length_limit
    from headlab.model_check import check_model_source
    from headlab.seam import load_model_config, max_positions

    check_model_source(str(model_dir), weights=True)
    # Lengths are checked against the model's positions before any weight is read: a typo such as
    # 100000000 would otherwise build prompts until the machine's memory is gone.
    positions = max_positions(load_model_config(model_dir))
    check_lengths(lengths, length_limit(positions), "toy evaluate", positions, "lengths")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    quality = {"ppl_heldout_docs": round(perplexity(model, tok, "train"), 3),
               "ppl_heldout_names": round(perplexity(model, tok, "heldout"), 3),
               "niah": [niah_accuracy(model, tok, L, n) for L in lengths],
               "niah_heldout_names": [niah_accuracy(model, tok, L, n, split="heldout") for L in lengths[:1]],
               "tasks": {str(L): task_accuracy(model, tok, L, n) for L in lengths if L >= 256}}
    return quality


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m headlab.toy.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(default_model_dir()), help="checkpoint folder")
    p.add_argument("--lengths", type=int, nargs="+", default=[192, 256, 512, 1024], help="prompt tokens")
    p.add_argument("--n", type=int, default=40, help="probes per length")
    p.add_argument("--write", action="store_true", help="add the figures to the folder's training.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    quality = evaluate(args.model, args.lengths, args.n)
    print(quality)
    if args.write:
        path = Path(args.model) / "training.json"
        meta = read_json(path) if path.is_file() else {}
        meta["quality"] = quality
        atomic_write_json(path, meta)


if __name__ == "__main__":
    main()
