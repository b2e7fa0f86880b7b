"""The LoFiT adapter: per-head scales A and/or offsets v on the head outputs z, applied through the seam.

    z[l, h] <- (1 + A[l, h]) * z[l, h] + v[l, h]        for each head (l, h) of the adapter

`A` and `v` are [n_selected_heads, d_head] parameters, one row per head in `heads` order. At each layer the
rows of that layer are scattered into a dense [n_heads, d_head] tensor (zeros elsewhere) and applied with one
`addcmul` over `[batch, pos, head, d_head]`: no Python loop over heads, and gradients reach only A and v.

Saved as one safetensors file: tensors "A" and/or "v", metadata "heads" ("L-H,L-H,..."), "geometry" and
free-form "info" (JSON strings, as safetensors metadata must be str -> str).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import nn

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_bytes
from headlab.mech.heads import head_name, parse_head
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam, input_device

FORMAT = "headlab-lofit-1"


class LofitAdapter(nn.Module):
    """Scales (`A`) and/or offsets (`v`) for a list of heads of one model geometry."""

    def __init__(self, heads: Sequence[tuple[int, int]], geometry: HeadGeometry, scale: bool = False,
                 offset: bool = True, init_std: float = 1e-3, seed: int = 0, info: dict | None = None):
        super().__init__()
        if not scale and not offset:
            raise HeadlabError("a LoFiT adapter needs scales, offsets or both")
        heads = [(int(layer), int(h)) for layer, h in heads]
        if len(set(heads)) != len(heads):
            raise HeadlabError("adapter heads: a head is listed twice")
        for layer, h in heads:
            geometry.check_head(layer, h, "adapter heads")
        self.heads = heads
        self.geometry = geometry
        self.info = dict(info or {})
        gen = torch.Generator().manual_seed(seed)
        shape = (len(heads), geometry.head_dim)
        # N(0, init_std) as in the paper: a small non-zero start gives every head a gradient signal.
        self.A = nn.Parameter(torch.randn(shape, generator=gen) * init_std) if scale else None
        self.v = nn.Parameter(torch.randn(shape, generator=gen) * init_std) if offset else None

    # ---- per-layer view --------------------------------------------------------------------------------
    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.heads})

    def layer_index(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of A/v, head indices) of the adapter's heads in `layer`."""
        rows = [i for i, (lay, _) in enumerate(self.heads) if lay == layer]
        return torch.tensor(rows, dtype=torch.long), torch.tensor([self.heads[i][1] for i in rows], dtype=torch.long)

    def dense(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(A, v) of `layer` as dense [n_heads, d_head] tensors, zero for heads outside the adapter."""
        rows, heads = self.layer_index(layer)
        shape = (self.geometry.n_heads, self.geometry.head_dim)

        def scatter(p: torch.Tensor | None) -> torch.Tensor | None:
            if p is None:
                return None
            rows_, heads_ = rows.to(p.device), heads.to(p.device)
            return p.new_zeros(shape).index_copy(0, heads_, p.index_select(0, rows_))

        return scatter(self.A), scatter(self.v)

    def hook(self, layer: int):
        """The z hook of `layer`: one vectorised op over all heads of the layer."""
        def fn(z: torch.Tensor) -> torch.Tensor:  # z [batch, pos, head, d_head]
            a, v = self.dense(layer)
            if a is None:
                return z + v.to(z.device, z.dtype)
            scale = 1 + a.to(z.device, z.dtype)  # under a device map the layer may sit on another device
            return torch.addcmul(v.to(z.device, z.dtype), z, scale) if v is not None else z * scale

        return fn

    # ---- bookkeeping -----------------------------------------------------------------------------------
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | Path) -> None:
        """Write the adapter atomically as safetensors (tensors A/v, heads/geometry/info metadata)."""
        from safetensors.torch import save

        tensors = {k: p.detach().float().contiguous().cpu() for k, p in (("A", self.A), ("v", self.v))
                   if p is not None}
        meta = {"format": FORMAT, "heads": ",".join(head_name(lay, h) for lay, h in self.heads),
                "geometry": json.dumps(self.geometry.to_dict()), "info": json.dumps(self.info)}
        atomic_write_bytes(path, save(tensors, metadata=meta))


def load_adapter(path: str | Path) -> LofitAdapter:
    """Read an adapter written by `LofitAdapter.save`; a malformed file is a HeadlabError naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HeadlabError(f"{path}: adapter file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise HeadlabError(f"{path}: not a safetensors file ({type(e).__name__})") from None
    if meta.get("format") != FORMAT:
        raise HeadlabError(f"{path}: field 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        geometry = HeadGeometry(**json.loads(meta["geometry"]))
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, TypeError, json.JSONDecodeError):
        raise HeadlabError(f"{path}: field 'geometry' is missing or malformed") from None
    names = [n for n in meta.get("heads", "").split(",") if n]
    heads = [parse_head(n) for n in names]
    adapter = LofitAdapter(heads, geometry, scale="A" in tensors, offset="v" in tensors, info=info)
    for key in ("A", "v"):
        if key in tensors:
            if tuple(tensors[key].shape) != (len(heads), geometry.head_dim):
                raise HeadlabError(f"{path}: field '{key}' has shape {tuple(tensors[key].shape)}, expected "
                                   f"{(len(heads), geometry.head_dim)}")
            getattr(adapter, key).data.copy_(tensors[key])
    return adapter


class AppliedAdapter:
    """Adapters hooked into a model; `remove()` (or leaving the `with` block) takes them out again."""

    def __init__(self, model: nn.Module, adapters: Iterable[LofitAdapter]):
        seam = Seam.attach(model)
        self._stack = ExitStack()
        self.adapters = list(adapters)
        try:
            for adapter in self.adapters:
                if adapter.geometry != seam.geometry:
                    raise HeadlabError(f"adapter geometry {adapter.geometry} does not match the model's "
                                       f"{seam.geometry}")
                adapter.to(input_device(model))
                for layer in adapter.layers():
                    self._stack.enter_context(seam.z_hook(layer, adapter.hook(layer)))
        except BaseException:
            self._stack.close()
            raise

    def remove(self) -> None:
        self._stack.close()

    def __enter__(self) -> AppliedAdapter:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def apply_adapters(model: nn.Module, *adapters: LofitAdapter) -> AppliedAdapter:
    """Hook one or more adapters into `model` (they compose in order). Use as a handle or a `with` block."""
    return AppliedAdapter(model, adapters)
