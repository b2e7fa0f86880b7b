"""Measurement: LoFiT on 3% of heads vs random heads vs LoRA vs the base model, on a toy task.

Generates train and test task examples (different seeds) that fit the model's context, then runs with one
training budget (same data, epochs, batch size):

- base:   the model as shipped;
- lofit:  step 1 (scales, L1) selects K heads (default 3%), step 2 trains offsets on them;
- random: offsets on K random heads outside the selected ones (same K, several seeds);
- lora:   LoRA (PEFT) on q/v of every layer;
- transfer (with --transfer-task): offsets on the K heads step 1 selects for another task.

Prints a table (test score, teacher-forced answer NLL, trainable parameters) and writes it with the config to --out.

    python bench/lofit_toy.py [--model DIR] [--task mdqa] [--n-train 240] [--n-test 100] [--out runs/lofit-toy]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from headlab.core.io import atomic_write_json
from headlab.data.example import TASKS, TaskExample
from headlab.data.prompts import pad_id_of, render_prompt
from headlab.data.task_prompts import render_task_prompt
from headlab.data.tasks import GenConfig, generate_examples
from headlab.data.world_niah import niah_records
from headlab.lofit.adapter import apply_adapters
from headlab.lofit.baselines import n_trainable, train_lora
from headlab.lofit.datasets import Completion
from headlab.lofit.evaluate import evaluate_completions
from headlab.lofit.select import SelectConfig, select_heads
from headlab.lofit.train import TrainConfig, collate, encode_pair, supervised_loss
from headlab.lofit.tune import tune_offsets
from headlab.mech.heads import random_heads
from headlab.model.loading import load_model
from headlab.model.seam import Seam

FACT_SHORT = "fact-short"  # toy fact QA with a short-answer target (fact_short_records)


def records(examples: list[TaskExample], tokenizer) -> list[Completion]:
    return [Completion(render_task_prompt(e, tokenizer), e.answers, e.task, e.gold_doc_ids, e.id) for e in examples]


@torch.no_grad()
def answer_nll(model, tok, test: list[Completion], batch_size: int = 8) -> float:
    """Mean answer-token negative log-likelihood (teacher-forced): a finer signal than greedy accuracy."""
    total, count = 0.0, 0
    for i in range(0, len(test), batch_size):
        chunk = test[i: i + batch_size]
        batch = collate([encode_pair(tok, r.prompt, r.completion) for r in chunk], pad_id_of(tok), "cpu")
        n = int(batch["target"][:, 1:].sum())
        total += float(supervised_loss(model, batch)) * n
        count += n
    return total / count


def fact_short_records(tok, n: int, length: int, seed: int, realism: str, diversity: str) -> list[Completion]:
    """Toy fact questions answered with the short answer alone, scored by exact match.

    The shipped model was pretrained to answer a plain fact question with the whole fact sentence, so its
    weakness here is the answer's form, not finding the fact: the kind of shift LoFiT's offsets are for.
    """
    probes = niah_records(tok, n, length, seed, diversity=diversity, realism=realism)
    return [Completion(render_prompt(tok, p["context"], p["question"]), [p["short_answer"]], "exact", id=str(i))
            for i, p in enumerate(probes)]


def task_records(task: str, gen: dict, n: int, seed: int, tok) -> list[Completion]:
    if task == FACT_SHORT:
        return fact_short_records(tok, n, gen["length"], seed, gen["needle_realism"], gen["haystack_diversity"])
    return records(generate_examples(GenConfig(**gen, task=task, n=n, seed=seed), tok), tok)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the shipped tiny model")
    p.add_argument("--task", default="mdqa", choices=[*TASKS, FACT_SHORT])
    p.add_argument("--realism", default="templated")
    p.add_argument("--diversity", default="diverse")
    p.add_argument("--length", type=int, default=200, help="prompt tokens")
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-2, help="LoFiT / random-head learning rate")
    p.add_argument("--lora-lr", type=float, default=2e-3)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--l1", type=float, default=1e-3)
    p.add_argument("--fraction", type=float, default=0.03)
    p.add_argument("--random-seeds", type=int, default=3)
    p.add_argument("--transfer-task", default=None, choices=[*TASKS, FACT_SHORT],
                   help="also tune on heads selected for this task")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/lofit-toy")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model is None:
        from headlab.model.loading import default_model_dir
        args.model = str(default_model_dir())

    model, tok = load_model(args.model)
    gen = dict(needle_realism=args.realism, haystack_diversity=args.diversity, length=args.length)
    train = task_records(args.task, gen, args.n_train, 1, tok)
    test = task_records(args.task, gen, args.n_test, 2, tok)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=0)
    rows: dict[str, dict] = {}
    t0 = time.time()

    def score(name: str, n_params: int, adapters=(), m=None) -> None:
        with apply_adapters(model, *adapters):
            res = evaluate_completions(m or model, tok, test, max_new_tokens=16)
            nll = answer_nll(m or model, tok, test)
        rows[name] = {"score": res["score"], "answer_nll": nll, "trainable_params": n_params,
                      "examples": res["examples"][:3]}
        print(f"{name:>14}: score {res['score']:.3f}  answer NLL {nll:.3f}  ({n_params:,} trainable)  "
              f"[{time.time() - t0:.0f}s]", flush=True)

    score("base", 0)
    sel = select_heads(model, tok, train, SelectConfig(l1=args.l1, fraction=args.fraction, train=cfg))
    print(sel.message(), sel.heads)
    lofit, _ = tune_offsets(model, tok, train, sel.heads, cfg)
    score("lofit", lofit.n_params(), [lofit])
    g = Seam.attach(model).geometry
    random_scores = []
    for seed in range(args.random_seeds):
        heads = random_heads(g, len(sel.heads), seed=seed, exclude=sel.heads)
        adapter, _ = tune_offsets(model, tok, train, heads, cfg)
        score(f"random-{seed}", adapter.n_params(), [adapter])
        random_scores.append(rows[f"random-{seed}"]["score"])
    if args.transfer_task:
        other = task_records(args.transfer_task, gen, args.n_train, 3, tok)
        k = SelectConfig(top_k=len(sel.heads), l1=args.l1, train=cfg)
        moved = select_heads(model, tok, other, k).heads
        print(f"heads selected for {args.transfer_task}: {moved}")
        adapter, _ = tune_offsets(model, tok, train, moved, cfg)
        score(f"transfer-{args.transfer_task}", adapter.n_params(), [adapter])
    peft_model, _ = train_lora(model, tok, train, TrainConfig(epochs=args.epochs, lr=args.lora_lr,
                                                              batch_size=args.batch_size), rank=args.lora_rank)
    score("lora", n_trainable(p for p in peft_model.parameters() if p.requires_grad), m=peft_model)
    summary = {"heads": sel.heads, "k": len(sel.heads), "total_heads": g.total_heads, "rows": rows,
               "random_mean": statistics.mean(random_scores) if random_scores else None,
               "config": vars(args), "seconds": round(time.time() - t0)}
    atomic_write_json(Path(args.out) / "lofit_toy.json", summary)
    return summary


if __name__ == "__main__":
    main()
