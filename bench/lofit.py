"""Benchmark: generation time of a LoFiT-merged checkpoint against its base model (and the hooked model).

A small Llama with random weights; an adapter with offsets (and scales) on 3% of its heads is merged and
saved, and the saved folder is loaded back with plain transformers. Base, merged and hooked models then
generate the same tokens in interleaved rounds (so load on a shared machine hits all three alike), and the
median times and their ratios are printed. Target: merged / base = 1.00 +- 0.03; max |logit diff| merged
vs hooked < 1e-5 (float32).

    python bench/lofit.py [--prompt 256] [--new-tokens 64] [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from headlab.lofit.adapter import LofitAdapter, apply_adapters
from headlab.lofit.merge import max_logit_difference, merge_into_model, save_merged
from headlab.mech.heads import parse_head, random_heads
from headlab.model.seam import Seam

CONFIG = dict(vocab_size=4096, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
              num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096,
              eos_token_id=None, bos_token_id=None)


def _generate(model, ids: torch.Tensor, new_tokens: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", type=int, default=256, help="prompt tokens")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
    hooked = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()  # same weights, carries the hooks
    hooked.load_state_dict(base.state_dict())
    g = Seam.attach(hooked).geometry
    k = max(1, round(0.03 * g.total_heads))
    heads = [parse_head(h) for h in random_heads(g, k, seed=0)]
    adapter = LofitAdapter(heads, g, scale=True, offset=True, init_std=0.1)
    ids = torch.randint(0, CONFIG["vocab_size"], (1, args.prompt), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        save_merged(merge_into_model(hooked, [adapter]), None, f"{tmp}/merged")
        merged = AutoModelForCausalLM.from_pretrained(f"{tmp}/merged").eval()
    diff = max_logit_difference(hooked, merged, [adapter], ids)

    times: dict[str, list[float]] = {"base": [], "merged": [], "hooked": []}
    _generate(base, ids, 4), _generate(merged, ids, 4)  # warm-up
    with apply_adapters(hooked, adapter):
        _generate(hooked, ids, 4)
        for _ in range(args.rounds):
            for name, model in (("base", base), ("merged", merged), ("hooked", hooked)):
                times[name].append(_generate(model, ids, args.new_tokens))
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {"heads": k, "total_heads": g.total_heads, "max_abs_logit_diff": diff,
              "median_s": med, "merged_over_base": med["merged"] / med["base"],
              "hooked_over_base": med["hooked"] / med["base"]}
    print(f"adapter on {k}/{g.total_heads} heads; merged vs hooked max |logit diff| {diff:.2e}")
    for name, t in med.items():
        print(f"  {name:>6}: {t * 1000:8.1f} ms median over {args.rounds} rounds of {args.new_tokens} tokens")
    print(f"merged / base = {result['merged_over_base']:.3f} (target 1.00 +- 0.03); "
          f"hooked / base = {result['hooked_over_base']:.3f}")
    return result


if __name__ == "__main__":
    main()
