"""The training loop LoFiT steps and baselines share: answer-only supervised loss or DPO, Adam, a progress bar.

The loop trains whatever tensors it is given (adapter scales, offsets, LoRA matrices) and never touches the
model's own weights, so every method sees the same data, batches, steps and learning rate.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from headlab.core.errors import HeadlabError
from headlab.core.progress import progress_bar
from headlab.data.prompts import encode_prompt, pad_id_of
from headlab.lofit.datasets import Completion, Preference


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 5e-3
    batch_size: int = 8
    beta: float = 0.1            # DPO temperature
    seed: int = 0

    def check(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise HeadlabError(f"training config: field '{name}' must be >= 1")
        if not self.lr > 0 or not self.beta > 0:
            raise HeadlabError("training config: fields 'lr' and 'beta' must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def encode_pair(tokenizer, prompt: str, completion: str) -> tuple[list[int], int]:
    """(ids of prompt + completion, number of prompt tokens). The prompt is tokenized alone, as at generation.

    Plain template: the answer follows a space and ends with a newline (the stop token headlab generates
    to); chat template: it follows the generation prompt directly and ends with EOS.
    """
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompt_ids = encode_prompt(tokenizer, prompt)
    sep = "" if chat or prompt.endswith((" ", "\n")) else " "
    answer = tokenizer(sep + completion + ("" if chat else "\n"), add_special_tokens=False)["input_ids"]
    if chat and tokenizer.eos_token_id is not None:
        answer = [*answer, tokenizer.eos_token_id]
    return prompt_ids + answer, len(prompt_ids)


def collate(pairs: Sequence[tuple[list[int], int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, and a mask of the completion tokens (the ones the loss sees)."""
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for i, (seq, n_prompt) in enumerate(pairs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        target[i, n_prompt: len(seq)] = True
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "target": target.to(device)}


def token_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each next token [B, T-1], mask of completion positions [B, T-1])."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    taken = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return taken, batch["target"][:, 1:]


def sequence_logprob(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of each row's completion [B]."""
    taken, target = token_logprobs(model, batch)
    return (taken * target).sum(-1)


def supervised_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood over completion tokens only (the prompt is context, not a target)."""
    taken, target = token_logprobs(model, batch)
    return -(taken * target).sum() / target.sum().clamp(min=1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta * (policy margin - reference margin)), batch mean."""
    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))).mean()


@torch.no_grad()
def reference_logprobs(model, tokenizer, prefs: Sequence[Preference], batch_size: int) -> torch.Tensor:
    """[n, 2] (chosen, rejected) log-probs under `model` as it is now: call before adding trainable parts."""
    device = next(model.parameters()).device
    rows = []
    for i in range(0, len(prefs), batch_size):
        chunk = prefs[i: i + batch_size]
        enc = [encode_pair(tokenizer, p.prompt, c) for p in chunk for c in (p.chosen, p.rejected)]
        rows.append(sequence_logprob(model, collate(enc, pad_id_of(tokenizer), device)).view(-1, 2))
    return torch.cat(rows).cpu()


def train(model, tokenizer, params: Sequence[torch.nn.Parameter], records: Sequence[Completion | Preference],
          config: TrainConfig, after_step: Callable[[float], None] | None = None, reference: torch.Tensor | None = None,
          desc: str = "train") -> list[float]:
    """Train `params` on `records` (supervised, or DPO given `reference` log-probs); returns the loss per step.

    `after_step(lr)` runs after each optimizer step (step 1 applies its L1 proximal step there).
    """
    config.check()
    if not records:
        raise HeadlabError("training: no records")
    is_dpo = isinstance(records[0], Preference)
    if is_dpo and reference is None:
        raise HeadlabError("training: preference records need reference log-probs (reference_logprobs)")
    device = next(model.parameters()).device
    encoded = ([(encode_pair(tokenizer, r.prompt, r.chosen), encode_pair(tokenizer, r.prompt, r.rejected))
                for r in records] if is_dpo else [encode_pair(tokenizer, r.prompt, r.completion) for r in records])
    optimizer = torch.optim.Adam(params, lr=config.lr)
    rng = random.Random(config.seed)
    order = list(range(len(records)))
    steps = config.epochs * ((len(order) + config.batch_size - 1) // config.batch_size)
    losses: list[float] = []
    bar = progress_bar(total=steps, desc=desc, leave=False)
    for _ in range(config.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            idx = order[start: start + config.batch_size]
            if is_dpo:
                batch = collate([e for i in idx for e in encoded[i]], pad_id_of(tokenizer), device)
                logp = sequence_logprob(model, batch).view(-1, 2)
                ref = reference[idx].to(device)
                loss = dpo_loss(logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1], config.beta)
            else:
                loss = supervised_loss(model, collate([encoded[i] for i in idx], pad_id_of(tokenizer), device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(config.lr)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    return losses
