"""`headlab lofit select|tune|merge|eval`: thin front-ends over the LoFiT library functions.

Every input (data, head files, adapters) is read and checked before model weights are loaded, and results
are written only at the end, atomically, next to a config.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from headlab.errors import HeadlabError
from headlab.io import atomic_write_json, read_json

FORMATS = ("auto", "truthfulqa", "mquake", "clutrr")


def load_data(path: str, fmt: str, tokenizer, purpose: str, limit: int | None = None) -> list:
    """Records for training ("train") or scoring ("eval") from a file in one of FORMATS."""
    from headlab.lofit import datasets as ds

    if fmt == "truthfulqa":
        items = ds.load_truthfulqa(path, tokenizer)
        records: list = ds.truthfulqa_preferences(items) if purpose == "train" else items
    elif fmt == "mquake":
        records = ds.load_mquake(path, tokenizer)
    elif fmt == "clutrr":
        records = ds.load_clutrr(path, tokenizer)
    else:
        records = ds.load_records(path, tokenizer)
    if purpose == "eval" and records and isinstance(records[0], ds.Preference):
        raise HeadlabError(f"{path}: preference pairs cannot be scored; give completions or --format truthfulqa")
    return records[:limit] if limit else records


def read_heads(path: str, geometry) -> list[str]:
    """Heads from a `lofit select` heads.json ("heads") or a detection summary.json ("retrieval_heads")."""
    from headlab.heads import head_name, parse_head

    obj = read_json(path)
    key = "heads" if isinstance(obj, dict) and "heads" in obj else "retrieval_heads"
    names = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise HeadlabError(f"{path}: field 'heads' (or 'retrieval_heads') must be a list of \"L-H\" names")
    heads = []
    for n in names:
        layer, h = parse_head(n, path)
        geometry.check_head(layer, h, path)
        heads.append(head_name(layer, h))
    return heads


def _model_path(args) -> str:
    from headlab.toy import model_or_default

    return model_or_default(args.model)


def _train_config(args):
    from headlab.lofit.train import TrainConfig

    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, beta=args.beta, seed=args.seed)
    cfg.check()
    return cfg


def _load(args):
    from headlab.placement import placement_args
    from headlab.seam import load_model

    model, tokenizer = load_model(_model_path(args), device=args.device, dtype=args.dtype, **placement_args(args))
    return model, tokenizer


def _geometry(model_path: str):
    from headlab.loading import inspect

    return inspect(model_path).geometry


def _select(args: argparse.Namespace) -> None:
    from headlab.lofit.select import SelectConfig, select_heads
    from headlab.seam import load_tokenizer

    path = _model_path(args)
    records = load_data(args.data, args.format, load_tokenizer(path), "train", args.limit)
    config = SelectConfig(l1=args.l1, top_k=args.top_k, fraction=args.fraction, train=_train_config(args))
    config.k(_geometry(path))  # check before loading weights
    model, tokenizer = _load(args)
    result = select_heads(model, tokenizer, records, config)
    out = Path(args.out)
    result.adapter.info.update({"step": "select", "model": path})
    result.adapter.save(out / "scales.safetensors")
    atomic_write_json(out / "heads.json", {"heads": result.heads, "k": result.k, "n_nonzero": result.n_nonzero,
                                           "norms": result.norms, "losses": result.losses})
    atomic_write_json(out / "config.json", {"command": "lofit select", "model": path, "data": args.data,
                                            "format": args.format, "limit": args.limit, **config.to_dict()})
    print(result.message())
    for name in result.heads[:20]:
        print(f"  {name:>7}  {result.norms[name]:.4f}")
    print(f"wrote {out / 'heads.json'}, scales.safetensors, config.json")


def _tune(args: argparse.Namespace) -> None:
    from headlab.heads import random_heads
    from headlab.lofit.baselines import n_trainable, train_lora
    from headlab.lofit.tune import tune_offsets
    from headlab.seam import load_tokenizer

    path = _model_path(args)
    records = load_data(args.data, args.format, load_tokenizer(path), "train", args.limit)
    cfg = _train_config(args)
    geometry = _geometry(path)
    heads: list[str] = []
    if args.method != "lora":
        if not args.heads:
            raise HeadlabError(f"--heads is required with --method {args.method}")
        heads = read_heads(args.heads, geometry)
        if args.method == "random":  # same K, drawn outside the selected set
            heads = random_heads(geometry, len(heads), args.seed, exclude=heads)
    model, tokenizer = _load(args)
    out = Path(args.out)
    if args.method == "lora":
        peft_model, losses = train_lora(model, tokenizer, records, cfg, rank=args.rank)
        n_params = n_trainable(p for p in peft_model.parameters() if p.requires_grad)
        _save_lora(peft_model, out / "lora")
    else:
        adapter, losses = tune_offsets(model, tokenizer, records, heads, cfg, scales=args.scales,
                                       info={"step": "tune", "method": args.method, "model": path})
        n_params = adapter.n_params()
        adapter.save(out / "adapter.safetensors")
    atomic_write_json(out / "train.json", {"method": args.method, "heads": heads, "n_trainable": n_params,
                                           "losses": losses})
    atomic_write_json(out / "config.json", {"command": "lofit tune", "model": path, "data": args.data,
                                            "format": args.format, "method": args.method, "heads_file": args.heads,
                                            "rank": args.rank, "scales": args.scales, "limit": args.limit,
                                            **cfg.to_dict()})
    print(f"{args.method}: {n_params:,} trainable parameters, loss {losses[0]:.4f} -> {losses[-1]:.4f}; wrote {out}")


def _save_lora(peft_model, folder: Path) -> None:
    import shutil

    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _read_adapters(paths: list[str], model_path: str) -> list:
    from headlab.lofit.adapter import load_adapter

    geometry = _geometry(model_path)
    adapters = [load_adapter(p) for p in paths]
    for p, a in zip(paths, adapters, strict=True):
        if a.geometry != geometry:
            raise HeadlabError(f"{p}: adapter geometry {a.geometry} does not match {model_path} ({geometry})")
    return adapters


def _merge(args: argparse.Namespace) -> None:
    import torch

    from headlab.lofit.merge import max_logit_difference, merge_into_model, save_merged

    path = _model_path(args)
    adapters = _read_adapters(args.adapter, path)
    model, tokenizer = _load(args)
    merged = merge_into_model(model, adapters)
    vocab = min(model.config.get_text_config().vocab_size, len(tokenizer))
    ids = torch.randint(0, vocab, (2, 32), generator=torch.Generator().manual_seed(0)).to(args.device)
    diff = max_logit_difference(model, merged, adapters, ids)
    if diff > args.tolerance:
        raise HeadlabError(f"merge: merged and hooked logits differ by {diff:.2e} > {args.tolerance:.0e}; "
                           "nothing written")
    save_merged(merged, tokenizer, args.out)
    atomic_write_json(Path(args.out) / "lofit_merge.json", {"model": path, "adapters": args.adapter,
                                                            "max_abs_logit_difference": diff})
    print(f"merged {len(adapters)} adapter(s) into {type(merged).__name__}; max |logit diff| {diff:.2e}; "
          f"wrote {args.out}")


def _eval(args: argparse.Namespace) -> None:
    from headlab.lofit.adapter import apply_adapters
    from headlab.lofit.datasets import MultipleChoice
    from headlab.lofit.evaluate import evaluate_completions, evaluate_multiple_choice
    from headlab.seam import load_tokenizer

    path = _model_path(args)
    records = load_data(args.data, args.format, load_tokenizer(path), "eval", args.limit)
    adapters = _read_adapters(args.adapter or [], path)
    if args.lora:
        from headlab.model_check import check_model_folder

        if not Path(args.lora).is_dir():
            raise HeadlabError(f"{args.lora}: LoRA folder not found")
        check_model_folder(Path(args.lora), weights=True)  # adapter_model.bin (pickle) refused
    model, tokenizer = _load(args)
    if args.lora:
        from headlab.loading import attach_adapter

        model = attach_adapter(model, args.lora)
    with apply_adapters(model, *adapters):
        if isinstance(records[0], MultipleChoice):
            result = evaluate_multiple_choice(model, tokenizer, records)
        else:
            result = evaluate_completions(model, tokenizer, records, args.max_new_tokens)
    from headlab.distributed import is_main

    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    result["config"] = {"command": "lofit eval", "model": path, "data": args.data, "format": args.format,
                        "adapters": args.adapter or [], "lora": args.lora, "limit": args.limit}
    if args.out:
        atomic_write_json(args.out, result)
    shown = {k: round(v, 4) for k, v in result.items() if k in ("score", "mc1", "mc2")}
    print(f"{shown} on {result['n']} examples" + (f"; wrote {args.out}" if args.out else ""))


def _common(p: argparse.ArgumentParser, training: bool = True) -> None:
    p.add_argument("--model", help="local folder or hub id (default: the shipped tiny model)")
    p.add_argument("--data", required=True, help="JSONL of completions, preference pairs or task examples, "
                                                 "or a dataset file with --format")
    p.add_argument("--format", choices=FORMATS, default="auto", help="published dataset format of --data")
    p.add_argument("--limit", type=int, default=None, help="use only the first N records")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    if not training:
        from headlab.placement import add_placement_args

        add_placement_args(p)
    if training:
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--lr", type=float, default=5e-3)
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("--beta", type=float, default=0.1, help="DPO temperature (preference data)")
        p.add_argument("--seed", type=int, default=0)


def add_lofit_commands(subparsers) -> None:
    """Register `lofit select|tune|merge|eval` on the top-level `headlab` sub-parsers."""
    lofit = subparsers.add_parser("lofit", help="LoFiT: select heads, tune offsets, merge, evaluate")
    sub = lofit.add_subparsers(dest="lofit_command", required=True)

    s = sub.add_parser("select", help="step 1: L1-penalised scales on every head; keep the top K",
                       description="Learn a scale per head with an L1 penalty and keep the heads with the "
                                   "largest scale norms (default 3%% of heads).")
    _common(s)
    s.add_argument("--out", required=True, help="output folder (heads.json, scales.safetensors)")
    s.add_argument("--l1", type=float, default=1e-3, help="L1 strength lambda")
    s.add_argument("--top-k", type=int, default=None, help="keep this many heads")
    s.add_argument("--fraction", type=float, default=0.03, help="keep this fraction of heads (without --top-k)")
    s.set_defaults(func=_select)

    t = sub.add_parser("tune", help="step 2: offsets on the selected heads (or a baseline)",
                       description="Train offsets on the heads of --heads (method lofit), on as many random "
                                   "heads outside them (random), or LoRA on the attention (lora). Heads "
                                   "selected for another task give the transfer baseline.")
    _common(t)
    t.add_argument("--out", required=True, help="output folder (adapter.safetensors or lora/)")
    t.add_argument("--heads", help="heads.json from `lofit select`, or a detection summary.json")
    t.add_argument("--method", choices=["lofit", "random", "lora"], default="lofit")
    t.add_argument("--scales", action="store_true", help="also learn scales on the heads (LoFiT uses offsets)")
    t.add_argument("--rank", type=int, default=8, help="LoRA rank")
    t.set_defaults(func=_tune)

    m = sub.add_parser("merge", help="fold adapters into the output projections; save a plain checkpoint")
    m.add_argument("--model", help="local folder or hub id (default: the shipped tiny model)")
    m.add_argument("--adapter", action="append", required=True, help="adapter.safetensors (repeatable)")
    m.add_argument("--out", required=True, help="output checkpoint folder")
    m.add_argument("--tolerance", type=float, default=1e-4, help="max |logit diff| merged vs hooked")
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    m.set_defaults(func=_merge)

    e = sub.add_parser("eval", help="score a model with adapters (or LoRA) on completions or TruthfulQA MC")
    _common(e, training=False)
    e.add_argument("--adapter", action="append", help="adapter.safetensors to apply (repeatable)")
    e.add_argument("--lora", help="LoRA folder from `lofit tune --method lora`")
    e.add_argument("--out", help="write the scores here (JSON)")
    e.add_argument("--max-new-tokens", type=int, default=32)
    e.set_defaults(func=_eval)
