"""Benchmark: headlab's fine-tuning (transformers Trainer) against a plain PEFT + PyTorch loop.

Same model, same LoRA config, same data, same batch size, optimizer (AdamW, linear decay, grad-norm clip 1.0)
in the same process; the two alternate (ABBA) for `--rounds` rounds so load on a shared machine hits both alike.
Throughput is measured in steady state: the median over steps after `--skip` of non-padding tokens per
second of that step (model loading, the first steps and checkpoint writing excluded; the median keeps a
load spike from another process on the shared machine from deciding the result). Target: headlab >= 0.9x plain.

    python bench/finetune.py [--model DIR] [--length 1024] [--steps 10] [--batch-size 2] [--rounds 2]

Without --model: the shipped tiny model when present, else a random Llama of its shape with the toy tokenizer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from headlab.data.example import save_examples
from headlab.data.tasks import GenConfig, generate_examples
from headlab.data.training import encode_all, load_task_data
from headlab.experiments.finetune import (
    FinetuneConfig,
    PadCollator,
    TokenDataset,
    build_model,
    prepare,
    training_arguments,
)
from headlab.model.loading import current_length


def random_toy_model(folder: Path) -> str:
    """A random Llama shaped like the shipped one (toy tokenizer), saved to `folder`."""
    from transformers import LlamaForCausalLM

    from headlab.toy.pretrain import PretrainConfig, llama_config
    from headlab.toy.tokenizer import train_tokenizer

    cfg = PretrainConfig()
    tok = train_tokenizer(cfg.seed, cfg.vocab_size, model_max_length=cfg.seq_len)
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(cfg, tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


class StepClock(TrainerCallback):
    """(time, tokens seen) at the end of every optimizer step."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))


def rate(marks: list[tuple[float, int]], skip: int) -> float:
    """Median over steps after `skip` of tokens / seconds: robust to load spikes from other processes."""
    per_step = [(n1 - n0) / (t1 - t0) for (t0, n0), (t1, n1) in zip(marks[skip - 1:-1], marks[skip:], strict=True)]
    return statistics.median(per_step)


def run_headlab(cfg: FinetuneConfig, rows, info, skip: int) -> float:
    model = build_model(cfg, info)
    clock = StepClock()
    args = training_arguments(cfg, len(rows))
    args.save_strategy = "no"
    trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(rows),
                      data_collator=PadCollator(0), callbacks=[clock])
    trainer.train()
    return rate(clock.marks, skip)


def run_plain(cfg: FinetuneConfig, rows, info, skip: int) -> float:
    """The loop a researcher would write by hand with PEFT and PyTorch."""
    model = build_model(cfg, info)  # the same PEFT-wrapped model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / cfg.steps)
    loader = torch.utils.data.DataLoader(TokenDataset(rows), batch_size=cfg.batch_size, shuffle=True,
                                         collate_fn=PadCollator(0), generator=torch.Generator().manual_seed(0))
    marks, tokens, step = [], 0, 0
    while step < cfg.steps:
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            step += 1
            marks.append((time.perf_counter(), tokens))
            if step == cfg.steps:
                break
    return rate(marks, skip)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model folder (default: shipped tiny model, else a random one of its shape)")
    p.add_argument("--length", type=int, default=1024, help="prompt tokens of the training examples")
    p.add_argument("--examples", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--skip", type=int, default=2, help="steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", help="write the figures to this JSON file")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ft-"))
    model = a.model
    if model is None:
        from headlab.model.loading import default_model_dir

        shipped = default_model_dir()
        model = str(shipped) if (shipped / "config.json").is_file() else random_toy_model(tmp / "model")
    # Prompts fill `length` tokens; the context also holds the answer after them.
    cfg = FinetuneConfig(model=model, data=str(tmp / "train.jsonl"), out=str(tmp / "run"), context_length=a.length + 32,
                         steps=a.steps, batch_size=a.batch_size, lr=1e-3, logging_steps=10**6)
    tokenizer, info, _ = prepare(cfg)
    save_examples(generate_examples(GenConfig("mdqa", "real", "diverse", n=a.examples, length=a.length, seed=0),
                                    tokenizer), cfg.data)
    rows = encode_all(load_task_data(cfg.data), tokenizer, current_length(info.config))
    headlab_rates, plain_rates = [], []
    for r in range(a.rounds):  # ABBA order, so a drift in machine load favours neither
        runs = [(headlab_rates, run_headlab), (plain_rates, run_plain)]
        for rates, run in runs if r % 2 == 0 else runs[::-1]:
            rates.append(run(cfg, rows, info, a.skip))
    result = {"model": model, "length": a.length, "batch_size": a.batch_size, "steps": a.steps,
              "threads": torch.get_num_threads(), "headlab_tokens_per_s": headlab_rates,
              "plain_tokens_per_s": plain_rates, "ratio_of_medians": statistics.median(headlab_rates)
              / statistics.median(plain_rates)}
    print(json.dumps(result, indent=2))
    if a.out:
        from headlab.core.io import atomic_write_json

        atomic_write_json(a.out, result)


if __name__ == "__main__":
    main()
