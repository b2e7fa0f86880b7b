"""The `headlab` command: thin argparse front-ends over library functions.

Bad input raises HeadlabError; `main` prints its one line and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headlab.errors import HeadlabError
from headlab.quiet import quiet_libraries
from headlab.toy import model_or_default


def _detect(args: argparse.Namespace) -> None:
    from headlab.data.probes import check_context_length, load_probes
    from headlab.data.world_niah import default_probes
    from headlab.detect import DetectConfig, detect_retrieval_heads, write_detection
    from headlab.distributed import is_main
    from headlab.loading import inspect, load_weights
    from headlab.placement import placement_args

    model_path = model_or_default(args.model)
    # Check every input before loading weights: bad probes fail in seconds, not after loading an 8B model.
    from headlab.data.niah import length_limit

    info = inspect(model_path, args.trust_remote_code)
    tokenizer, positions = info.tokenizer, info.max_positions
    probes = load_probes(args.probes, tokenizer, length_limit(positions, args.allow_long_context), positions) \
        if args.probes else default_probes(tokenizer, args.seed)
    if not args.allow_long_context:
        check_context_length(probes, positions, args.max_new_tokens)
    model = load_weights(info, device=args.device, dtype=args.dtype, attn_implementation=args.attn,
                         **placement_args(args))
    config = DetectConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          keep_failed=args.keep_failed, threshold=args.threshold, top_k=args.top_k,
                          allow_long_context=args.allow_long_context)
    result = detect_retrieval_heads(model, tokenizer, probes, config)
    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    summary = write_detection(result, args.out, {"model": model_path, "probes": args.probes or "toy-niah",
                                                 "dtype": args.dtype, "attn": args.attn, "seed": args.seed})
    print(f"probes: {summary['probes_given']} given, {summary['probes_counted']} counted")
    _print_top(summary["mean_scores"], summary["retrieval_heads"], limit=args.show)
    print(f"wrote {Path(args.out) / 'retrieval_scores.json'}, summary.json, retrieval_heads.png")


def _print_top(means: dict[str, float], heads: list[str], limit: int) -> None:
    if not heads:
        print("no retrieval heads at this threshold")
        return
    print(f"retrieval heads: {len(heads)} (top {min(limit, len(heads))} shown)")
    for name in heads[:limit]:
        print(f"  {name:>7}  {means[name]:.3f}")


def _heads_show(args: argparse.Namespace) -> None:
    from headlab.heads import load_scores, mean_scores, select_heads
    from headlab.loading import inspect

    geometry = inspect(args.model).geometry if args.model else None
    means = mean_scores(load_scores(args.file, geometry))
    _print_top(means, select_heads(means, args.threshold, args.top_k), limit=args.show)


def _heads_import(args: argparse.Namespace) -> None:
    """Convert another tool's Retrieval_Head JSON into a headlab result folder."""
    from headlab.heads import load_scores, mean_scores, score_matrix, select_heads
    from headlab.io import atomic_write_json
    from headlab.loading import inspect
    from headlab.plots import head_heatmap

    geometry = inspect(args.model).geometry if args.model else None
    scores = load_scores(args.file, geometry)
    means = mean_scores(scores)
    out = Path(args.out)
    matrix = score_matrix(means, geometry)  # before any write: a bad file leaves nothing behind
    atomic_write_json(out / "retrieval_scores.json", scores)
    head_heatmap(matrix, out / "retrieval_heads.png")
    atomic_write_json(out / "summary.json", {
        "mean_scores": means, "retrieval_heads": select_heads(means, args.threshold, args.top_k),
        "probes_counted": max((len(v) for v in scores.values()), default=0),
        "config": {"imported_from": str(args.file), "threshold": args.threshold, "top_k": args.top_k},
    })
    print(f"imported {len(scores)} heads into {out}")


def _heads_compare(args: argparse.Namespace) -> None:
    from headlab.heads import cosine, load_scores, mean_scores, overlap, select_heads

    a, r = (mean_scores(load_scores(f)) for f in (args.a, args.reference))
    stats = overlap(select_heads(a, args.threshold, args.top_k), select_heads(r, args.threshold, args.top_k))
    print(f"recall {stats['recall']:.3f}  jaccard {stats['jaccard']:.3f}  "
          f"shared {stats['intersection']}  cosine {cosine(a, r):.3f}")


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=0.1, help="retrieval heads have mean score >= this")
    p.add_argument("--top-k", type=int, default=None, help="take the top K heads instead of a threshold")
    p.add_argument("--show", type=int, default=20, help="how many heads to print")


def build_parser() -> argparse.ArgumentParser:
    from headlab.inputs import OneLineParser, harden
    from headlab.placement import add_placement_args

    parser = OneLineParser(prog="headlab", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true",
                        help="show library logging, warnings and per-model loading bars (off by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("detect", help="retrieval-head detection (copy-paste score, Wu et al. 2024)",
                       description="Score every head by how often it copies the needle while the model "
                                   "retrieves it. With no --model/--probes: the shipped tiny model and toy "
                                   "needle-in-a-haystack probes.")
    d.add_argument("--model", help="local folder or hub id (default: the shipped tiny model)")
    d.add_argument("--probes", help="probe JSONL (text or token probes) or a needle-in-a-haystack spec "
                                    "(.json/.yaml); default: toy needle-in-a-haystack probes")
    d.add_argument("--out", default="runs/detect", help="output folder")
    d.add_argument("--max-new-tokens", type=int, default=50)
    d.add_argument("--batch-size", type=int, default=8, help="probes per batch (scores do not depend on it)")
    d.add_argument("--keep-failed", action="store_true", help="count probes whose generation failed too")
    d.add_argument("--device", default="cpu")
    d.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    d.add_argument("--attn", default="sdpa", help="attention for the model: sdpa, eager, flash_attention_2")
    d.add_argument("--allow-long-context", action="store_true",
                   help="allow prompts longer than the model's max_position_embeddings")
    d.add_argument("--trust-remote-code", action="store_true")
    d.add_argument("--seed", type=int, default=0, help="seed of the default toy probes")
    add_placement_args(d)
    _add_selection(d)
    d.set_defaults(func=_detect)

    h = sub.add_parser("heads", help="read, import and compare head-score files").add_subparsers(
        dest="heads_command", required=True)
    show = h.add_parser("show", help="print the top heads of a Retrieval_Head-format file")
    show.add_argument("file")
    show.add_argument("--model", help="check head indices against this model's geometry")
    _add_selection(show)
    show.set_defaults(func=_heads_show)
    imp = h.add_parser("import", help="turn a Retrieval_Head JSON from another tool into a headlab folder")
    imp.add_argument("file")
    imp.add_argument("--out", required=True)
    imp.add_argument("--model", help="check head indices against this model's geometry")
    _add_selection(imp)
    imp.set_defaults(func=_heads_import)
    cmp_ = h.add_parser("compare", help="recall, Jaccard and cosine of head set A against reference R")
    cmp_.add_argument("a")
    cmp_.add_argument("reference")
    _add_selection(cmp_)
    cmp_.set_defaults(func=_heads_compare)

    from headlab.cot.cli import add_cot_commands
    from headlab.data.cli import add_data_commands
    from headlab.lofit.cli import add_lofit_commands
    from headlab.mech_cli import add_mech_commands
    from headlab.study.cli import add_study_commands
    from headlab.toy.cli import add_toy_commands
    from headlab.train_cli import add_train_commands

    add_data_commands(sub)
    add_toy_commands(sub)
    add_lofit_commands(sub)
    add_mech_commands(sub)
    add_train_commands(sub)
    add_study_commands(sub)
    add_cot_commands(sub)
    _add_gguf_option(parser)
    harden(parser)  # shared checks on every command's options (headlab/inputs.py)
    return parser


# GGUF input: every command that takes --model also takes --gguf-file. The two are folded into one path
# (`DIR/F.gguf`) before the command runs; the loader (headlab.seam) reads a .gguf path through transformers.

def _add_gguf_option(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_gguf_option(sub)
        elif "--model" in action.option_strings and "--gguf-file" not in parser._option_string_actions:
            parser.add_argument("--gguf-file", help="a GGUF file inside the --model folder (or a path to one, "
                                                    "then --model may be left out); needs the `gguf` package")


def _fold_gguf(args: argparse.Namespace) -> None:
    gguf_file = getattr(args, "gguf_file", None)
    if not gguf_file:
        return
    if not gguf_file.endswith(".gguf"):
        raise HeadlabError(f"--gguf-file {gguf_file}: expected a file ending in .gguf")
    if args.model and not Path(args.model).is_dir():
        raise HeadlabError(f"--model {args.model}: with --gguf-file, --model is the folder holding the GGUF file")
    args.model = str(Path(args.model) / gguf_file) if args.model else gguf_file


# Commands whose --out folder is written whole: into a scratch sibling, then moved in (headlab.io.staged_folder).
# Not finetune, study (run folders that resume) nor lofit merge (already one rename).
WHOLE_OUTPUT = {"headlab.cli._detect", "headlab.cli._heads_import", "headlab.mech_cli._knockout",
                "headlab.mech_cli._patch", "headlab.mech_cli._compare", "headlab.train_cli._evaluate",
                "headlab.train_cli._niah", "headlab.lofit.cli._select", "headlab.lofit.cli._tune"}


def _run(args: argparse.Namespace) -> None:
    import contextlib
    import io

    from headlab.io import staged_folder

    if f"{args.func.__module__}.{args.func.__qualname__}" not in WHOLE_OUTPUT or not getattr(args, "out", None):
        args.func(args)
        return
    final = args.out
    printed = io.StringIO()
    with staged_folder(final) as stage:
        args.out = str(stage)
        try:
            with contextlib.redirect_stdout(printed):  # its messages name the final folder, not the scratch one
                args.func(args)
        finally:
            sys.stdout.write(printed.getvalue().replace(str(stage), str(final)))
            args.out = final


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        quiet_libraries(args.verbose)
        _fold_gguf(args)
        if getattr(args, "allow_pickle", False):
            from headlab.model_check import allow_pickle

            allow_pickle()
        _run(args)
    except HeadlabError as e:
        print(f"headlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # one line, not a traceback; 130 = 128 + SIGINT, as shells report it
        print("headlab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
