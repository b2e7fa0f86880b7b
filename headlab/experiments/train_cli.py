"""`headlab finetune`, `headlab evaluate` and `headlab niah`: typed front-ends over finetune.py, evaluate.py
and niah_sweep.py. Every input is checked before weights are loaded; errors are HeadlabError lines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from headlab.core.cli_floor import Command, Flag, opt
from headlab.experiments.evaluate import EvalConfig
from headlab.experiments.finetune import FinetuneConfig
from headlab.experiments.niah_sweep import NiahSweepConfig
from headlab.model.options import PLACEMENT, ModelOptions


@dataclass(kw_only=True)
class Resume:
    resume: bool = False  # continue the run in --out from its last checkpoint


def _finetune(model: ModelOptions, config: FinetuneConfig, resume: Resume) -> None:
    """context-extension fine-tuning (LoRA or full) on task JSONL

    Fine-tune a causal LM on task examples (prompt + answer), extending its context (max_position_embeddings
    and RoPE). Uses the transformers Trainer: run it under `accelerate launch -m headlab.cli finetune ...` for
    several GPUs."""
    from headlab.experiments.finetune import finetune

    config = replace(config, model=model.path, dtype=model.dtype, trust_remote_code=model.trust_remote_code)
    summary = finetune(config, resume=resume.resume)
    print(f"trained {summary['steps']} steps, mean loss {summary['train_loss']:.4f}, "
          f"{summary['tokens_per_second']:,.0f} tokens/s; "
          f"model in {Path(config.out) / 'model'}")


@dataclass(kw_only=True)
class EvalData:
    data: str = opt(help="task-example JSONL")
    out: str = opt(help="output folder")


def _evaluate(model: ModelOptions, config: EvalConfig, run: EvalData) -> None:
    """greedy answers and task metrics on task JSONL

    Batched greedy generation on task prompts; writes predictions.jsonl, summary.json (by task, gold-document
    depth and context length), scores.png and config.json."""
    from headlab.core.distributed import is_main
    from headlab.data.training import load_task_data
    from headlab.experiments.evaluate import evaluate_examples, write_evaluation
    from headlab.model.loading import load_model

    items = load_task_data(run.data)  # all of the data is validated before the model loads
    model_path = model.path
    loaded, tokenizer = load_model(model_path, device=model.device, dtype=model.dtype,
                                   trust_remote_code=model.trust_remote_code, **model.placement())
    records, summary = evaluate_examples(loaded, tokenizer, [it.example for it in items], config, run.data)
    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    write_evaluation(records, summary, run.out, {"model": model_path, "data": run.data, "dtype": model.dtype,
                                                 **asdict(config)})
    print(f"score {summary['score']:.3f} over {summary['n']} examples; "
          + ", ".join(f"{k} {v['score']:.3f}" for k, v in summary["by_length"].items()))
    print(f"wrote {Path(run.out) / 'predictions.jsonl'}, summary.json, scores.png")


@dataclass(kw_only=True)
class NiahOut:
    out: str = opt(help="output folder: niah.json, niah.png, niah_predictions.jsonl")


def _niah(model: ModelOptions, config: NiahSweepConfig, run: NiahOut) -> None:
    """needle-in-a-haystack sweep (lengths x depths) with a heatmap

    Greedy needle retrieval over context lengths x needle depths. Default needles: the toy world; --spec takes
    a NIAH spec (haystack files, needles, lengths, depths) for any model."""
    from headlab.core.distributed import is_main
    from headlab.experiments.niah_sweep import niah_sweep, write_niah
    from headlab.model.loading import load_weights

    config.check()
    model_path = model.path
    info = _check_niah_lengths(config, model_path, model.trust_remote_code)
    loaded = load_weights(info, device=model.device, dtype=model.dtype, **model.placement())
    grid, records = niah_sweep(loaded, info.tokenizer, config)
    if not is_main():
        return
    write_niah(grid, records, run.out, {"model": model_path, "dtype": model.dtype, **asdict(config)})
    print(f"mean score {grid['mean']:.3f}; wrote {Path(run.out) / 'niah.png'}")


def _check_niah_lengths(cfg, model_path: str, trust_remote_code: bool):
    """Lengths far beyond the model's positions are refused before the model loads (see data/niah.py); returns
    the model's source, inspected, for loading."""
    from headlab.data.niah import check_lengths, length_limit, load_niah_spec
    from headlab.model.loading import inspect

    info = inspect(model_path, trust_remote_code)
    positions = info.max_positions
    if cfg.spec:
        load_niah_spec(cfg.spec, length_limit(positions), positions)
    else:
        check_lengths(cfg.lengths, length_limit(positions), "niah", positions)
    return info


def commands() -> list[Command]:
    trained = Flag(help="model folder, hub id or headlab LoRA adapter folder (default: the shipped tiny model)")
    finetune_flags = {
        "model": Flag(help="base model folder or hub id (default: the shipped tiny model)"),
        "data": Flag(help="task-example JSONL (headlab data make / convert)"),
        "out": Flag(help="run folder: config.json, checkpoints/, model/, summary.json"),
        "method": Flag(choices=("lora", "full")),
        "loss_on": Flag(choices=("answer", "all"), help="tokens that carry the loss"),
        "lr": Flag(help="peak learning rate (linear decay)"),
        "batch_size": Flag(help="examples per device per micro-batch"),
        "grad_accum": Flag(help="micro-batches per optimizer step"),
        "save_steps": Flag(help="checkpoint every N steps (safetensors)"),
        "save_total_limit": Flag(help="checkpoints kept"),
    }
    generation = {"model": trained, "batch_size": Flag(help="prompts per generation batch")}
    return [
        Command("finetune", _finetune, flags=finetune_flags, hide=("device", "extra") + PLACEMENT,
                config_file=True),
        Command("evaluate", _evaluate, flags=generation, hide=("attn",), config_file=True, whole_output=True),
        Command("niah", _niah, flags={**generation, "lengths": Flag(help="prompt lengths in tokens")},
                hide=("attn",), config_file=True, whole_output=True),
    ]
