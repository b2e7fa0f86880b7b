"""Benchmark and real tier of the head atlas: every `heads score` method on one checkpoint (default SmolLM2-135M-
Instruct from tools/real_assets.py) with real text, timed against plain work on the same tokens, then the
method x method agreement.

- retrieval, attention-mass, duo-gates: needle-in-a-haystack probes in the Paul Graham essays (2 needles x
  3 depths at --length tokens);
- query-focused: SQuAD v1.1 dev questions as MDQA examples of about --length tokens (--qa synthetic: headlab's
  synthetic MDQA, for a model too short for SQuAD paragraphs);
- induction, previous-token, duplicate-token: 32 random [bos] + r + r sequences, r of 24 tokens.

"plain" is the same tokens without scoring: greedy generation of the same prompts and budget for the
decoding methods (headlab's greedy_generate), one forward per batch for the prefill methods, one forward per
training step for duo-gates. Times are wall seconds on this machine's CPU threads, one run each.

    python bench/atlas.py --out runs/atlas-smollm2            # prints the README's table
    python bench/atlas.py --model headlab/assets/tiny-llama --length 200 --niah toy --qa synthetic \
        --examples 16 --duo-steps 40 --sink 8 --recent 32 --out runs/atlas-tiny
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

NEEDLES = [
    {"needle": "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
     "question": "What is the best thing to do in San Francisco?", "answer": "eat a sandwich"},
    {"needle": "The secret ingredient in Aunt Mirela's plum cake is a spoonful of smoked paprika.",
     "question": "What is the secret ingredient in Aunt Mirela's plum cake?", "answer": "smoked paprika"},
]
WHAT = {
    "retrieval": ("top-1 attended key is the needle token being copied", "NIAH probes"),
    "attention-mass": ("attention weight on the needle while decoding", "NIAH probes"),
    "query-focused": ("question-to-gold-document attention minus a null question's", "QA with gold documents"),
    "duo-gates": ("learned full-vs-streaming gate per kv head (distillation + L1)", "NIAH probes, training"),
    "induction": ("attention to the token after an earlier copy", "random repeated tokens"),
    "previous-token": ("attention to the previous token", "random repeated tokens"),
    "duplicate-token": ("attention to earlier copies of the token (RazorAttention's echo)", "random repeated tokens"),
}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _forward_batches(model, rows: list[list[int]], batch_size: int) -> None:
    from headlab.mech.generate import left_pad

    with torch.no_grad():
        for lo in range(0, len(rows), batch_size):
            ids, mask = left_pad(rows[lo:lo + batch_size], 0)
            model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                  use_cache=False, logits_to_keep=1)


def run(args) -> dict:
    import real_assets

    from headlab.data.niah import NiahSpec, niah_probes
    from headlab.experiments.attention_mass import MassConfig, attention_mass_heads
    from headlab.experiments.detect import DetectConfig, detect_retrieval_heads
    from headlab.experiments.patterns import METHODS, PatternConfig, pattern_scores, repeated_tokens_for
    from headlab.mech.generate import greedy_generate
    from headlab.mech.heads import mean_scores
    from headlab.model.loading import load_model

    model, tokenizer = load_model(args.model or real_assets.smollm2_dir())
    if args.niah == "essays":
        essays = sorted(real_assets.essays_dir().glob("*.txt"))
        haystack = "\n\n".join(p.read_text(encoding="utf-8") for p in essays)
        probes = niah_probes(NiahSpec(haystack, NEEDLES, [args.length], [0.2, 0.5, 0.8]), tokenizer)
    else:  # the shipped model reads its own toy world, not English essays
        from headlab.data.world_niah import default_probes

        probes = default_probes(tokenizer)
    rows: dict[str, dict] = {}

    def record(method, result_mean, seconds, plain, n):
        top = sorted(result_mean, key=lambda h: (-result_mean[h], h))[:3]
        rows[method] = {"seconds": seconds, "plain_seconds": plain, "ratio": seconds / plain, "n": n,
                        "top": [[h, result_mean[h]] for h in top], "mean_scores": result_mean}
        print(f"{method}: {seconds:.1f} s ({seconds / plain:.2f}x plain {plain:.1f} s), top {top}", flush=True)

    want = set(args.methods or WHAT)
    if want & {"retrieval", "attention-mass"}:
        _, plain = _timed(lambda: greedy_generate(model, tokenizer, [p.input_ids for p in probes], 32, 6))
    if "retrieval" in want:
        detect = DetectConfig(max_new_tokens=32, batch_size=6, progress=False)
        result, seconds = _timed(lambda: detect_retrieval_heads(model, tokenizer, probes, detect))
        record("retrieval", mean_scores(result.retrieval_scores()), seconds, plain, len(probes))
    if "attention-mass" in want:
        mass = MassConfig(max_new_tokens=32, batch_size=6, progress=False)
        result, seconds = _timed(lambda: attention_mass_heads(model, tokenizer, probes, mass))
        record("attention-mass", mean_scores(result.retrieval_scores()), seconds, plain, len(probes))
    if "query-focused" in want:
        _query_focused(args, model, tokenizer, record)
    if "duo-gates" in want:
        _duo(args, model, probes, record, rows)
    for method in [m for m in METHODS if m in want]:
        config = PatternConfig(method, n_sequences=32, length=24, batch_size=8)
        tokens = repeated_tokens_for(model, config, tokenizer)
        _, plain = _timed(lambda tokens=tokens: _forward_batches(model, tokens.tolist(), 8))
        result, seconds = _timed(lambda config=config, tokens=tokens: pattern_scores(model, tokens, config))
        record(method, result.mean, seconds, plain, 32)
    return rows


def _query_focused(args, model, tokenizer, record) -> None:
    import real_assets

    from headlab.data.prompts import pad_id_of
    from headlab.data.squad import SquadConfig, convert_squad
    from headlab.experiments.query_focused import QueryFocusedConfig, query_focused_scores, query_inputs

    if args.qa == "squad":
        examples, _ = convert_squad(real_assets.squad_dev_path(), SquadConfig(limit=args.examples,
                                                                              max_tokens=args.length), tokenizer)
    else:  # a model whose context cannot hold SQuAD paragraphs (the shipped one: 256 positions)
        from headlab.data.tasks import GenConfig, generate_examples

        examples = generate_examples(GenConfig("mdqa", n=args.examples, length=args.length), tokenizer)
    items = query_inputs(examples, tokenizer)
    qr = QueryFocusedConfig(batch_size=2)
    _, plain = _timed(lambda: _forward_batches(model, [r for i in items for r in (i.query_ids, i.null_ids)], 4))
    result, seconds = _timed(lambda: query_focused_scores(model, items, qr, pad_id_of(tokenizer)))
    record("query-focused", result.mean, seconds, plain, len(items))


def _duo(args, model, probes, record, rows) -> None:
    from headlab.experiments.duo_gates import DuoConfig, train_gates, training_input

    duo = DuoConfig(steps=args.duo_steps, sink=args.sink, recent=args.recent, save_every=0)
    inputs = [training_input(p)[0] for p in probes]
    _, plain = _timed(lambda: _forward_batches(model, [inputs[i % len(inputs)] for i in range(duo.steps)], 1))
    result, seconds = _timed(lambda: train_gates(model, probes, duo))
    record("duo-gates", result.gates, seconds, plain, len(probes))
    rows["duo-gates"]["unit"] = "kv head"


def table(rows: dict) -> str:
    lines = ["| method | what it measures | data | CPU s (n) | x plain | top heads |", "|---|---|---|---:|---:|---|"]
    for method, row in rows.items():
        what, data = WHAT[method]
        unit = " (kv)" if row.get("unit") == "kv head" else ""
        top = ", ".join(f"{h}{unit} {s:.3f}" for h, s in row["top"])
        lines.append(f"| {method} | {what} | {data} | {row['seconds']:.1f} ({row['n']}) | {row['ratio']:.1f} | "
                     f"{top} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--length", type=int, default=1000, help="prompt tokens of probes and examples")
    parser.add_argument("--examples", type=int, default=6, help="SQuAD examples for query-focused")
    parser.add_argument("--niah", choices=("essays", "toy"), default="essays",
                        help="probes: the Paul Graham essays haystack, or the shipped model's toy world")
    parser.add_argument("--qa", choices=("squad", "synthetic"), default="squad",
                        help="query-focused examples: SQuAD dev questions, or headlab's synthetic MDQA")
    parser.add_argument("--duo-steps", type=int, default=20)
    parser.add_argument("--sink", type=int, default=64, help="duo-gates: sink tokens of streaming attention")
    parser.add_argument("--recent", type=int, default=256, help="duo-gates: recent window of streaming attention")
    parser.add_argument("--methods", nargs="+", choices=list(WHAT), default=None,
                        help="run only these (default: all; the agreement matrices need all of them)")
    parser.add_argument("--k", type=int, default=10, help="top-K of the agreement matrix")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import real_assets
    from transformers import AutoConfig

    from headlab.core.io import atomic_write_json
    from headlab.experiments.agreement import agreement, plot_agreement
    from headlab.mech.kv_heads import kv_head_scores
    from headlab.model.geometry import head_geometry

    args.model = args.model or str(real_assets.smollm2_dir())
    geometry = head_geometry(AutoConfig.from_pretrained(args.model))
    rows = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "atlas.json", rows)
    print(table(rows))
    if set(rows) != set(WHAT):
        return
    # Per query head, duo's gate is its kv head's; per kv head, the other methods take the max over the group.
    groups = geometry.n_heads // geometry.n_kv_heads
    gates = rows["duo-gates"]["mean_scores"]
    per_query = {m: r["mean_scores"] for m, r in rows.items() if m != "duo-gates"}
    per_query["duo-gates"] = {f"{layer}-{h}": gates[f"{layer}-{h // groups}"]
                              for layer in range(geometry.n_layers) for h in range(geometry.n_heads)}
    per_kv = {m: (r["mean_scores"] if m == "duo-gates" else kv_head_scores(r["mean_scores"], geometry))
              for m, r in rows.items()}
    for unit, scores in (("query head", per_query), ("kv head", per_kv)):
        name = "agreement_" + unit.replace(" ", "_") + "s"
        result = agreement(scores, args.k)
        atomic_write_json(out / f"{name}.json", result)
        plot_agreement(result, out / f"{name}.png", f"{Path(args.model).name}, per {unit}")
        print(f"\n{unit}: Spearman rho / top-{args.k} overlap")
        for i, m in enumerate(result["methods"]):
            print(f"{m:>16} " + " ".join(f"{r:5.2f}/{o:4.2f}" for r, o in
                                         zip(result["spearman"][i], result["top_k_overlap"][i], strict=True)))


if __name__ == "__main__":
    main()
