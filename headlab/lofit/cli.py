"""`headlab lofit select|tune|merge|eval`: typed front-ends over the LoFiT library functions.

Every input (data, head files, adapters) is read and checked before model weights are loaded, and results
are written only at the end, atomically, next to a config.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headlab.core.cli_floor import Command, Flag, opt
from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json, read_json
from headlab.lofit.select import SelectConfig
from headlab.lofit.train import TrainConfig
from headlab.model.options import ModelOptions

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
    from headlab.mech.heads import head_name, parse_head

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


@dataclass(kw_only=True)
class LofitData:
    data: str = opt(help="JSONL of completions, preference pairs or task examples, or a dataset file with --format")
    format: str = opt("auto", choices=FORMATS, help="published dataset format of --data")
    limit: int | None = None  # use only the first N records
    out: str | None = opt(None, help="output folder")


def _load(model: ModelOptions):
    from headlab.model.loading import load_model

    return load_model(model.path, device=model.device, dtype=model.dtype, **model.placement())


def _geometry(model_path: str):
    from headlab.model.loading import inspect

    return inspect(model_path).geometry


def _select(model: ModelOptions, run: LofitData, config: SelectConfig) -> None:
    """step 1: L1-penalised scales on every head; keep the top K

    Learn a scale per head with an L1 penalty and keep the heads with the largest scale norms (default 3% of
    heads)."""
    from headlab.lofit.select import select_heads
    from headlab.model.loading import load_tokenizer

    path = model.path
    records = load_data(run.data, run.format, load_tokenizer(path), "train", run.limit)
    config.k(_geometry(path))  # check before loading weights
    loaded, tokenizer = _load(model)
    result = select_heads(loaded, tokenizer, records, config)
    out = Path(run.out)
    result.adapter.info.update({"step": "select", "model": path})
    result.adapter.save(out / "scales.safetensors")
    atomic_write_json(out / "heads.json", {"heads": result.heads, "k": result.k, "n_nonzero": result.n_nonzero,
                                           "norms": result.norms, "losses": result.losses})
    atomic_write_json(out / "config.json", {"command": "lofit select", "model": path, "data": run.data,
                                            "format": run.format, "limit": run.limit, **config.to_dict()})
    print(result.message())
    for name in result.heads[:20]:
        print(f"  {name:>7}  {result.norms[name]:.4f}")
    print(f"wrote {out / 'heads.json'}, scales.safetensors, config.json")


@dataclass(kw_only=True)
class TuneOptions:
    heads: str | None = None  # heads.json from `lofit select`, or a detection summary.json
    method: str = opt("lofit", choices=("lofit", "random", "lora"))
    scales: bool = False  # also learn scales on the heads (LoFiT uses offsets)
    rank: int = 8  # LoRA rank


def _tune(model: ModelOptions, run: LofitData, tune: TuneOptions, cfg: TrainConfig) -> None:
    """step 2: offsets on the selected heads (or a baseline)

    Train offsets on the heads of --heads (method lofit), on as many random heads outside them (random), or
    LoRA on the attention (lora). Heads selected for another task give the transfer baseline."""
    from headlab.lofit.baselines import n_trainable, train_lora
    from headlab.lofit.tune import tune_offsets
    from headlab.mech.heads import random_heads
    from headlab.model.loading import load_tokenizer

    path = model.path
    records = load_data(run.data, run.format, load_tokenizer(path), "train", run.limit)
    cfg.check()
    geometry = _geometry(path)
    heads: list[str] = []
    if tune.method != "lora":
        if not tune.heads:
            raise HeadlabError(f"--heads is required with --method {tune.method}")
        heads = read_heads(tune.heads, geometry)
        if tune.method == "random":  # same K, drawn outside the selected set
            heads = random_heads(geometry, len(heads), cfg.seed, exclude=heads)
    loaded, tokenizer = _load(model)
    out = Path(run.out)
    if tune.method == "lora":
        peft_model, losses = train_lora(loaded, tokenizer, records, cfg, rank=tune.rank)
        n_params = n_trainable(p for p in peft_model.parameters() if p.requires_grad)
        _save_lora(peft_model, out / "lora")
    else:
        adapter, losses = tune_offsets(loaded, tokenizer, records, heads, cfg, scales=tune.scales,
                                       info={"step": "tune", "method": tune.method, "model": path})
        n_params = adapter.n_params()
        adapter.save(out / "adapter.safetensors")
    atomic_write_json(out / "train.json", {"method": tune.method, "heads": heads, "n_trainable": n_params,
                                           "losses": losses})
    atomic_write_json(out / "config.json", {"command": "lofit tune", "model": path, "data": run.data,
                                            "format": run.format, "method": tune.method, "heads_file": tune.heads,
                                            "rank": tune.rank, "scales": tune.scales, "limit": run.limit,
                                            **cfg.to_dict()})
    print(f"{tune.method}: {n_params:,} trainable parameters, loss {losses[0]:.4f} -> {losses[-1]:.4f}; wrote {out}")


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


@dataclass(kw_only=True)
class MergeOptions:
    adapter: list[str] = opt(repeat=True, help="adapter.safetensors (repeatable)")
    out: str = opt(help="output checkpoint folder")
    tolerance: float = 1e-4  # max |logit diff| merged vs hooked


def _merge(model: ModelOptions, run: MergeOptions) -> None:
    """fold adapters into the output projections; save a plain checkpoint"""
    import torch

    from headlab.lofit.merge import max_logit_difference, merge_into_model, save_merged

    path = model.path
    adapters = _read_adapters(run.adapter, path)
    loaded, tokenizer = _load(model)
    merged = merge_into_model(loaded, adapters)
    vocab = min(loaded.config.get_text_config().vocab_size, len(tokenizer))
    ids = torch.randint(0, vocab, (2, 32), generator=torch.Generator().manual_seed(0)).to(model.device)
    diff = max_logit_difference(loaded, merged, adapters, ids)
    if diff > run.tolerance:
        raise HeadlabError(f"merge: merged and hooked logits differ by {diff:.2e} > {run.tolerance:.0e}; "
                           "nothing written")
    save_merged(merged, tokenizer, run.out)
    atomic_write_json(Path(run.out) / "lofit_merge.json", {"model": path, "adapters": run.adapter,
                                                           "max_abs_logit_difference": diff})
    print(f"merged {len(adapters)} adapter(s) into {type(merged).__name__}; max |logit diff| {diff:.2e}; "
          f"wrote {run.out}")


@dataclass(kw_only=True)
class EvalOptions:
    adapter: list[str] | None = opt(None, repeat=True, help="adapter.safetensors to apply (repeatable)")
    lora: str | None = None  # LoRA folder from `lofit tune --method lora`
    max_new_tokens: int = 32


def _eval(model: ModelOptions, run: LofitData, opts: EvalOptions) -> None:
    """score a model with adapters (or LoRA) on completions or TruthfulQA MC"""
    from headlab.lofit.adapter import apply_adapters
    from headlab.lofit.datasets import MultipleChoice
    from headlab.lofit.evaluate import evaluate_completions, evaluate_multiple_choice
    from headlab.model.loading import load_tokenizer

    path = model.path
    records = load_data(run.data, run.format, load_tokenizer(path), "eval", run.limit)
    adapters = _read_adapters(opts.adapter or [], path)
    if opts.lora:
        from headlab.model.model_check import check_model_folder

        if not Path(opts.lora).is_dir():
            raise HeadlabError(f"{opts.lora}: LoRA folder not found")
        check_model_folder(Path(opts.lora), weights=True)  # adapter_model.bin (pickle) refused
    loaded, tokenizer = _load(model)
    if opts.lora:
        from headlab.model.loading import attach_adapter

        loaded = attach_adapter(loaded, opts.lora)
    with apply_adapters(loaded, *adapters):
        if isinstance(records[0], MultipleChoice):
            result = evaluate_multiple_choice(loaded, tokenizer, records)
        else:
            result = evaluate_completions(loaded, tokenizer, records, opts.max_new_tokens)
    from headlab.core.distributed import is_main

    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    result["config"] = {"command": "lofit eval", "model": path, "data": run.data, "format": run.format,
                        "adapters": opts.adapter or [], "lora": opts.lora, "limit": run.limit}
    if run.out:
        atomic_write_json(run.out, result)
    shown = {k: round(v, 4) for k, v in result.items() if k in ("score", "mc1", "mc2")}
    print(f"{shown} on {result['n']} examples" + (f"; wrote {run.out}" if run.out else ""))


def commands() -> list[Command]:
    # select, tune and merge load a plain model on one device; eval may spread it (--device-map).
    plain = ("attn", "trust_remote_code", "device_map", "max_memory")
    out = {"out": Flag(required=True)}
    select = {"l1": Flag(help="L1 strength lambda"), "top_k": Flag(help="keep this many heads"),
              "fraction": Flag(help="keep this fraction of heads (without --top-k)"), **out}
    return [
        Command("lofit select", _select, flags=select, hide=plain + ("init_std",), config_file=True,
                whole_output=True),
        Command("lofit tune", _tune, flags=out, hide=plain, config_file=True, whole_output=True),
        Command("lofit merge", _merge, hide=plain, config_file=True),
        Command("lofit eval", _eval, flags={"out": Flag(help="write the scores here (JSON)")},
                hide=("attn", "trust_remote_code"), config_file=True, out="file"),
    ]
