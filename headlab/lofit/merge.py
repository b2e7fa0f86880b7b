"""Fold LoFiT adapters into the attention output projections and save a plain transformers checkpoint.

For z' = (1 + a) * z + v (a, v flattened over heads to the projection's input size), a projection
y = W z + b becomes y = W' z + b' with W' = W * (1 + a) (per input column) and b' = b + W v (original W).
Offsets need a bias on the output projection; the family's row (headlab/model/families.py, `out_bias`) says
how to get one:

- GPT-2 (`c_proj`, a Conv1D storing W as [in, out]) already has one;
- Llama, Gemma, Qwen3 and friends: a config flag (`attention_bias`; Starcoder2's `use_bias`) adds biases, and
  the ones the offsets do not need get zeros;
- Mistral and Qwen2 hard-code `o_proj` without a bias; with no sliding window they compute exactly what a
  Llama with `attention_bias=True` computes (Qwen2's q/k/v biases carry over, Mistral's are zero), so the
  merged checkpoint is written as a Llama (`merge_as_llama`).

The merged model is checked against the hooked one before it is written (max |logit difference|).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from headlab.core.errors import HeadlabError
from headlab.lofit.adapter import LofitAdapter, apply_adapters
from headlab.model.families import FAMILIES, family_of
from headlab.model.seam import Seam


def _flat_layer_deltas(adapters: Sequence[LofitAdapter], layer: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The combined (scale factor, offset) of `layer` over adapters applied in order, flattened to [in]."""
    g = adapters[0].geometry
    factor = torch.ones(g.n_heads, g.head_dim, dtype=torch.float64)
    offset = torch.zeros(g.n_heads, g.head_dim, dtype=torch.float64)
    touched = False
    for adapter in adapters:
        if layer not in adapter.layers():
            continue
        touched = True
        a, v = adapter.dense(layer)
        if a is not None:  # (1+a) * (f z + o) + v = (1+a) f z + ((1+a) o + v)
            s = 1 + a.detach().double().cpu()
            factor, offset = factor * s, offset * s
        if v is not None:
            offset = offset + v.detach().double().cpu()
    return factor.reshape(-1), offset.reshape(-1), touched


def _fold(proj: nn.Module, factor: torch.Tensor, offset: torch.Tensor, conv1d: bool) -> None:
    """Fold z -> factor * z + offset into `proj` in place (adds a bias parameter when it has none).
    `conv1d`: y = z @ W + b with W [in, out] (GPT-2), else y = W z + b."""
    w = proj.weight
    w64 = w.detach().double()
    shift = offset.to(w.device) @ w64 if conv1d else w64 @ offset.to(w.device)
    with torch.no_grad():
        scaled = w64 * (factor.to(w.device)[:, None] if conv1d else factor.to(w.device)[None, :])
        w.copy_(scaled.to(w.dtype))
        if proj.bias is None:
            if not offset.any():
                return
            proj.bias = nn.Parameter(torch.zeros(w.shape[1] if conv1d else w.shape[0], dtype=w.dtype,
                                                 device=w.device))
        proj.bias.copy_((proj.bias.double() + shift).to(w.dtype))


def _merged_config(config, needs_bias: bool):
    """The config of the merged checkpoint and whether it changes architecture."""
    from transformers import LlamaConfig

    config = copy.deepcopy(config)
    if not needs_bias:
        return config
    family = family_of(config)
    if family.out_bias is True:
        return config
    if isinstance(family.out_bias, str):
        setattr(config, family.out_bias, True)
        return config
    if family.merge_as_llama:
        if family.windowed(config):
            raise HeadlabError(f"cannot merge offsets into {family.name} with a sliding window: its output "
                               "projection has no bias and no bias-capable equivalent architecture")
        d = config.to_dict()
        window_fields = {name for row in FAMILIES.values() for name in row.window}  # Llama has none of them
        for key in ("model_type", "architectures", "transformers_version", *sorted(window_fields)):
            d.pop(key, None)
        d["attention_bias"], d["architectures"] = True, ["LlamaForCausalLM"]
        return LlamaConfig(**d)
    raise HeadlabError(f"cannot merge offsets into a {family.name} model: its attention output projection has no "
                       "bias and no config flag adds one")


def merge_into_model(model: nn.Module, adapters: Sequence[LofitAdapter]) -> nn.Module:
    """A new model with the adapters folded in and no hooks; `model` itself is left unchanged."""
    from transformers import AutoModelForCausalLM

    if not adapters:
        raise HeadlabError("merge: no adapters given")
    seam = Seam.attach(model)
    n_layers = seam.geometry.n_layers
    deltas = [_flat_layer_deltas(adapters, layer) for layer in range(n_layers)]
    needs_bias = any(off.any() and seam.layers[i][1].bias is None for i, (_, off, _) in enumerate(deltas))
    config = _merged_config(model.config, bool(needs_bias))
    config._attn_implementation = None  # the seam's wrapper name must not leak into a plain checkpoint
    merged = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype,
                                              attn_implementation=seam.inner_implementation)
    state = model.state_dict()
    missing, unexpected = merged.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(".bias") for k in missing):
        raise HeadlabError(f"merge: cannot map weights into {type(merged).__name__} "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        params = dict(merged.named_parameters())
        for k in missing:  # biases that exist only because of attention_bias: zero keeps the function
            params[k].zero_()
    merged.tie_weights()
    projections = _projections(merged, n_layers)
    conv1d = family_of(merged).conv1d
    for layer, (factor, offset, touched) in enumerate(deltas):
        if touched:
            _fold(projections[layer], factor, offset, conv1d)
    return merged.to(next(model.parameters()).device).eval()


def _projections(model: nn.Module, n_layers: int) -> list[nn.Module]:
    # Attaching a Seam to the merged model would switch its attention implementation to headlab's wrapper,
    # so look the projections up the seam's way without attaching.
    from headlab.model.seam import find_attention_layers

    return [proj for _, proj in find_attention_layers(model, n_layers)]


@torch.no_grad()
def max_logit_difference(model: nn.Module, merged: nn.Module, adapters: Sequence[LofitAdapter],
                         input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> float:
    """max |logits(hooked model) - logits(merged model)| on a batch."""
    with apply_adapters(model, *adapters):
        hooked = model(input_ids=input_ids, attention_mask=attention_mask).logits
    plain = merged(input_ids=input_ids, attention_mask=attention_mask).logits
    return float((hooked.float() - plain.float()).abs().max())


def save_merged(merged: nn.Module, tokenizer, out: str | Path) -> Path:
    """Write the merged checkpoint (safetensors) and tokenizer; plain `from_pretrained` loads it."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    merged.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # a folder appears whole or not at all
    return out
