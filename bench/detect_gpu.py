"""Benchmark on one GPU: retrieval-head detection on a Llama-3-8B-shaped model at long context.

A model of Llama-3.1-8B's shape (32 layers x 32 heads, 8 KV heads, hidden 4096, bf16, random weights: the
shape sets the cost, the weights do not), one probe per context length, each method generating exactly
--new-tokens tokens:

- generate:  plain `model.generate` with SDPA (the floor);
- detect:    headlab's detect_retrieval_heads (SDPA prefill, KV-cache decode, top-1 from query x keys);
- reference: eager attention with `output_attentions=True` (how the research code does it), which keeps
             every layer's full [heads, L, L] attention matrix; run up to --reference-up-to tokens.

Prints time (CUDA-synchronised wall clock, best of --repeats) and peak GPU memory above the weights
(torch.cuda.max_memory_allocated), and the ratios measured in this run. Targets: detect <= 1.25x generate in
time and <= 1.1x in memory. Needs a CUDA GPU with about 40 GB free at 64K tokens.

    python bench/detect_gpu.py [--lengths 4096 16384 65536] [--new-tokens 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from headlab.data.probes import Probe
from headlab.experiments.detect import DetectConfig, detect_retrieval_heads
from headlab.model.seam import cache_kwargs, output_cache

LLAMA_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                eos_token_id=None, bos_token_id=None, pad_token_id=0)


class _Tok:  # token probes need only pad, eos and decode
    pad_token_id, eos_token_id = 0, None

    def decode(self, ids, skip_special_tokens=True):
        return ""


def _prompt(length: int) -> list[int]:
    g = torch.Generator().manual_seed(length)
    return torch.randint(0, LLAMA_8B["vocab_size"], (length,), generator=g).tolist()


def _generate(model, prompt: list[int], new_tokens: int) -> None:
    ids = torch.tensor([prompt], device="cuda")
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, pad_token_id=0)


def _detect(model, prompt: list[int], new_tokens: int) -> None:
    probe = Probe("bench", prompt, len(prompt) // 2, len(prompt) // 2 + 64)
    config = DetectConfig(max_new_tokens=new_tokens, keep_failed=True, progress=False, allow_long_context=True)
    detect_retrieval_heads(model, _Tok(), [probe], config)


@torch.no_grad()
def _reference(model, prompt: list[int], new_tokens: int) -> None:
    lo, hi = len(prompt) // 2, len(prompt) // 2 + 64
    copies = torch.zeros(LLAMA_8B["num_hidden_layers"], LLAMA_8B["num_attention_heads"], dtype=torch.long)
    needle = torch.tensor(prompt[lo:hi])
    out = model(torch.tensor([prompt], device="cuda"), use_cache=True, output_attentions=True)
    for _ in range(new_tokens):
        token = int(out.logits[0, -1].argmax())
        for layer, attn in enumerate(out.attentions):
            top = attn[0, :, -1].argmax(-1).cpu()
            inside = (top >= lo) & (top < hi)
            copies[layer] += (inside & (needle[(top - lo).clamp(0, hi - lo - 1)] == token)).long()
        out = model(torch.tensor([[token]], device="cuda"), use_cache=True, **cache_kwargs(model, output_cache(out)),
                    output_attentions=True)


def measure(model, method, prompt: list[int], new_tokens: int, repeats: int) -> tuple[float, float] | str:
    """(best seconds, peak GB above the weights), or 'OOM'."""
    base = torch.cuda.memory_allocated()
    times, peaks = [], []
    for _ in range(repeats):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            method(model, prompt, new_tokens)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return "OOM"
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peaks.append((torch.cuda.max_memory_allocated() - base) / 2**30)
    return min(times), max(peaks)


def _cell(result: tuple[float, float] | str | None, i: int) -> str:
    if result is None:
        return f"{'-':>8}"
    return f"{result:>8}" if isinstance(result, str) else f"{result[i]:>8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference-up-to", type=int, default=16384)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's table for one detect call")
    args = parser.parse_args()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_8B)).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None  # decode exactly new_tokens in every method
    weights = torch.cuda.memory_allocated() / 2**30
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; Llama-3-8B shape, bf16, random weights "
          f"({weights:.1f} GB); {args.new_tokens} new tokens; best of {args.repeats}")
    print(f"{'ctx':>6} | {'gen s':>8} {'detect s':>8} {'ref s':>8} | {'gen GB':>8} {'det GB':>8} {'ref GB':>8} | "
          f"{'det/gen t':>9} {'det/gen m':>9} {'ref/det t':>9}")
    results = {}
    model.set_attn_implementation("sdpa")
    for length in args.lengths:
        prompt = _prompt(length)
        results[length] = [measure(model, _generate, prompt, args.new_tokens, args.repeats),
                           measure(model, _detect, prompt, args.new_tokens, args.repeats)]
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            _detect(model, _prompt(args.lengths[0]), args.new_tokens)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    # The reference last: switching a live model's attention implementation back and forth is not what is measured.
    model.set_attn_implementation("eager")
    for length in args.lengths:
        ref = None
        if length <= args.reference_up_to:
            ref = measure(model, _reference, _prompt(length), args.new_tokens, 1)
        gen, det = results[length]
        ratios = ""
        if isinstance(gen, tuple) and isinstance(det, tuple):
            ratios = f"{det[0] / gen[0]:>9.2f} {det[1] / max(gen[1], 1e-9):>9.2f}"
            ratios += f" {ref[0] / det[0]:>9.2f}" if isinstance(ref, tuple) else f" {'':>9}"
        print(f"{length:>6} | {_cell(gen, 0)} {_cell(det, 0)} {_cell(ref, 0)} | {_cell(gen, 1)} {_cell(det, 1)} "
              f"{_cell(ref, 1)} | {ratios}", flush=True)

if __name__ == "__main__":
    main()
