"""Benchmark: retrieval-head detection against plain generation and against the reference way.

For a small grouped-query Llama (random weights), or the checkpoint given with --model (a folder or a .gguf
file, e.g. SmolLM2-135M-Instruct from tools/real_assets.py), at several context lengths, on CPU, each
measurement in its own subprocess (so peak memory is its own):

- detect:    headlab's detect_retrieval_heads (SDPA prefill, KV-cache decode, top-1 from query x keys);
- mass:      headlab's attention-mass score (HeadKV), the same decoding with the last query's weights
             recomputed per layer through the seam's attention observer (one row, never the full matrix);
- generate:  plain `model.generate` of the same number of tokens with SDPA (the floor);
- reference: eager attention, decode with `output_attentions=True` and a Python loop over heads, batch 1
             (how the research code does it).

Prints time (fastest of --repeats interleaved runs) and peak-memory growth (peak RSS minus RSS after
loading; median of the runs) and the ratios measured in this run.
Targets: detect <= 1.25x generate in time and <= 1.1x in memory; reference / detect >= 3x at 4K.

    python bench/detect.py [--lengths 1024 2048 4096 8192] [--new-tokens 20]
    python bench/detect.py --model ~/.cache/headlab-assets/smollm2-135m-instruct --lengths 1024 2048

Prompts are random token ids of the model's vocabulary and every method generates exactly --new-tokens
tokens (no stop token), so the three do the same amount of decoding.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from headlab.model.seam import cache_kwargs, output_cache

CONFIG = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, max_position_embeddings=16384, eos_token_id=None, bos_token_id=None)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


MODEL: str | None = None  # --model, set in each child process


def _model(attn: str):
    if MODEL:
        from headlab.model.loading import load_model

        return load_model(MODEL, attn_implementation=attn)[0]
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**CONFIG, attn_implementation=attn)).eval()


def _vocab_size() -> int:
    if MODEL:
        from headlab.model.loading import load_model_config

        return load_model_config(MODEL).get_text_config().vocab_size
    return CONFIG["vocab_size"]


def _prompt(length: int) -> list[int]:
    g = torch.Generator().manual_seed(length)
    return torch.randint(0, _vocab_size(), (length,), generator=g).tolist()


class _Tok:  # token probes need only pad, eos and decode
    pad_token_id, eos_token_id = 0, None

    def decode(self, ids, skip_special_tokens=True):
        return ""


def _scored(length: int, new_tokens: int, method: str) -> None:
    from headlab.data.probes import Probe
    from headlab.experiments.atlas_cli import score_heads
    from headlab.experiments.attention_mass import MassConfig

    model = _model("sdpa")
    model.generation_config.eos_token_id = None  # decode exactly new_tokens, as generate and the reference do
    probe = Probe("bench", _prompt(length), length // 2, length // 2 + 64)
    config = MassConfig(max_new_tokens=new_tokens, keep_failed=True, progress=False, allow_long_context=True)
    time_and_report(lambda: score_heads(method, model, _Tok(), [probe], config))


def run_detect(length: int, new_tokens: int) -> None:
    _scored(length, new_tokens, "retrieval")


def run_mass(length: int, new_tokens: int) -> None:
    _scored(length, new_tokens, "attention-mass")


def run_generate(length: int, new_tokens: int) -> None:
    model = _model("sdpa")
    ids = torch.tensor([_prompt(length)])
    time_and_report(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, do_sample=False, pad_token_id=0))


@torch.no_grad()
def run_reference(length: int, new_tokens: int) -> None:
    model = _model("eager")
    prompt = _prompt(length)
    lo, hi = length // 2, length // 2 + 64
    text_config = model.config.get_text_config()
    n_layers, n_heads = text_config.num_hidden_layers, text_config.num_attention_heads

    def work():
        copies = [[0] * n_heads for _ in range(n_layers)]
        out = model(torch.tensor([prompt]), use_cache=True, output_attentions=True)
        for _ in range(new_tokens):
            token = int(out.logits[0, -1].argmax())
            for layer, attn in enumerate(out.attentions):
                for head in range(n_heads):
                    i = int(attn[0, head, -1].argmax())
                    copies[layer][head] += int(lo <= i < hi and prompt[i] == token)
            out = model(torch.tensor([[token]]), use_cache=True, **cache_kwargs(model, output_cache(out)),
                        output_attentions=True)
        return copies

    time_and_report(work)


def time_and_report(work) -> None:
    """Time `work` and report (seconds, peak RSS growth in MB) to the parent through the queue."""
    base = _rss_mb()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    RESULT.put((seconds, max(peak - base, 0.0)))


RESULT: mp.Queue  # set in the child process
RUNNERS = {"detect": run_detect, "mass": run_mass, "generate": run_generate, "reference": run_reference}


def _child(name: str, length: int, new_tokens: int, queue: mp.Queue, model: str | None) -> None:
    global RESULT, MODEL
    RESULT, MODEL = queue, model
    RUNNERS[name](length, new_tokens)


def measure(name: str, length: int, new_tokens: int, model: str | None = None) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, length, new_tokens, queue, model))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """Fastest time (the least disturbed run) and median memory growth."""
    return min(t for t, _ in runs), sorted(m for _, m in runs)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell, interleaved; fastest time and "
                                                                "median memory are reported")
    parser.add_argument("--skip-reference-above", type=int, default=8192,
                        help="skip the (slow, quadratic-memory) reference above this length")
    parser.add_argument("--model", help="a model folder or .gguf file (default: a random Llama of CONFIG's shape)")
    args = parser.parse_args()
    if args.model:
        from headlab.model.geometry import head_geometry
        from headlab.model.loading import load_model_config

        g = head_geometry(load_model_config(args.model))
        shape = f"{args.model}: {g.n_layers} layers x {g.n_heads} heads ({g.n_kv_heads} kv), head dim {g.head_dim}"
    else:
        shape = (f"Llama {CONFIG['num_hidden_layers']} layers x {CONFIG['num_attention_heads']} heads "
                 f"({CONFIG['num_key_value_heads']} kv), hidden {CONFIG['hidden_size']}, random weights")
    print(f"model: {shape}; {args.new_tokens} new tokens; CPU threads {torch.get_num_threads()}")
    header = (f"{'ctx':>6} {'detect s':>9} {'mass s':>8} {'gen s':>8} {'ref s':>8} | {'det/gen t':>9} "
              f"{'mass/gen t':>10} {'ref/det t':>9} | {'detect MB':>9} {'mass MB':>8} {'gen MB':>8} {'ref MB':>8} "
              f"{'det/gen m':>9}")
    print(header)
    for length in args.lengths:
        names = ["detect", "mass", "generate"] + (["reference"] if length <= args.skip_reference_above else [])
        runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for _ in range(args.repeats):  # interleaved, so a burst of load hits every method alike
            for name in names:
                runs[name].append(measure(name, length, args.new_tokens, args.model))
        (d_t, d_m), (g_t, g_m), (a_t, a_m) = best(runs["detect"]), best(runs["generate"]), best(runs["mass"])
        r_t, r_m = best(runs["reference"]) if "reference" in runs else (float("nan"), float("nan"))
        print(f"{length:>6} {d_t:>9.2f} {a_t:>8.2f} {g_t:>8.2f} {r_t:>8.2f} | {d_t / g_t:>9.2f} {a_t / g_t:>10.2f} "
              f"{r_t / d_t:>9.2f} | {d_m:>9.0f} {a_m:>8.0f} {g_m:>8.0f} {r_m:>8.0f} {d_m / max(g_m, 1e-9):>9.2f}")


if __name__ == "__main__":
    main()
