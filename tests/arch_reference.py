"""Plain references for the architecture and sliding-window parity tests: no seam, no KV cache.

Every reference recomputes the whole sequence at each step (so key indices are sequence positions by
construction) and reaches into the model only through its standard layout and ordinary PyTorch forward hooks.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from transformers.cache_utils import DynamicCache


def attention_module(model: nn.Module, layer: int) -> nn.Module:
    """The self-attention module of `layer` in the usual layouts (decoder `layers[i].self_attn`, GPT-2 `h[i].attn`)."""
    base = model.base_model
    return base.layers[layer].self_attn if hasattr(base, "layers") else base.h[layer].attn


def sliding_layers(model: nn.Module) -> list[int]:
    """Layers whose KV cache keeps only a window (the cache transformers builds for this config)."""
    return [i for i, layer in enumerate(DynamicCache(config=model.config).layers) if layer.is_sliding]


def _query_output(attn: nn.Module, width: int) -> nn.Module:
    """The module whose output starts with the queries of every head, [.., n_heads * d_head], before RoPE."""
    norm = getattr(attn, "q_norm", None)
    if norm is not None and norm.weight.numel() == width:  # OLMo 2 normalises all heads together: after it
        return norm
    for name in ("q_proj", "qkv_proj", "c_attn"):  # a per-head q norm (Qwen3, Gemma 3) keeps a zero query zero
        if hasattr(attn, name):
            return getattr(attn, name)
    raise AssertionError(f"no query projection in {type(attn).__name__}")


@contextmanager
def zero_queries(model: nn.Module, heads: list[str], start: int = 0):
    """Zero the query of `heads` ("L-H") at every position >= `start`: the uniform knockout, by definition
    (RoPE of a zero query is zero; soft-capping of a zero score is zero), with ordinary forward hooks."""
    n_heads = model.config.num_attention_heads
    d = model.config.hidden_size // n_heads if getattr(model.config, "head_dim", None) is None \
        else model.config.head_dim

    def hook_for(cols: list[slice]):
        def hook(module, args, output):
            output = output.clone()
            for c in cols:
                output[:, start:, c] = 0
            return output

        return hook

    by_layer: dict[int, list[slice]] = {}
    for name in heads:
        layer, h = map(int, name.split("-"))
        by_layer.setdefault(layer, []).append(slice(h * d, (h + 1) * d))
    with ExitStack() as stack:
        for layer, cols in by_layer.items():
            module = _query_output(attention_module(model, layer), n_heads * d)
            stack.callback(module.register_forward_hook(hook_for(cols)).remove)
        yield


def zero_output_columns(model: nn.Module, layer: int, head: int, d: int) -> None:
    """Zero the output projection's input columns of one head, in place (GPT-2's Conv1D stores (in, out))."""
    attn = attention_module(model, layer)
    proj = attn.o_proj if hasattr(attn, "o_proj") else attn.c_proj
    cols = slice(head * d, (head + 1) * d)
    with torch.no_grad():
        if isinstance(proj, nn.Linear):
            proj.weight[:, cols] = 0
        else:
            proj.weight[cols, :] = 0


@torch.no_grad()
def no_cache_greedy(model: nn.Module, prompt: list[int], max_new_tokens: int,
                    stops: frozenset[int] = frozenset({2})) -> list[int]:
    """Greedy decoding that recomputes the whole sequence every step (no KV cache); the stop token is left out."""
    ids, out = list(prompt), []
    for _ in range(max_new_tokens):
        t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if t in stops:
            break
        out.append(t)
        ids.append(t)
    return out


def check_uniform_knockout_all_positions(model: nn.Module, reference: nn.Module, heads: list[str], ids: torch.Tensor,
                                        mask: torch.Tensor, pos: torch.Tensor, pad: int) -> None:
    """Uniform knockout at every position equals the eager copy with those heads' queries zeroed (row 1 is
    left-padded by `pad`), and it changes the logits."""
    from headlab.mech.interventions import knockout

    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        with knockout(model, heads, mode="uniform", where="all"):
            got = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        with zero_queries(reference, heads):
            want = reference(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, pad:], want[1, pad:], atol=1e-5, rtol=1e-5)
    # Far above the 1e-5 tolerance, relative to the logits' size: Cohere 2 scales its logits down 16x, and Gemma's
    # embeddings (scaled by sqrt(hidden)) dwarf a tiny random attention's output.
    assert (got - base).abs().max() > 0.005 * base.abs().max()
