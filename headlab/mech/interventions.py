"""Knockout and activation patching: context managers built only on the seam's `z_hook` and `query_hook`.

Every intervention hooks only the layers that hold a targeted head and does one vectorised indexed write per
layer and forward (no Python loop over heads). All of them undo themselves on exit, also on error, and they
compose with each other and with any other seam hook (hooks run in the order they were entered).

Where a knockout applies (`where`):
- `all`: every query position of every forward.
- `decode`: the *last* query position of every forward. Under generation with a KV cache this is exactly
  the positions that produce a generated token: the prefill's last position (which produces the first
  generated token, and which the retrieval score also counts as a decoding step) and every later one-token
  step. Prompt positions before it keep their normal attention, so the KV cache they write is untouched.
  Batches must be left-padded (headlab's generation is) so that the last position is real in every row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from headlab.core.errors import HeadlabError
from headlab.mech.heads import parse_head
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam, cache_kwargs, output_cache, passed_cache

MODES = ("uniform", "zero", "mean")
WHERE = ("decode", "all")

HeadSpec = Iterable[str | tuple[int, int]]


def heads_by_layer(heads: HeadSpec, geometry: HeadGeometry, source: str = "heads") -> dict[int, list[int]]:
    """Group heads ("L-H" names or (layer, head) pairs) by layer, checked against the geometry, deduplicated."""
    grouped: dict[int, set[int]] = {}
    for h in heads:
        layer, head = parse_head(h, source) if isinstance(h, str) else (int(h[0]), int(h[1]))
        geometry.check_head(layer, head, source)
        grouped.setdefault(layer, set()).add(head)
    return {layer: sorted(hs) for layer, hs in sorted(grouped.items())}


class _Index:
    """Head indices as a tensor, moved to the device of the activations once and cached there."""

    def __init__(self, heads: list[int]):
        self._by_device = {torch.device("cpu"): torch.tensor(heads, dtype=torch.long)}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._by_device:
            self._by_device[device] = self._by_device[torch.device("cpu")].to(device)
        return self._by_device[device]


def _positions(where: str) -> slice:
    return slice(-1, None) if where == "decode" else slice(None)


def _zero_query(heads: list[int], where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Query hook: a zero query scores every visible key equally, so softmax is uniform over them."""
    index, pos = _Index(heads), _positions(where)

    def hook(query: torch.Tensor) -> torch.Tensor:  # (B, H, q, d)
        query = query.clone()
        query[:, index.on(query.device), pos] = 0
        return query

    return hook


def _fill_z(heads: list[int], where: str, fill: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """z hook: the targeted heads' z becomes 0 (fill None) or `fill` [k, d_head] at the chosen positions."""
    index, pos = _Index(heads), _positions(where)
    cache: dict[tuple, torch.Tensor] = {}

    def hook(z: torch.Tensor) -> torch.Tensor:  # (B, T, H, d)
        z = z.clone()
        if fill is None:
            z[:, pos, index.on(z.device)] = 0
        else:
            key = (z.device, z.dtype)
            if key not in cache:
                cache[key] = fill.to(device=z.device, dtype=z.dtype)
            z[:, pos, index.on(z.device)] = cache[key]
        return z

    return hook


@contextmanager
def knockout(model: nn.Module, heads: HeadSpec, mode: str = "uniform", where: str = "decode",
             means: torch.Tensor | None = None) -> Iterator[None]:
    """Knock out `heads` while active (docs/definitions.md#knockout).

    mode `uniform` zeroes the head's query (after RoPE; under grouped-query attention the query head, never
    the shared kv head), `zero` sets its z to 0, `mean` sets its z to `means[layer, head]` (from `head_means`).
    """
    if mode not in MODES:
        raise HeadlabError(f"knockout: field 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    if where not in WHERE:
        raise HeadlabError(f"knockout: field 'where' must be one of {', '.join(WHERE)}, got {where!r}")
    seam = Seam.attach(model)
    g = seam.geometry
    if mode == "mean":
        if means is None or tuple(means.shape) != (g.n_layers, g.n_heads, g.head_dim):
            shape = None if means is None else tuple(means.shape)
            raise HeadlabError(f"knockout: mode 'mean' needs means of shape {(g.n_layers, g.n_heads, g.head_dim)}"
                               f" (see head_means), got {shape}")
    with ExitStack() as stack:
        for layer, hs in heads_by_layer(heads, g).items():
            if mode == "uniform":
                stack.enter_context(seam.query_hook(layer, _zero_query(hs, where)))
            else:
                fill = None if mode == "zero" else means[layer, hs].detach()
                stack.enter_context(seam.z_hook(layer, _fill_z(hs, where, fill)))
        yield


@torch.no_grad()
def head_means(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
    """Mean z per head over every real (unpadded) position of the reference batches: [layer, head, d_head].

    `batches` yields (input_ids, attention_mask) pairs; a None mask means every position is real.
    """
    seam = Seam.attach(model)
    g = seam.geometry
    sums = torch.zeros(g.n_layers, g.n_heads, g.head_dim, dtype=torch.float64)
    state: dict[str, torch.Tensor | None] = {"mask": None}
    count = 0

    def reader(layer: int):
        def hook(z: torch.Tensor) -> None:  # (B, T, H, d)
            m = state["mask"]
            zf = z.double() if m is None else z.double() * m.to(z.device)[:, :, None, None]
            sums[layer] += zf.sum(dim=(0, 1)).cpu()

        return hook

    with ExitStack() as stack:
        for layer in range(g.n_layers):
            stack.enter_context(seam.z_hook(layer, reader(layer)))
        for input_ids, mask in batches:
            state["mask"] = None if mask is None else mask.to(input_ids.device).double()
            position_ids = None if mask is None else (mask.cumsum(-1) - 1).clamp(min=0)
            model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=1)
            count += int(mask.sum()) if mask is not None else input_ids.numel()
    if count == 0:
        raise HeadlabError("head_means: the reference set has no tokens")
    return (sums / count).float()


# --------------------------------------------------------------------------------------------------------
# Patching: the target's z at the patched heads is replaced by a source run's z at every position.

_SOURCE_KEYS = ("input_ids", "attention_mask", "position_ids", "cache_position")


class _Lockstep:
    """Before each target forward, run the source forward on the same step and keep z of the patched heads.

    The source keeps its own KV cache; a target forward without a cache (or with an empty one) starts a new
    sequence. So any generation loop works, `model.generate` included, and the source always sees the same
    tokens as the target: the prompt, then the target's own tokens (lockstep).
    """

    def __init__(self, target: nn.Module, source: nn.Module, layers: dict[int, list[int]],
                 source_prompt: tuple[torch.Tensor, torch.Tensor | None] | None):
        self.target, self.source = target, source
        self.layers = layers
        self.index = {layer: _Index(hs) for layer, hs in layers.items()}
        self.source_prompt = source_prompt  # cross-input: the source's own prompt replaces the target's
        self.stored: dict[int, torch.Tensor] = {}
        self.cache = None
        self.source_mask: torch.Tensor | None = None
        self.in_source = False

    def read(self, layer: int):
        def hook(z: torch.Tensor) -> None:
            if self.in_source:
                self.stored[layer] = z[:, :, self.index[layer].on(z.device)].clone()  # (B, T, k, d)

        return hook

    def write(self, layer: int):
        def hook(z: torch.Tensor) -> torch.Tensor | None:
            if self.in_source:
                return None
            src = self.stored.pop(layer, None)
            if src is None or src.shape[:2] != z.shape[:2]:
                raise RuntimeError(f"patching: no source z of shape {tuple(z.shape[:2])} for layer {layer}")
            z = z.clone()
            z[:, :, self.index[layer].on(z.device)] = src.to(z.device, z.dtype)  # layers may differ in device
            return z

        return hook

    def pre_forward(self, module, args, kwargs):
        if self.in_source:
            return None  # cross-input: the source run is this same model
        step = {k: kwargs[k] for k in _SOURCE_KEYS if kwargs.get(k) is not None}
        if args:
            step["input_ids"] = args[0]
        if "input_ids" not in step:
            raise HeadlabError("patching needs input_ids (inputs_embeds are not supported)")
        past = passed_cache(kwargs)
        use_cache = past is not None or bool(kwargs.get("use_cache"))
        if past is None or past.get_seq_length() == 0:
            self.cache = None
        if self.source_prompt is not None:
            step = self._cross_input_step(step)
        self.in_source = True
        try:
            with torch.no_grad():
                out = self.source(**step, use_cache=use_cache, logits_to_keep=1,
                                  **cache_kwargs(self.source, self.cache if use_cache else None))
        finally:
            self.in_source = False
        self.cache = output_cache(out) if use_cache else None
        return None

    def _cross_input_step(self, step: dict) -> dict:
        """The source's step: its own prompt in place of the target's, then the target's new tokens."""
        ids = step["input_ids"]
        src_ids, src_mask = self.source_prompt
        src_ids = src_ids.to(ids.device)
        src_mask = torch.ones_like(src_ids) if src_mask is None else src_mask.to(ids.device)
        if self.cache is None:  # a new sequence, or a forward without cache over the whole sequence so far
            if src_ids.shape[0] != ids.shape[0] or src_ids.shape[1] > ids.shape[1]:
                raise HeadlabError(f"cross-input patching: source input of shape {tuple(src_ids.shape)} does not "
                                   f"match the target input {tuple(ids.shape)}")
            extra = ids[:, src_ids.shape[1]:]  # tokens generated after the prompt (no-cache loops)
            new_ids = torch.cat([src_ids, extra], dim=1)
            full = torch.cat([src_mask, torch.ones_like(extra)], dim=1)
        else:  # generated tokens are real in every row
            new_ids = ids
            full = torch.cat([self.source_mask, torch.ones_like(ids)], dim=1)
        self.source_mask = full
        positions = (full.cumsum(-1) - 1).clamp(min=0)[:, -new_ids.shape[1]:]
        return {"input_ids": new_ids, "attention_mask": full, "position_ids": positions}


@contextmanager
def _lockstep_patch(target: nn.Module, source: nn.Module, heads: HeadSpec,
                    source_prompt: tuple[torch.Tensor, torch.Tensor | None] | None) -> Iterator[None]:
    t_seam, s_seam = Seam.attach(target), Seam.attach(source)
    if t_seam.geometry != s_seam.geometry:
        raise HeadlabError(f"patching: source geometry {s_seam.geometry} differs from target {t_seam.geometry}")
    layers = heads_by_layer(heads, t_seam.geometry)
    lock = _Lockstep(target, source, layers, source_prompt)
    with ExitStack() as stack:
        for layer in layers:  # read before write: for cross-input both hooks sit on the same layer
            stack.enter_context(s_seam.z_hook(layer, lock.read(layer)))
            stack.enter_context(t_seam.z_hook(layer, lock.write(layer)))
        handle = target.register_forward_pre_hook(lock.pre_forward, with_kwargs=True)
        stack.callback(handle.remove)
        yield


@contextmanager
def patch_from_model(target: nn.Module, source: nn.Module, heads: HeadSpec) -> Iterator[None]:
    """Cross-model patching (docs/definitions.md#activation-patching): while active, every target forward first runs
    `source` on the same tokens (its own KV cache, in lockstep) and the target's z at `heads` is replaced by
    the source's at every position. Source and target must share architecture and tokenizer.
    """
    with _lockstep_patch(target, source, heads, None):
        yield


@contextmanager
def patch_from_input(model: nn.Module, heads: HeadSpec, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> Iterator[None]:
    """Cross-input patching: z at `heads` comes from a run of the same model on another prompt of the same
    shape (`input_ids` [batch, pos], left-padded). During generation the source continues in lockstep with the
    target's own tokens appended to its prompt.
    """
    with _lockstep_patch(model, model, heads, (input_ids, attention_mask)):
        yield
