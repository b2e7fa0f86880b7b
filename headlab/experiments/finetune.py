"""Context-extension fine-tuning: LoRA (PEFT) or full fine-tuning with the transformers Trainer.

    summary = finetune(FinetuneConfig(model="path", data="train.jsonl", out="runs/ft", context_length=1024))

The run folder holds config.json (this config), extension.json (the config overrides that extend the
context), checkpoints/ (Trainer checkpoints, safetensors), model/ (the final model: a full checkpoint, a
merged LoRA, or a PEFT adapter naming its base) and summary.json. The Trainer does the device placement, so
`accelerate launch -m headlab.cli finetune ...` runs the same command data-parallel on several GPUs.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from headlab.core.errors import HeadlabError, check_fields, where
from headlab.core.inputs import check_out
from headlab.core.io import atomic_write_json, file_sha256, folder_lock, read_json
from headlab.core.progress import progress_bar
from headlab.data.training import IGNORE_INDEX, encode_all, load_task_data
from headlab.model.loading import ADAPTER_CONFIG, EXTENSION_FILE, current_length, extension_overrides
from headlab.model.options import DTYPE_ALIASES, DTYPES

METHODS = ("lora", "full")
LOSS_ON = ("answer", "all")


@dataclass
class FinetuneConfig:
    model: str
    data: str
    out: str
    context_length: int | None = None        # target context; default: the model's own
    rope_theta: float | None = None          # RoPE base; default: NTK-aware rule when the context grows
    rope_scaling: dict[str, Any] | None = None  # merged into rope_parameters, e.g. {"rope_type": "linear", ...}
    method: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None  # default: the attention projections
    lr: float = 2e-4
    steps: int | None = None                 # optimizer steps; overrides epochs
    epochs: float = 1.0
    batch_size: int = 1
    grad_accum: int = 1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    loss_on: str = "answer"
    seed: int = 0
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 5
    merge: bool = False                      # LoRA: save merged weights instead of an adapter
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # more TrainingArguments, passed through

    def check(self, source: str = "finetune", prefix: str = "") -> None:
        """Every setting through the floor's field checks; `source` and `prefix` name where they came from (the
        study: "study.yaml", "finetune.")."""
        def integer(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        # Types first: a YAML `lr: fast` must be named here, not fail as a comparison deep inside.
        check_fields(source, self, [
            *[(n, integer(getattr(self, n)), "an integer") for n in (
                "lora_rank", "batch_size", "grad_accum", "warmup_steps", "seed", "save_steps", "save_total_limit",
                "logging_steps")],
            *[(n, number(getattr(self, n)), "a finite number") for n in (
                "lora_alpha", "lora_dropout", "lr", "epochs", "weight_decay")],
            *[(n, getattr(self, n) is None or integer(getattr(self, n)), "an integer") for n in (
                "steps", "context_length")],
            ("rope_theta", self.rope_theta is None or number(self.rope_theta), "a finite number"),
            ("rope_scaling", self.rope_scaling is None or isinstance(self.rope_scaling, dict), "a mapping"),
            ("target_modules", self.target_modules is None or isinstance(self.target_modules, list) and all(
                isinstance(m, str) for m in self.target_modules), "a list of module names"),
            ("extra", isinstance(self.extra, dict), "a mapping of TrainingArguments"),
        ], prefix)
        import dataclasses

        from transformers import TrainingArguments

        known = {f.name for f in dataclasses.fields(TrainingArguments)}
        unknown = sorted(str(k) for k in self.extra if k not in known)
        if unknown:
            raise HeadlabError(f"{where(source, None, f'{prefix}extra.{unknown[0]}')} is not a TrainingArguments "
                               "setting")
        check_fields(source, self, [
            ("method", self.method in METHODS, f"one of {', '.join(METHODS)}"),
            ("loss_on", self.loss_on in LOSS_ON, f"one of {', '.join(LOSS_ON)}"),
            ("dtype", isinstance(self.dtype, str) and (self.dtype in DTYPES or self.dtype in DTYPE_ALIASES),
             f"one of {', '.join([*DTYPES, *DTYPE_ALIASES])}"),
            ("lr", self.lr > 0, "positive"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("grad_accum", self.grad_accum >= 1, ">= 1"), ("lora_rank", self.lora_rank >= 1, ">= 1"),
            ("lora_alpha", self.lora_alpha > 0, "positive"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            ("steps", self.steps is None or self.steps >= 1, ">= 1"), ("epochs", self.epochs > 0, "positive"),
            ("context_length", self.context_length is None or self.context_length >= 1, ">= 1"),
            ("rope_theta", self.rope_theta is None or self.rope_theta > 0, "positive"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("seed", self.seed >= 0, ">= 0"), ("save_steps", self.save_steps >= 1, ">= 1"),
            ("save_total_limit", self.save_total_limit >= 1, ">= 1"),
            ("logging_steps", self.logging_steps >= 1, ">= 1")], prefix)


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


class PadCollator:
    """Right-pads a batch: pad id in input_ids, IGNORE_INDEX in labels, 0 in the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        fill = {"input_ids": self.pad_id, "labels": IGNORE_INDEX, "attention_mask": 0}
        return {k: torch.tensor([r[k] + [v] * (width - len(r[k])) for r in rows]) for k, v in fill.items()}


class ProgressBar(TrainerCallback):
    """One progress bar over optimizer steps showing the last logged loss and training tokens per second."""

    def __init__(self):
        self.bar, self.t0, self.tokens0 = None, 0.0, 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = progress_bar(total=state.max_steps, initial=state.global_step, desc="finetune",
                                    dynamic_ncols=True)
        self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "loss" not in logs:
            return
        rate = (state.num_input_tokens_seen - self.tokens0) / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix(loss=f"{logs['loss']:.4f}", tok_s=f"{rate:,.0f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def attention_projection_names(model) -> list[str]:
    """LoRA targets for "attention projections only": the family row's projections (headlab/model/families.py).

    Leaf names (q_proj, ...) when no layer outside attention shares them, else full module paths (GPT-2's c_proj
    also names an MLP layer).
    """
    from headlab.model.families import family_of

    try:
        family = family_of(model)
    except HeadlabError as e:
        raise HeadlabError(f"{e}; pass --target-modules to fine-tune it") from None
    attention = [name for name, m in model.named_modules() if family.is_attention(m)]
    inside = [f"{name}.{proj}" for name in attention for proj in family.projections]
    paths, chosen = (name for name, _ in model.named_modules()), set(inside)
    shared = any(p.rsplit(".", 1)[-1] in family.projections and p not in chosen for p in paths)
    return inside if shared else list(family.lora_targets)


def prepare(cfg: FinetuneConfig):
    """Tokenizer, the base model's source under the extended config, and the overrides, without loading any
    weights (cheap input checks)."""
    from headlab.model.loading import inspect

    base = inspect(cfg.model, cfg.trust_remote_code)
    overrides = extension_overrides(base.config, cfg.context_length, cfg.rope_theta, cfg.rope_scaling)
    info = base.extended(overrides)
    tokenizer = info.tokenizer
    tokenizer.model_max_length = current_length(info.config)
    return tokenizer, info, overrides


def build_model(cfg: FinetuneConfig, info):
    """Load the weights under the extended config (`prepare`); wrap in LoRA when asked."""
    from headlab.model.loading import load_weights
    from headlab.model.model_check import check_lora_rank

    if cfg.method == "lora":
        check_lora_rank(cfg.lora_rank, info.config, "lora_rank")
    torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn at wrap time
    model = load_weights(info, dtype=cfg.dtype)  # eval mode, as from_pretrained gives; the Trainer sets train
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = cfg.target_modules or attention_projection_names(model)
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, task_type="CAUSAL_LM")
        from headlab.core.quiet import peft_wrapping

        try:
            with peft_wrapping():
                model = get_peft_model(model, lora)
        except ValueError as e:
            raise HeadlabError(f"finetune: field 'target_modules' {targets}: {str(e).splitlines()[0]}") from None
    return model


def _check_run_folder(cfg: FinetuneConfig, resume: bool) -> None:
    out = Path(cfg.out)
    saved = out / "config.json"
    if (out / "model").exists():
        raise HeadlabError(f"{out}: this run has already finished (model/ exists); choose another --out")
    if not resume and (out / "checkpoints").exists():
        raise HeadlabError(f"{out}: holds checkpoints of an earlier run; pass --resume or choose another --out")
    if resume:
        if not saved.is_file():
            raise HeadlabError(f"{saved}: file not found, nothing to resume")
        before = read_json(saved)
        if not isinstance(before, dict):
            raise HeadlabError(f"{saved}: expected a JSON object (the run's settings)")
        # Where the run folder and the data file live does not matter, only what the data holds: a run
        # folder copied or moved elsewhere still resumes.
        now = {**asdict(cfg), DATA_HASH: file_sha256(Path(cfg.data))}
        changed = sorted(k for k in now if k not in ("out", "data") and before.get(k) != now[k])
        if changed:
            raise HeadlabError(f"{saved}: field '{changed[0]}' differs from the run being resumed "
                               f"({before.get(changed[0])!r} there, {now[changed[0]]!r} now)")


def _checkpointing_argument(enabled: bool) -> dict:
    """Activation checkpointing under the name this transformers takes (renamed from gradient_checkpointing in 5.x)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


CHECKPOINT_MARKER = "headlab_complete.json"  # written last into a checkpoint: its files and their sha256
DATA_HASH = "data_sha256"


class MarkCompleteCheckpoints(TrainerCallback):
    """After the Trainer has written a checkpoint whole, record its files' hashes inside it.

    The Trainer writes checkpoint-N in place, file by file; a kill during that save leaves a folder that
    looks like a checkpoint. Only a checkpoint holding this marker, with every file matching it, is resumed.
    What it protects against is an interrupted save or a file changed afterwards, not an attacker: anyone who
    can write the folder can write matching hashes too. Against planted files the Trainer's own loading is
    the guard (every pickle it reads is loaded weights-only; a refusal is one line, see `finetune`).
    """

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                atomic_write_json(folder / CHECKPOINT_MARKER, _folder_hashes(folder))


def _folder_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKPOINT_MARKER}


def _checkpoint_complete(folder: Path) -> bool:
    try:
        recorded = json.loads((folder / CHECKPOINT_MARKER).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(recorded, dict) and bool(recorded) and recorded == _folder_hashes(folder)


def last_complete_checkpoint(checkpoints: Path, log=print) -> Path | None:
    """The newest checkpoint known complete; newer incomplete ones (a kill inside a save) are removed, so
    the Trainer's own rotation never counts them."""
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                   key=lambda p: int(p.name[11:]), reverse=True)
    for folder in found:
        if _checkpoint_complete(folder):
            return folder
        log(f"finetune: {folder} is incomplete (interrupted while saving); removed")
        shutil.rmtree(folder, ignore_errors=True)
    return None


def training_arguments(cfg: FinetuneConfig, n_rows: int):
    from transformers import TrainingArguments

    steps = cfg.steps or max(1, math.ceil(cfg.epochs * n_rows / (cfg.batch_size * cfg.grad_accum)))
    dtype = DTYPE_ALIASES.get(cfg.dtype, cfg.dtype)
    return TrainingArguments(
        output_dir=str(Path(cfg.out) / "checkpoints"), max_steps=steps, learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, lr_scheduler_type="linear",
        seed=cfg.seed, data_seed=cfg.seed, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, logging_steps=cfg.logging_steps, report_to="none",
        include_num_input_tokens_seen="non_padding", **_checkpointing_argument(cfg.gradient_checkpointing),
        bf16=dtype == "bfloat16", fp16=dtype == "float16",
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(), **cfg.extra)


def finetune(cfg: FinetuneConfig, resume: bool = False, callbacks: list | None = None) -> dict[str, Any]:
    """Fine-tune, save the final model under out/model, and return (and write) the summary.

    One run at a time per --out: a lock beside the folder (removed when done) makes a second run say which
    process holds it, before it reads or writes anything."""
    out = check_out(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out.with_name(f".{out.name}.lock"), out, remove=True):
        return _finetune(cfg, resume, callbacks)


def _finetune(cfg: FinetuneConfig, resume: bool, callbacks: list | None) -> dict[str, Any]:
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    cfg.check()
    _check_run_folder(cfg, resume)
    items = load_task_data(cfg.data)
    tokenizer, info, overrides = prepare(cfg)
    # Every row is checked against the target context before any weights are loaded.
    rows = encode_all(items, tokenizer, current_length(info.config), answer_only=cfg.loss_on == "answer")
    model = build_model(cfg, info)
    out = Path(cfg.out)
    checkpoint = last_complete_checkpoint(out / "checkpoints") if resume else None
    if resume and checkpoint is None:
        print(f"finetune: {out} has no complete checkpoint; training from step 0")
    try:  # before anything is written: TrainingArguments refuses some settings only now (bf16 on CPU, ...)
        train_args = training_arguments(cfg, len(rows))
    except (ValueError, TypeError) as e:
        raise HeadlabError(f"finetune: {str(e).strip().splitlines()[0]}") from None
    atomic_write_json(out / "config.json", {**asdict(cfg), DATA_HASH: file_sha256(Path(cfg.data))})
    atomic_write_json(out / EXTENSION_FILE, overrides)
    trainer = Trainer(model=model, args=train_args, train_dataset=TokenDataset(rows),
                      data_collator=PadCollator(tokenizer.pad_token_id), processing_class=tokenizer,
                      callbacks=[progress := ProgressBar(), MarkCompleteCheckpoints(), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)  # its per-log dict lines would break up the progress bar
    t0 = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except pickle.UnpicklingError as e:  # torch's weights-only loader refused a file of the checkpoint
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "not plain tensors"
        raise HeadlabError(f"{checkpoint}: a checkpoint file was refused by the weights-only loader ({reason}); "
                           "remove this checkpoint to resume from an earlier one") from None
    finally:  # on Ctrl-C the bar ends here, before `headlab: interrupted`, not after it at exit
        progress.on_train_end(None, None, None)
    seconds = time.perf_counter() - t0
    if trainer.state.global_step < trainer.state.max_steps:  # stopped early by a callback: no final model
        return {"stopped_at_step": trainer.state.global_step}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # before a merge unwraps LoRA
    if trainer.is_world_process_zero():
        save_final(trainer.model, tokenizer, cfg, overrides, out / "model")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {"steps": trainer.state.global_step, "rows": len(rows), "train_loss": result.training_loss,
               "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None,
               "tokens_seen": int(trainer.state.num_input_tokens_seen), "seconds": round(seconds, 2),
               "tokens_per_second": round(trainer.state.num_input_tokens_seen / max(seconds, 1e-9), 1),
               "context_length": current_length(model.config), "extension": overrides,
               "trainable_parameters": trainable,
               "log_history": trainer.state.log_history}
    if trainer.is_world_process_zero():
        atomic_write_json(out / "summary.json", summary)
    return summary


def save_final(model, tokenizer, cfg: FinetuneConfig, overrides: dict, path: Path) -> None:
    """A folder headlab's loader (and `from_pretrained`) loads: full weights, merged LoRA, or a PEFT adapter that
    names its base."""
    is_peft = hasattr(model, "peft_config")
    tmp = path.with_name(path.name + ".partial")  # written whole, then renamed: no half-saved model
    shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
    if is_peft and not cfg.merge:
        model.peft_config["default"].base_model_name_or_path = _base_name(cfg.model)
        # On an adapter base PEFT would look for config.json in the adapter folder to see whether the vocabulary
        # grew, and warn; headlab never resizes it, so there are no embedding weights to save.
        on_adapter = (Path(cfg.model).expanduser() / ADAPTER_CONFIG).is_file()
        model.save_pretrained(tmp, **({"save_embedding_layers": False} if on_adapter else {}))
        # Loading the adapter rebuilds the base from its own config; these overrides restore the extension
        # (headlab.model.loading reads them; plain transformers: from_pretrained(adapter_dir, **overrides)).
        atomic_write_json(tmp / EXTENSION_FILE, overrides)
    else:
        merged = model.merge_and_unload() if is_peft else model
        merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if path.exists():
        raise HeadlabError(f"{path}: already exists")
    tmp.rename(path)


def _base_name(name: str) -> str:
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name
