"""`headlab toy ...` commands: pretrain and evaluate the shipped tiny model."""

from __future__ import annotations

import argparse


def _pretrain(args: argparse.Namespace) -> None:
    from headlab.toy.pretrain import run_from_args

    summary = run_from_args(args)
    print(f"trained {summary['n_params']:,} parameters on {summary['train_tokens']:,} tokens in "
          f"{summary['train_seconds']}s; final loss {summary['loss_last10']}; wrote {args.out}")


def _evaluate(args: argparse.Namespace) -> None:
    from headlab.toy.evaluate import main

    argv = ["--model", args.model, "--n", str(args.n), "--lengths", *map(str, args.lengths)]
    main(argv + (["--write"] if args.write else []))


def add_toy_commands(subparsers) -> None:
    """Register `toy pretrain` and `toy evaluate` on the top-level `headlab` sub-parsers."""
    from headlab.toy import default_model_dir
    from headlab.toy.pretrain import add_arguments

    toy = subparsers.add_parser("toy", help="the toy world and the tiny model headlab ships").add_subparsers(
        dest="toy_command", required=True)
    pre = toy.add_parser("pretrain", help="train the tiny Llama on toy-world text (CPU, minutes)",
                         description="Train a tokenizer and a tiny Llama (256-token context) on generated "
                                     "toy-world text; write a Hugging Face folder.")
    add_arguments(pre)
    pre.set_defaults(func=_pretrain)
    ev = toy.add_parser("evaluate", help="held-out perplexity and needle-in-a-haystack accuracy")
    ev.add_argument("--model", default=str(default_model_dir()), help="checkpoint folder")
    ev.add_argument("--lengths", type=int, nargs="+", default=[192, 256, 512, 1024], help="prompt tokens")
    ev.add_argument("--n", type=int, default=40, help="probes per length")
    ev.add_argument("--write", action="store_true", help="add the figures to the folder's training.json")
    ev.set_defaults(func=_evaluate)
