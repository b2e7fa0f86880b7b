"""`headlab knockout`, `headlab patch`, `headlab compare`: thin front-ends over knockout.py, patching.py and
compare.py. Every input is checked before weights load; errors are HeadlabError (one line, exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from headlab.distributed import is_main
from headlab.errors import HeadlabError
from headlab.placement import add_placement_args, placement_args
from headlab.toy import model_or_default


def _ranking(path: str, geometry) -> list[str]:
    from headlab.compare import SCORES_FILE
    from headlab.heads import load_scores, mean_scores, scored_ranking

    file = Path(path) / SCORES_FILE if Path(path).is_dir() else Path(path)
    return scored_ranking(mean_scores(load_scores(file, geometry)))


def _items(args: argparse.Namespace, info):
    """The evaluation items, checked against the model `info` describes (no weights loaded)."""
    from headlab.evaluate import check_lengths, items_from_probes, load_eval_items

    tokenizer, positions = info.tokenizer, info.max_positions
    if args.data:
        items = load_eval_items(args.data, tokenizer, positions)
    else:
        from headlab.data.world_niah import default_probes

        items = items_from_probes(default_probes(tokenizer, args.seed))
    if args.limit is not None:
        if args.limit < 1:
            raise HeadlabError(f"--limit must be >= 1, got {args.limit}")
        items = items[:args.limit]
    check_lengths(items, positions, args.max_new_tokens)
    return items


def _knockout(args: argparse.Namespace) -> None:
    from headlab.knockout import KnockoutConfig, run_knockout, write_knockout
    from headlab.loading import inspect, load_weights

    model_path = model_or_default(args.model)
    info = inspect(model_path, args.trust_remote_code)
    ranking = _ranking(args.heads, info.geometry)
    items = _items(args, info)
    config = KnockoutConfig(k=args.k, mode=args.mode, where=args.where, seeds=args.seeds, seed=args.seed,
                            curve=args.curve, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    config.check(info.geometry, len(ranking))
    model = load_weights(info, args.device, args.dtype, args.attn, **placement_args(args))
    result = run_knockout(model, info.tokenizer, items, ranking, config)
    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    write_knockout(result, args.out, config, {"model": model_path, "heads": args.heads,
                                              "data": args.data or "toy-niah", "dtype": args.dtype})
    print(f"baseline {result['baseline']:.3f}  top-{args.k} knocked out {result['top']:.3f}  "
          f"random {args.k} {result['random_mean']:.3f} ± {result['random_std']:.3f} ({args.seeds} seeds)")
    print(f"wrote {Path(args.out) / 'knockout.json'}, config.json, knockout_curve.png")


def _patch(args: argparse.Namespace) -> None:
    from headlab.loading import inspect, load_weights
    from headlab.patching import PatchConfig, run_patching, write_patching

    source_info, target_info = (inspect(m, args.trust_remote_code) for m in (args.source, args.target))
    tokenizer = target_info.tokenizer
    if source_info.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise HeadlabError(f"{args.source}: its tokenizer differs from the target's; patching needs a shared one")
    src_rank = _ranking(args.heads[0], source_info.geometry)
    tgt_rank = _ranking(args.heads[1], target_info.geometry)
    items = _items(args, target_info)
    config = PatchConfig(k=args.k, seeds=args.seeds, seed=args.seed, max_new_tokens=args.max_new_tokens,
                         batch_size=args.batch_size)
    if not 1 <= args.k <= min(len(src_rank), len(tgt_rank)):
        raise HeadlabError(f"--k must be in [1, {min(len(src_rank), len(tgt_rank))}], got {args.k}")
    source = load_weights(source_info, args.device, args.dtype, args.attn, **placement_args(args))
    target = load_weights(target_info, args.device, args.dtype, args.attn, **placement_args(args))
    result = run_patching(source, target, tokenizer, items, src_rank, tgt_rank, config)
    if not is_main():
        return
    write_patching(result, args.out, config, {"source": args.source, "target": args.target,
                                              "heads": list(args.heads), "data": args.data or "toy-niah"})
    print(f"target {result['target']:.3f}  source {result['source']:.3f}")
    for name, v in result["sets"].items():
        print(f"  patched {name:>12} ({v['size']:>3} heads)  {v['mean']:.3f} ± {v['std']:.3f}")
    print(f"wrote {Path(args.out) / 'patching.json'}, config.json, patching.png")


def _compare(args: argparse.Namespace) -> None:
    from headlab.compare import CompareConfig, compare_head_files, write_compare

    config = CompareConfig(threshold=args.threshold, top_k=args.top_k)
    result = compare_head_files(args.files, args.reference, args.scores, config)
    if args.out:
        write_compare(result, args.out)
    for row in result["pairwise"]:
        print(f"{row['a']:>20} vs {row['r']:<20} recall {row['recall']:.3f}  jaccard {row['jaccard']:.3f}  "
              f"cosine {row['cosine']:.3f}")
    for row in result.get("vs_reference", []):
        score = f"  score {row['score']:.3f}" if "score" in row else ""
        print(f"{row['label']:>20} vs reference  recall {row['recall']:.3f}  jaccard {row['jaccard']:.3f}  "
              f"cosine {row['cosine']:.3f}{score}")
    if "spearman" in result:
        sp = result["spearman"]
        text = "undefined (constant input)" if sp["rho"] is None else f"{sp['rho']:.3f} (p = {sp['p']:.3g})"
        print(f"Spearman(recall, score) over {sp['n']} models: {text}")
    if args.out:
        print(f"wrote {Path(args.out) / 'compare.json'}")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="task-example JSONL, probe JSONL or needle-in-a-haystack spec "
                                  "(default: toy needle-in-a-haystack probes)")
    p.add_argument("--k", type=int, default=10, help="top-K heads")
    p.add_argument("--seeds", type=int, default=5, help="random control sets (seed, seed+1, ...)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the random controls and toy probes")
    p.add_argument("--limit", type=int, help="use only the first N data items")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attn", default="sdpa", help="sdpa, eager or flash_attention_2")
    p.add_argument("--trust-remote-code", action="store_true")
    add_placement_args(p)


def add_mech_commands(subparsers) -> None:
    """Register `knockout`, `patch` and `compare` on the top-level `headlab` sub-parsers."""
    from headlab.interventions import MODES, WHERE

    k = subparsers.add_parser("knockout", help="score with the top-K heads knocked out vs random K heads",
                              description="Task score with the top-K heads of a score file knocked out, against "
                                          "K random heads outside the top set over several seeds, and a curve "
                                          "over K. Writes knockout.json, config.json, knockout_curve.png.")
    k.add_argument("--model", help="local folder or hub id (default: the shipped tiny model)")
    k.add_argument("--heads", required=True, help="Retrieval_Head-format scores (or a `headlab detect` folder)")
    k.add_argument("--mode", default="uniform", choices=MODES,
                   help="uniform: zero the query (uniform attention); zero: z=0; mean: z=its mean on the data")
    k.add_argument("--where", default="decode", choices=WHERE,
                   help="decode: positions that produce a generated token (the prompt's last one included); "
                        "all: every position")
    k.add_argument("--curve", type=int, nargs="+", help="K values of the curve (default 0, k/4, k/2, 3k/4, k)")
    k.add_argument("--out", default="runs/knockout", help="output folder")
    _add_run_options(k)
    k.set_defaults(func=_knockout)

    p = subparsers.add_parser("patch", help="cross-model activation patching in lockstep generation",
                              description="The target generates while the source runs in lockstep on the same "
                                          "tokens; the target's z at the patched heads is the source's. Head "
                                          "sets: intersection, complement (only the source's), source, random. "
                                          "Writes patching.json, config.json, patching.png.")
    p.add_argument("--source", required=True, help="source model folder or hub id")
    p.add_argument("--target", required=True, help="target model folder or hub id (same architecture)")
    p.add_argument("--heads", required=True, nargs=2, metavar=("SOURCE_SCORES", "TARGET_SCORES"),
                   help="head-score files of the source and of the target")
    p.add_argument("--out", default="runs/patch", help="output folder")
    _add_run_options(p)
    p.set_defaults(func=_patch, seeds=3)

    c = subparsers.add_parser("compare", help="recall, Jaccard, cosine between head sets; Spearman with scores",
                              description="Compare head-score files pairwise and against --reference; with "
                                          "--scores (one downstream score per file), the Spearman correlation "
                                          "of recall and score across models.")
    c.add_argument("files", nargs="+", help="head-score files (or `headlab detect` folders)")
    c.add_argument("--reference", help="reference head scores R (e.g. the real-data model); recall = |A∩R|/|R|")
    c.add_argument("--scores", type=float, nargs="+", help="downstream score of each file's model, in order")
    c.add_argument("--threshold", type=float, default=0.1, help="retrieval heads have mean score >= this")
    c.add_argument("--top-k", type=int, help="take the top K heads instead of a threshold")
    c.add_argument("--out", help="output folder for compare.json (and recall_vs_score.png)")
    c.set_defaults(func=_compare)
