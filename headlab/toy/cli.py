"""`headlab toy ...` commands: pretrain and evaluate the shipped tiny model."""

from __future__ import annotations

from dataclasses import dataclass, field

from headlab.core.cli_floor import Command, Flag, opt
from headlab.model.options import MODEL_FIELDS, ONLY_PICKLE, ModelOptions
from headlab.toy.pretrain import PretrainConfig


@dataclass(kw_only=True)
class PretrainOut:
    out: str = opt(help="folder to write the checkpoint to")


def _pretrain(trust: ModelOptions, config: PretrainConfig, run: PretrainOut) -> None:
    """train the tiny Llama on toy-world text (CPU, minutes)

    Train a tokenizer and a tiny Llama (256-token context) on generated toy-world text; write a Hugging Face
    folder."""
    from headlab.toy.pretrain import pretrain

    _, _, summary = pretrain(config, run.out)
    print(f"trained {summary['n_params']:,} parameters on {summary['train_tokens']:,} tokens in "
          f"{summary['train_seconds']}s; final loss {summary['loss_last10']}; wrote {run.out}")


@dataclass(kw_only=True)
class ToyEval:
    lengths: list[int] = field(default_factory=lambda: [192, 256, 512, 1024])  # prompt tokens
    n: int = 40  # probes per length
    write: bool = False  # add the figures to the folder's training.json


def _evaluate(model: ModelOptions, run: ToyEval) -> None:
    """held-out perplexity and needle-in-a-haystack accuracy"""
    from headlab.toy.evaluate import evaluate_and_record

    print(evaluate_and_record(model.path, run.lengths, run.n, run.write))


def commands() -> list[Command]:
    pretrain_help = {"seed": Flag(help="seed for the world, tokenizer and model"),
                     "steps": Flag(help="optimizer steps"),
                     "batch_size": Flag(help="rows of 256 tokens per step"),
                     "lr": Flag(help="peak learning rate (AdamW, cosine)"),
                     "warmup": Flag(help="linear warmup steps"),
                     "init": Flag(help="continue training from this checkpoint folder")}
    architecture = ("seq_len", "weight_decay", "vocab_size", "hidden_size", "n_layers", "n_heads", "n_kv_heads",
                    "intermediate_size")
    only_model = tuple(f for f in MODEL_FIELDS if f not in ("model", "gguf_file", "allow_pickle"))
    return [
        Command("toy pretrain", _pretrain, flags=pretrain_help, hide=ONLY_PICKLE + architecture),
        Command("toy evaluate", _evaluate, flags={"model": Flag(help="checkpoint folder (default: the shipped "
                                                                     "tiny model)")}, hide=only_model),
    ]
