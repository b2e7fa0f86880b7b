"""Benchmark: cost of knockout, patching and a z offset against the bare model, on CPU at 2K tokens.

A small grouped-query Llama (random weights). For each condition: one 2K-token forward, and generation
(2K-token prefill + `--new-tokens` greedy steps with a KV cache, through headlab's generation loop). The
condition runs right after a bare run, `--repeats` times, and the median of the pair ratios is reported
(load on a shared machine drifts slowly, so a pair sees nearly the same load).

Targets: knockout and offsets <= 1.05x. Cross-input patching runs a second (source) forward per step by
design, so its floor is 2x; its ratio is printed for reference.

    python bench/hooks.py [--tokens 2048] [--new-tokens 16] [--repeats 5] [--out bench/results/hooks.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from headlab.mech.generate import greedy_decode
from headlab.mech.interventions import head_means, knockout, patch_from_input
from headlab.model.seam import Seam

CONFIG = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, max_position_embeddings=8192, eos_token_id=None, bos_token_id=None)
HEADS = ["0-1", "0-5", "1-2", "1-7", "2-0", "2-3", "2-6", "3-1", "3-4", "3-5"]  # 10 heads on every layer


def _offset(model):
    """A LoFiT-style offset (z <- z + v at the 10 heads) as a plain z hook: the seam's cost for offsets."""
    seam = Seam.attach(model)
    stack = contextlib.ExitStack()
    by_layer: dict[int, list[int]] = {}
    for name in HEADS:
        layer, h = map(int, name.split("-"))
        by_layer.setdefault(layer, []).append(h)
    for layer, hs in by_layer.items():
        v = torch.zeros(seam.geometry.n_heads, seam.geometry.head_dim)
        v[hs] = 0.01
        stack.enter_context(seam.z_hook(layer, lambda z, v=v: z + v))
    return stack


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, attn_implementation="sdpa")).eval()
    Seam.attach(model)
    ids = torch.randint(0, CONFIG["vocab_size"], (1, args.tokens))
    other = torch.randint(0, CONFIG["vocab_size"], (1, args.tokens))
    mask = torch.ones_like(ids)
    means = head_means(model, [(ids[:, :256], None)])
    conditions = {
        "bare": lambda: contextlib.nullcontext(),
        "knockout uniform decode": lambda: knockout(model, HEADS, "uniform", "decode"),
        "knockout uniform all": lambda: knockout(model, HEADS, "uniform", "all"),
        "knockout zero all": lambda: knockout(model, HEADS, "zero", "all"),
        "knockout mean all": lambda: knockout(model, HEADS, "mean", "all", means),
        "z offset (seam hook)": lambda: _offset(model),
        "patch cross-input": lambda: patch_from_input(model, HEADS, other, mask),
    }

    @torch.no_grad()
    def forward():
        model(input_ids=ids, attention_mask=mask, logits_to_keep=1)

    def generate():
        greedy_decode(model, ids, mask, [set()], args.new_tokens)

    forward(), generate()  # warm-up
    kinds = {"forward": forward, "generate": generate}

    def timed(name: str, fn) -> float:
        with conditions[name]():
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

    # Paired design: each condition is timed right after a bare run and the ratio of the pair is kept; the
    # median over repeats is reported. On a shared machine the load drifts over seconds, so the pair sees
    # nearly the same load while separate minima or means would not.
    ratios = {c: {k: [] for k in kinds} for c in conditions if c != "bare"}
    seconds = {c: {k: [] for k in kinds} for c in conditions}
    for _ in range(args.repeats):
        for name in ratios:
            for kind, fn in kinds.items():
                t_bare, t_cond = timed("bare", fn), timed(name, fn)
                seconds["bare"][kind].append(t_bare)
                seconds[name][kind].append(t_cond)
                ratios[name][kind].append(t_cond / t_bare)
    med = {c: {k: statistics.median(v) for k, v in ks.items()} for c, ks in seconds.items()}
    ratio = {c: {k: statistics.median(v) for k, v in ks.items()} for c, ks in ratios.items()}
    result = {"tokens": args.tokens, "new_tokens": args.new_tokens, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "heads": HEADS, "seconds_median": med, "ratio_median": ratio}
    print(f"{args.tokens} tokens, {args.new_tokens} new, {args.repeats} paired repeats, "
          f"{torch.get_num_threads()} threads; ratio = median of (condition / bare run just before)")
    print(f"{'condition':<26}{'forward s':>10}{'ratio':>8}{'generate s':>12}{'ratio':>8}")
    print(f"{'bare':<26}{med['bare']['forward']:>10.3f}{1:>8.3f}{med['bare']['generate']:>12.3f}{1:>8.3f}")
    for c, r in ratio.items():
        print(f"{c:<26}{med[c]['forward']:>10.3f}{r['forward']:>8.3f}{med[c]['generate']:>12.3f}"
              f"{r['generate']:>8.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
