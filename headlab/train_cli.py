"""`headlab finetune`, `headlab evaluate` and `headlab niah`: thin front-ends over finetune.py, evaluate.py
and niah_sweep.py. Every input is checked before weights are loaded; errors are HeadlabError lines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headlab.errors import HeadlabError
from headlab.placement import add_placement_args
from headlab.toy import model_or_default


def _json_arg(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise HeadlabError(f"{flag}: invalid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise HeadlabError(f"{flag}: expected a JSON object such as '{{\"rope_type\": \"linear\", \"factor\": 4}}'")
    return value


def _finetune(args: argparse.Namespace) -> None:
    from headlab.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        model=model_or_default(args.model), data=args.data, out=args.out, context_length=args.context_length,
        rope_theta=args.rope_theta, rope_scaling=_json_arg(args.rope_scaling, "--rope-scaling"),
        method=args.method, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=args.target_modules, lr=args.lr, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, grad_accum=args.grad_accum, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, loss_on=args.loss_on, seed=args.seed, save_steps=args.save_steps,
        save_total_limit=args.save_total_limit, logging_steps=args.logging_steps, merge=args.merge,
        dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing,
        trust_remote_code=args.trust_remote_code)
    summary = finetune(cfg, resume=args.resume)
    print(f"trained {summary['steps']} steps, mean loss {summary['train_loss']:.4f}, "
          f"{summary['tokens_per_second']:,.0f} tokens/s; "
          f"model in {Path(args.out) / 'model'}")


def _evaluate(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from headlab.data.training import load_task_data
    from headlab.distributed import is_main
    from headlab.evaluate import EvalConfig, evaluate_examples, write_evaluation
    from headlab.loading import load_model
    from headlab.placement import placement_args

    items = load_task_data(args.data)  # all of the data is validated before the model loads
    model_path = model_or_default(args.model)
    model, tokenizer = load_model(model_path, device=args.device, dtype=args.dtype,
                                  trust_remote_code=args.trust_remote_code, **placement_args(args))
    config = EvalConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        depth_bins=args.depth_bins, allow_long_context=args.allow_long_context)
    records, summary = evaluate_examples(model, tokenizer, [it.example for it in items], config, args.data)
    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    write_evaluation(records, summary, args.out, {"model": model_path, "data": args.data, "dtype": args.dtype,
                                                  **asdict(config)})
    print(f"score {summary['score']:.3f} over {summary['n']} examples; "
          + ", ".join(f"{k} {v['score']:.3f}" for k, v in summary["by_length"].items()))
    print(f"wrote {Path(args.out) / 'predictions.jsonl'}, summary.json, scores.png")


def _niah(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from headlab.distributed import is_main
    from headlab.loading import load_weights
    from headlab.niah_sweep import NiahSweepConfig, niah_sweep, write_niah
    from headlab.placement import placement_args

    cfg = NiahSweepConfig(lengths=args.lengths, depths=args.depths, needles=args.needles, seed=args.seed,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, spec=args.spec)
    cfg.check()
    model_path = model_or_default(args.model)
    info = _check_niah_lengths(cfg, model_path, args.trust_remote_code)
    model = load_weights(info, device=args.device, dtype=args.dtype, **placement_args(args))
    grid, records = niah_sweep(model, info.tokenizer, cfg)
    if not is_main():
        return
    write_niah(grid, records, args.out, {"model": model_path, "dtype": args.dtype, **asdict(cfg)})
    print(f"mean score {grid['mean']:.3f}; wrote {Path(args.out) / 'niah.png'}")


def _check_niah_lengths(cfg, model_path: str, trust_remote_code: bool):
    """Lengths far beyond the model's positions are refused before the model loads (see data/niah.py); returns
    the model's source, inspected, for loading."""
    from headlab.data.niah import check_lengths, length_limit, load_niah_spec
    from headlab.loading import inspect

    info = inspect(model_path, trust_remote_code)
    positions = info.max_positions
    if cfg.spec:
        load_niah_spec(cfg.spec, length_limit(positions), positions)
    else:
        check_lengths(cfg.lengths, length_limit(positions), "niah", positions)
    return info


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model folder, hub id or headlab LoRA adapter folder "
                                   "(default: the shipped tiny model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    p.add_argument("--trust-remote-code", action="store_true")
    add_placement_args(p)


def add_train_commands(subparsers) -> None:
    """Register `finetune`, `evaluate` and `niah` on the top-level `headlab` sub-parsers."""
    f = subparsers.add_parser(
        "finetune", help="context-extension fine-tuning (LoRA or full) on task JSONL",
        description="Fine-tune a causal LM on task examples (prompt + answer), extending its context "
                    "(max_position_embeddings and RoPE). Uses the transformers Trainer: run it under "
                    "`accelerate launch -m headlab.cli finetune ...` for several GPUs.")
    f.add_argument("--model", help="base model folder or hub id (default: the shipped tiny model)")
    f.add_argument("--data", required=True, help="task-example JSONL (headlab data make / convert)")
    f.add_argument("--out", required=True, help="run folder: config.json, checkpoints/, model/, summary.json")
    f.add_argument("--context-length", type=int, help="target context in tokens (default: the model's)")
    f.add_argument("--rope-theta", type=float, help="RoPE base (default: NTK-aware rule for a longer context)")
    f.add_argument("--rope-scaling", help='JSON merged into rope_parameters, e.g. \'{"rope_type": "linear", '
                                          '"factor": 4}\'')
    f.add_argument("--method", choices=["lora", "full"], default="lora")
    f.add_argument("--lora-rank", type=int, default=8)
    f.add_argument("--lora-alpha", type=float, default=16.0)
    f.add_argument("--lora-dropout", type=float, default=0.0)
    f.add_argument("--target-modules", nargs="+", help="LoRA targets (default: the attention projections)")
    f.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (linear decay)")
    f.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    f.add_argument("--epochs", type=float, default=1.0)
    f.add_argument("--batch-size", type=int, default=1, help="examples per device per micro-batch")
    f.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    f.add_argument("--warmup-steps", type=int, default=0)
    f.add_argument("--weight-decay", type=float, default=0.0)
    f.add_argument("--loss-on", choices=["answer", "all"], default="answer", help="tokens that carry the loss")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps (safetensors)")
    f.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept")
    f.add_argument("--logging-steps", type=int, default=5)
    f.add_argument("--merge", action="store_true", help="LoRA: save merged weights instead of an adapter")
    f.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    f.add_argument("--gradient-checkpointing", action="store_true")
    f.add_argument("--trust-remote-code", action="store_true")
    f.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    f.set_defaults(func=_finetune)

    e = subparsers.add_parser(
        "evaluate", help="greedy answers and task metrics on task JSONL",
        description="Batched greedy generation on task prompts; writes predictions.jsonl, summary.json "
                    "(by task, gold-document depth and context length), scores.png and config.json.")
    _add_model_args(e)
    e.add_argument("--data", required=True, help="task-example JSONL")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--max-new-tokens", type=int, default=32)
    e.add_argument("--depth-bins", type=int, default=5)
    e.add_argument("--allow-long-context", action="store_true",
                   help="evaluate prompts longer than the model's max_position_embeddings")
    e.set_defaults(func=_evaluate)

    n = subparsers.add_parser(
        "niah", help="needle-in-a-haystack sweep (lengths x depths) with a heatmap",
        description="Greedy needle retrieval over context lengths x needle depths. Default needles: the toy "
                    "world; --spec takes a NIAH spec (haystack files, needles, lengths, depths) for any model.")
    _add_model_args(n)
    n.add_argument("--out", required=True, help="output folder: niah.json, niah.png, niah_predictions.jsonl")
    n.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024], help="prompt lengths in tokens")
    n.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    n.add_argument("--needles", type=int, default=4, help="toy needles per cell")
    n.add_argument("--spec", help="NIAH spec file (.json/.yaml); replaces the toy needles, lengths and depths")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--max-new-tokens", type=int, default=40)
    n.set_defaults(func=_niah)
