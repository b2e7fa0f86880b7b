"""Baselines for LoFiT on the same data and training loop: LoRA (PEFT), random heads, transferred heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from headlab.lofit.datasets import Completion, Preference
from headlab.lofit.train import TrainConfig, reference_logprobs, train
from headlab.model.families import family_of


def train_lora(model, tokenizer, records: Sequence[Completion | Preference], config: TrainConfig,
               rank: int = 8, alpha: int = 16, targets: Sequence[str] | None = None):
    """Wrap `model` with LoRA (PEFT) and train it with the shared loop; returns (peft model, loss per step)."""
    from peft import LoraConfig, get_peft_model

    from headlab.model.model_check import check_lora_rank

    check_lora_rank(rank, model.config, "rank")
    reference = None
    if isinstance(records[0], Preference):  # the reference is the model before LoRA
        reference = reference_logprobs(model, tokenizer, records, config.batch_size)
    modules = list(targets or family_of(model).lora_qv)  # the LoRA paper's q and v, per the family's row
    torch.manual_seed(config.seed)  # LoRA initialises A randomly: same seed, same run
    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=modules, lora_dropout=0.0, bias="none")
    from headlab.core.quiet import peft_wrapping

    with peft_wrapping():
        peft_model = get_peft_model(model, lora)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    losses = train(peft_model, tokenizer, params, records, config, reference=reference, desc="lora")
    return peft_model.eval(), losses


def n_trainable(params) -> int:
    return sum(p.numel() for p in params)
