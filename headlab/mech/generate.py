"""headlab's one greedy decoder: a batch of prompts, a KV cache, per-row stop tokens, a per-step callback.

Every token-by-token decode in the package runs here: generation (`greedy_generate`: evaluation, knockout,
patching, chain of thought, LoFiT and toy answers) and retrieval-head detection (`detect.greedy_copy_scores`
counts copies in the callback). Every forward goes through `model(...)`, so seam hooks, seam captures and
forward pre-hooks see every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from functools import lru_cache

import torch
from torch import nn

from headlab.core.errors import HeadlabError
from headlab.data.prompts import pad_id_of
from headlab.model.seam import cache_kwargs, input_device, output_cache

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
"""`on_step(step, tokens, live)`, called right after each forward (step 0 is the prompt's). `tokens` [batch]:
the greedy token of every row at this step; `live` [batch] bool: the rows still decoding, whose token this
is (a row's stop token is included; a row that stopped earlier is not). Both sit on the input device."""


@lru_cache(maxsize=8)
def newline_token_ids(tokenizer) -> frozenset[int]:
    """Every vocabulary entry whose text contains a newline."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return frozenset(i for i, t in enumerate(texts) if "\n" in t)


def stop_ids(model: nn.Module, tokenizer, stop_at_newline: bool = True) -> set[int]:
    """headlab's one stop rule: the EOS ids of the tokenizer and of the model's generation config, plus, when
    `stop_at_newline`, every token whose text contains a newline (`newline_token_ids`).

    Any newline-bearing token stops, not only the exact "\\n" token, so a response ends at its first line break
    however the tokenizer merges it ("\\n\\n", ".\\n" in Llama-3/Qwen2-style vocabularies). What such a token
    holds before its newline is punctuation or spaces in those vocabularies (their pre-tokenizers never join
    a letter or digit to a newline) and is dropped with the stop token.
    """
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
def greedy_decode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  stops: Sequence[Set[int]], max_new_tokens: int, on_step: StepCallback | None = None,
                  keep_stop: bool = False) -> list[list[int]]:
    """Greedy-decode one left-padded batch; each row's generated ids.

    Position ids come from the attention mask, the prompt is prefilled in one forward and each later step
    feeds one token per row through the KV cache. Row r stops after generating a token in `stops[r]` (build
    the sets with `stop_ids`) or after `max_new_tokens` tokens; its stop token ends its response only when
    `keep_stop` (detection scores and reports it, generation leaves it out). Rows that stopped keep being fed
    their greedy tokens until every row has stopped; `on_step` says which rows are still live.
    """
    batch = input_ids.shape[0]
    if len(stops) != batch:
        raise ValueError(f"greedy_decode: {len(stops)} stop sets for a batch of {batch}")
    device = input_ids.device
    mask = attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, cache = input_ids, None
    alive = [True] * batch
    live = torch.ones(batch, dtype=torch.bool, device=device)
    responses: list[list[int]] = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **cache_kwargs(model, cache))
        cache = output_cache(out)
        tokens = out.logits[:, -1].argmax(-1).to(device)  # [batch]; the last layer may sit on another device
        if on_step is not None:
            on_step(step, tokens, live)
        for row, t in enumerate(tokens.tolist()):
            if alive[row]:
                stopped = t in stops[row]
                if keep_stop or not stopped:
                    responses[row].append(t)
                alive[row] = not stopped
        if not any(alive):
            break
        live = torch.tensor(alive, dtype=torch.bool, device=device)  # a new tensor: a callback may keep the old
        step_ids = tokens[:, None]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
    return responses


def greedy_generate(model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int = 32,
                    batch_size: int = 8, stop_at_newline: bool = True) -> list[list[int]]:
    """Greedy responses for many prompts, batched by length, stop tokens left out (`stop_ids`'s rule);
    returned in the input order."""
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
        for i, response in zip(idx, greedy_decode(model, ids, mask, [stops] * len(idx), max_new_tokens),
                                strict=True):
            out[i] = response
    return [out[i] for i in range(len(prompts))]
