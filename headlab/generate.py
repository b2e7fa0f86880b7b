"""Batched greedy generation with a KV cache.

Prompts are left-padded, position ids come from the attention mask, each step feeds one token per row and a
row stops at a stop token (EOS, and newline tokens unless `stop_at_newline=False`), which is not part of its
response. Every forward goes through `model(...)`, so seam hooks and forward pre-hooks see every step.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from headlab.data.prompts import pad_id_of
from headlab.errors import HeadlabError
from headlab.seam import cache_kwargs, input_device, output_cache


@lru_cache(maxsize=8)
def newline_token_ids(tokenizer) -> frozenset[int]:
    """Every vocabulary entry whose text contains a newline."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return frozenset(i for i, t in enumerate(texts) if "\n" in t)


def stop_ids(model: nn.Module, tokenizer, stop_at_newline: bool = True) -> set[int]:
    """EOS ids of the tokenizer and the generation config, plus newline tokens when asked."""
    stops: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for source in (tokenizer.eos_token_id, getattr(gen, "eos_token_id", None)):
        if source is not None:
            stops.update(source if isinstance(source, list) else [source])
    if stop_at_newline:
        stops |= newline_token_ids(tokenizer)
    return stops


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [batch, width] with every prompt right-aligned."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def greedy_batch(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, stops: set[int],
                 max_new_tokens: int) -> list[list[int]]:
    """Greedy-decode one left-padded batch; each row's generated ids, its stop token left out."""
    mask = attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, cache = input_ids, None
    active = [True] * input_ids.shape[0]
    responses: list[list[int]] = [[] for _ in active]
    for _ in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache))
        cache = output_cache(out)
        token = out.logits[:, -1].argmax(-1)  # (B,)
        for row, t in enumerate(token.tolist()):
            if active[row]:
                if t in stops:
                    active[row] = False
                else:
                    responses[row].append(t)
        if not any(active):
            break
        step_ids = token[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
    return responses


def greedy_generate(model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int = 32,
                    batch_size: int = 8, stop_at_newline: bool = True) -> list[list[int]]:
    """Greedy responses for many prompts, batched by length; returned in the input order."""
    if batch_size < 1:
        raise HeadlabError(f"generation: field 'batch_size' must be >= 1, got {batch_size}")
    for i, p in enumerate(prompts):
        if not p:
            raise HeadlabError(f"generation: prompt {i} is empty")
    stops = stop_ids(model, tokenizer, stop_at_newline)
    pad_id = pad_id_of(tokenizer)
    device = input_device(model)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: dict[int, list[int]] = {}
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        ids, mask = left_pad([prompts[i] for i in idx], pad_id, device)
        for i, response in zip(idx, greedy_batch(model, ids, mask, stops, max_new_tokens), strict=True):
            out[i] = response
    return [out[i] for i in range(len(prompts))]
