"""The model seam: the one module that reaches into a model's internals.

Everything headlab does to a model goes through a `Seam`:

- head geometry (layers, query heads, kv heads, head dim);
- per-head hooks on `z`, the input of each layer's attention output projection, shaped
  `[batch, pos, head, d_head]` (read it, or return a replacement);
- per-head hooks on the attention query `[batch, head, pos, d_head]` (after RoPE), used by knockout;
- the top-1 attended key of the last query position, for every head of every layer, computed from the
  query and the cached keys only (never a full attention matrix), and reported as an absolute position of
  the sequence: a sliding-window layer's cache keeps only its last keys, and the seam maps its indices back.

The query-side hooks work by registering one wrapper attention function per inner implementation
(`sdpa`, `eager`, `flash_attention_2`) with transformers' AttentionInterface, so the model keeps its own
fast attention and no model file is forked.

Loading a model (folder, hub id, GGUF file, PEFT adapter) is headlab/model/loading.py; the head geometry is
headlab/model/geometry.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from inspect import signature

import torch
from torch import nn

from headlab.core.errors import HeadlabError
from headlab.model.attention_rows import AttentionCall, attention_call
from headlab.model.families import family_of
from headlab.model.geometry import head_geometry

ZHook = Callable[[torch.Tensor], torch.Tensor | None]  # z [batch, pos, head, d_head] -> replacement or None
QueryHook = Callable[[torch.Tensor], torch.Tensor]  # query [batch, head, pos, d_head] -> query
AttentionObserver = Callable[[int, AttentionCall], None]  # (layer, the call's query, keys, mask and settings)

_WRAPPED_PREFIX = "headlab_"


def input_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go. Under a device map it is accelerate's main device (the first one that is not
    CPU or disk; its hooks move activations between layers); otherwise the device of the parameters."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        devices = [d for d in device_map.values() if d not in ("cpu", "disk")]
        first = devices[0] if devices else "cpu"
        return torch.device("cuda", first) if isinstance(first, int) else torch.device(first)
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------------------
# The KV cache keyword: transformers 5.x renamed `past_key_values` to `cache` (the old name warns from 5.24 and is
# removed in 5.40). Every forward that passes or reads a cache goes through these, so both ends of the supported
# range work without a deprecation warning.

_CACHE_NAMES = ("cache", "past_key_values")


def cache_keyword(model: nn.Module) -> str:
    """The keyword this model's forward takes its KV cache by: `cache` (newer transformers) or `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper forwards **kwargs
    params = signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: nn.Module, cache) -> dict:
    """`{keyword: cache}` for one forward call of `model`."""
    return {cache_keyword(model): cache}


def output_cache(output):
    """The KV cache a forward returned, under whichever name this transformers version uses."""
    for name in _CACHE_NAMES:
        if name in output:  # ModelOutput is a mapping of the fields that were set
            return output[name]
    return None


def passed_cache(kwargs: dict):
    """The KV cache passed to a forward, under either keyword (generate uses the newer one when it can)."""
    for name in _CACHE_NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


# --------------------------------------------------------------------------------------------------------
# Attention wrapper: registered once per inner implementation, dispatches to the seam of the module.


def _inner_attention(module: nn.Module, inner_name: str) -> Callable:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if inner_name == "eager":
        # Each model file defines its own eager function (GPT-2 differs from Llama); use the module's.
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise HeadlabError(f"{type(module).__name__}: no eager_attention_forward in its model file")
        return fn
    return ALL_ATTENTION_FUNCTIONS[inner_name]


def _make_wrapper(inner_name: str) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        seam: Seam | None = getattr(module, "_headlab_seam", None)
        if seam is not None:
            query = seam._on_attention(module._headlab_layer, query, key, attention_mask,
                                       kwargs.get("sliding_window"), module, kwargs, value)
        return _inner_attention(module, inner_name)(module, query, key, value, attention_mask, *args, **kwargs)

    return attention


def _register_wrapper(inner_name: str) -> str:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = _WRAPPED_PREFIX + inner_name
    if name not in ALL_ATTENTION_FUNCTIONS:
        if inner_name not in ALL_MASK_ATTENTION_FUNCTIONS:
            raise HeadlabError(f"attention implementation '{inner_name}' is not supported by headlab")
        ALL_ATTENTION_FUNCTIONS.register(name, _make_wrapper(inner_name))
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner_name])
    return name


def _architecture(model: nn.Module) -> str:
    """`model_type (ClassName)`, the name an error about an unsupported model gives."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return f"{getattr(base.config, 'model_type', '?')} ({type(base).__name__})"


def check_supported(model: nn.Module) -> None:
    """One clear line for a model the seam cannot hook: its attention must go through AttentionInterface."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "_supports_attention_backend", False):
        raise HeadlabError(
            f"unsupported architecture {_architecture(model)}: its attention does not go through transformers' "
            f"AttentionInterface, which every headlab hook needs"
        )


def find_attention_layers(model: nn.Module, n_layers: int) -> list[tuple[nn.Module, nn.Module]]:
    """(attention module, output projection) per layer, in layer order, as the model's family row names them."""
    family = family_of(model)
    found = [(m, getattr(m, family.out_proj)) for m in model.modules() if family.is_attention(m)]
    if len(found) != n_layers:
        raise HeadlabError(
            f"unsupported architecture {_architecture(model)}: expected {n_layers} attention modules holding "
            f"{', '.join(family.projections)}, found {len(found)}"
        )
    return found


def check_implementation(model: nn.Module, inner: str) -> None:
    """One line for an attention implementation known not to compute the family (sdpa cannot soft-cap Gemma 2's
    logits nor add gpt-oss's sinks); flash attention, which the table cannot check without a GPU, passes."""
    family = family_of(model)
    if inner in ("sdpa", "eager") and inner not in family.attention:
        raise HeadlabError(f"{family.name}: attention implementation {inner} does not compute this family exactly; "
                           f"use {' or '.join(family.attention)}")


class CachedLengths:
    """Keys each layer's cache held before the current forward (what turns key slots into positions)."""

    def __init__(self, n_layers: int):
        self.lengths = [0] * n_layers

    def note_cached(self, layer: int, n: int) -> None:
        self.lengths[layer] = n


class Top1Recorder:
    """Collects, per forward pass, the top-1 key position of the last query for every layer and head."""

    def __init__(self, n_layers: int):
        self._per_layer: list[torch.Tensor | None] = [None] * n_layers
        self._cached: list[int] = [0] * n_layers  # keys each layer's cache held before this forward

    def note_cached(self, layer: int, n: int) -> None:
        self._cached[layer] = n

    def record(self, layer: int, top1: torch.Tensor, n_query: int, n_key: int) -> None:
        """`top1` [batch, head] indexes the `n_key` keys the attention call saw; store absolute positions.

        A dynamic cache hands attention a suffix of the sequence: all of it for a full layer, its last keys for
        a sliding-window layer (`DynamicSlidingWindowLayer`). The sequence ends at cached + n_query, so key
        slot j is position end - n_key + j, whichever layer this is.
        """
        first = self._cached[layer] + n_query - n_key
        if first < 0:
            raise HeadlabError(f"top-1 capture: layer {layer} saw {n_key} keys but the sequence holds "
                               f"{self._cached[layer] + n_query}; only dynamic KV caches are supported")
        self._per_layer[layer] = top1 + first

    def pop(self) -> torch.Tensor:
        """Top-1 key positions of the last forward, [batch, layer, head]: absolute positions of the sequence
        (the left-padded input, then every token fed since), whatever the KV cache keeps."""
        if any(t is None for t in self._per_layer):
            raise RuntimeError("top-1 capture saw no attention call for some layer")
        first = self._per_layer[0].device  # layers may sit on different devices (a device map)
        out = torch.stack([t.to(first) for t in self._per_layer], dim=1)
        self._per_layer = [None] * len(self._per_layer)
        return out


def _cached_length(cache, layer_idx: int) -> int:
    """Tokens a layer's KV cache has seen before this forward (0 without a cache)."""
    if cache is None:
        return 0
    from transformers.cache_utils import DynamicLayer

    cache = getattr(cache, "self_attention_cache", cache)  # EncoderDecoderCache (GPT-2 with cross-attention)
    layers = getattr(cache, "layers", None)
    if layers is None or layer_idx >= len(layers):
        return 0  # a DynamicCache creates its layers on first use
    layer = layers[layer_idx]
    if not isinstance(layer, DynamicLayer):  # static layers hold unfilled or rolled slots: no suffix of the sequence
        raise HeadlabError(f"top-1 capture needs a dynamic KV cache (DynamicCache); this one has "
                           f"{type(layer).__name__} layers")
    return layer.get_seq_length()  # a sliding layer counts every token seen, not only those it keeps


def last_query_top1(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                    sliding_window: int | None = None) -> torch.Tensor:
    """Top-1 key of the last query position for every head: [batch, head], an index into `key`. Ties go to the
    lowest index.

    query [batch, head, q_len, d_head]; key [batch, kv_head, k_len, d_head] (grouped-query: each kv head is
    shared by head // n_groups without being repeated in memory). Scaling, soft-capping and softmax are
    monotonic and do not change the argmax, so the raw dot products decide. Only keys the query may see count:
    the model's mask decides; where it carries no window (flash attention's padding mask), `sliding_window`
    keeps the last keys only, as the kernel does.
    """
    b, n_heads, _, d = query.shape
    n_kv, k_len = key.shape[1], key.shape[2]
    q = query[:, :, -1, :].reshape(b, n_kv, n_heads // n_kv, d).float()  # (B, n_kv, groups, d)
    scores = torch.einsum("bkgd,bknd->bkgn", q, key.float()).reshape(b, n_heads, -1)  # (B, H, K)
    valid = _last_row_key_mask(attention_mask, k_len)
    if sliding_window is not None and k_len > sliding_window and (attention_mask is None or attention_mask.ndim != 4):
        in_window = torch.arange(k_len, device=scores.device) >= k_len - sliding_window  # (K,)
        valid = in_window[None, None] if valid is None else valid & in_window
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    return scores.argmax(dim=-1)


def _last_row_key_mask(attention_mask: torch.Tensor | None, k_len: int) -> torch.Tensor | None:
    """Which keys the last query may see, [batch, 1|head, K] bool, from whatever mask the model built."""
    if attention_mask is None:
        return None
    if attention_mask.ndim == 4:  # (B, 1|H, q, K): bool (True = attend) or additive float
        row = attention_mask[:, :, -1, -k_len:]
        return row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2
    if attention_mask.ndim == 2:  # flash attention: (B, K) padding mask
        return attention_mask[:, None, -k_len:].bool()
    raise HeadlabError(f"unexpected attention mask of shape {tuple(attention_mask.shape)}")


class Seam:
    """Hooks over one model. Create with `Seam.attach(model)`; it is stored on the model and reused."""

    def __init__(self, model: nn.Module):
        self.model = model
        family_of(model)  # a family without a row: one line before anything else is read
        self.geometry = head_geometry(model.config)
        check_supported(model)
        inner = model.config._attn_implementation or "eager"
        if inner.startswith(_WRAPPED_PREFIX):
            inner = inner[len(_WRAPPED_PREFIX):]
        check_implementation(model, inner)
        self.inner_implementation = inner
        self.layers = find_attention_layers(model, self.geometry.n_layers)
        self._z_hooks: list[list[ZHook]] = [[] for _ in self.layers]
        self._z_handles: list = [None] * len(self.layers)
        self._query_hooks: list[list[QueryHook]] = [[] for _ in self.layers]
        self._top1: Top1Recorder | None = None
        self._observer: tuple[AttentionObserver, CachedLengths] | None = None
        for i, (attn, _) in enumerate(self.layers):
            attn._headlab_seam = self
            attn._headlab_layer = i
        model.set_attn_implementation(_register_wrapper(inner))

    @classmethod
    def attach(cls, model: nn.Module) -> Seam:
        seam = getattr(model, "_headlab_seam", None)
        if seam is None:
            seam = cls(model)
            model._headlab_seam = seam
        current = model.config._attn_implementation or "eager"
        if not current.startswith(_WRAPPED_PREFIX):  # set_attn_implementation since: wrap the new one
            check_implementation(model, current)
            seam.inner_implementation = current
            model.set_attn_implementation(_register_wrapper(current))
        return seam

    # ---- z: the input of the output projection ------------------------------------------------------
    @contextmanager
    def z_hook(self, layer: int, fn: ZHook) -> Iterator[None]:
        """While active, `fn(z)` sees z [batch, pos, head, d_head] of `layer` and may return a replacement."""
        hooks = self._z_hooks[layer]
        hooks.append(fn)
        if self._z_handles[layer] is None:
            self._z_handles[layer] = self.layers[layer][1].register_forward_pre_hook(self._make_z_pre_hook(layer))
        try:
            yield
        finally:
            hooks.remove(fn)
            if not hooks:
                self._z_handles[layer].remove()
                self._z_handles[layer] = None

    def _make_z_pre_hook(self, layer: int):
        d = self.geometry.head_dim

        def pre_hook(module, args):
            x = args[0]
            z = x.view(*x.shape[:-1], -1, d)  # [batch, pos, head, d_head]
            changed = False
            for fn in list(self._z_hooks[layer]):
                new = fn(z)
                if new is not None:
                    z, changed = new, True
            if changed:
                return (z.reshape(x.shape), *args[1:])
            return None

        return pre_hook

    # ---- query and top-1 capture, called from the attention wrapper ------------------------------------
    @contextmanager
    def query_hook(self, layer: int, fn: QueryHook) -> Iterator[None]:
        """While active, `fn(query)` replaces the query [batch, head, pos, d_head] of `layer` (after RoPE)."""
        self._query_hooks[layer].append(fn)
        try:
            yield
        finally:
            self._query_hooks[layer].remove(fn)

    @contextmanager
    def capture_top1(self) -> Iterator[Top1Recorder]:
        """Record the top-1 key of the last query for every head at every forward while active."""
        if self._top1 is not None:
            raise RuntimeError("top-1 capture is already active on this model")
        recorder = self._top1 = Top1Recorder(self.geometry.n_layers)
        # Each attention module sees its cache before updating it: note how many tokens it held, so that key
        # indices become absolute positions (see Top1Recorder.record).
        handles = [attn.register_forward_pre_hook(self._make_cache_reader(recorder, i), with_kwargs=True)
                   for i, (attn, _) in enumerate(self.layers)]
        try:
            yield recorder
        finally:
            for handle in handles:
                handle.remove()
            self._top1 = None

    @contextmanager
    def observe_attention(self, fn: AttentionObserver) -> Iterator[None]:
        """While active, `fn(layer, call)` sees every attention call of the model: an `AttentionCall`
        (headlab/model/attention_rows.py) whose `probabilities(rows)` recomputes the weights of chosen query rows
        from the query (after query hooks, so a knocked-out head shows uniform weights) and the cached keys."""
        if self._observer is not None:
            raise RuntimeError("an attention observer is already active on this model")
        cached = CachedLengths(self.geometry.n_layers)
        self._observer = (fn, cached)
        handles = [attn.register_forward_pre_hook(self._make_cache_reader(cached, i), with_kwargs=True)
                   for i, (attn, _) in enumerate(self.layers)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._observer = None

    @staticmethod
    def _make_cache_reader(recorder: Top1Recorder | CachedLengths, layer: int):
        def pre_hook(module, args, kwargs):
            cache_idx = getattr(module, "layer_idx", layer)
            recorder.note_cached(layer, _cached_length(passed_cache(kwargs), cache_idx))

        return pre_hook

    def _on_attention(self, layer: int, query: torch.Tensor, key: torch.Tensor,
                      attention_mask: torch.Tensor | None, sliding_window: int | None = None,
                      module: nn.Module | None = None, kwargs: dict | None = None,
                      value: torch.Tensor | None = None) -> torch.Tensor:
        for fn in self._query_hooks[layer]:
            query = fn(query)
        if self._top1 is not None:
            top1 = last_query_top1(query, key, attention_mask, sliding_window)
            self._top1.record(layer, top1, query.shape[2], key.shape[2])
        if self._observer is not None:
            observe, cached = self._observer
            first = cached.lengths[layer] + query.shape[2] - key.shape[2]
            observe(layer, attention_call(module, query, key, attention_mask, kwargs or {}, first, value))
        return query
