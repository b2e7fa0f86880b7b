"""LoFiT step 1: learn a scale A[l,h] for every head under an L1 penalty; keep the heads with the largest ||A||.

The objective is task loss + lambda * sum |A| (docs/definitions.md#lofit). The L1 term is applied as its proximal step
(soft-thresholding by lr * lambda after each Adam step) instead of through its subgradient: the objective is
the same, but heads that do not matter reach exactly zero, so "selects nothing" is a clear outcome rather
than a question of where to cut a cloud of tiny values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from headlab.core.errors import HeadlabError
from headlab.lofit.adapter import LofitAdapter, apply_adapters
from headlab.lofit.datasets import Completion, Preference
from headlab.lofit.train import TrainConfig, reference_logprobs, train
from headlab.mech.heads import head_name
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam


@dataclass
class SelectConfig:
    l1: float = 1e-3                 # lambda
    top_k: int | None = None         # keep this many heads; default: `fraction` of all heads
    fraction: float = 0.03
    init_std: float = 1e-3
    train: TrainConfig = field(default_factory=TrainConfig)

    def k(self, geometry: HeadGeometry) -> int:
        """The number of heads to keep; also checks the config (cheap, before any weights are loaded)."""
        if self.l1 < 0:
            raise HeadlabError("select: field 'l1' must be >= 0")
        self.train.check()
        if self.top_k is not None:
            if self.top_k < 1:
                raise HeadlabError("select: field 'top_k' must be >= 1")
            return min(self.top_k, geometry.total_heads)
        if not 0 < self.fraction <= 1:
            raise HeadlabError("select: field 'fraction' must be in (0, 1]")
        return max(1, round(self.fraction * geometry.total_heads))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SelectResult:
    heads: list[str]                 # kept heads, largest ||A|| first (empty if every scale is zero)
    norms: dict[str, float]          # ||A[l,h]||_2 for every head
    k: int
    n_nonzero: int
    losses: list[float]
    adapter: LofitAdapter

    def message(self) -> str:
        if not self.heads:
            return "selected no heads: every scale is exactly zero at this L1 strength (lower --l1)"
        short = f" (only {self.n_nonzero} heads have a non-zero scale)" if len(self.heads) < self.k else ""
        return f"selected {len(self.heads)} of {len(self.norms)} heads{short}"


def select_heads(model, tokenizer, records: Sequence[Completion | Preference], config: SelectConfig) -> SelectResult:
    """Run step 1 on `model` (left unchanged) and rank heads by the norm of their learned scale."""
    seam = Seam.attach(model)
    g = seam.geometry
    k = config.k(g)
    for p in model.parameters():
        p.requires_grad_(False)
    heads = [(layer, h) for layer in range(g.n_layers) for h in range(g.n_heads)]
    adapter = LofitAdapter(heads, g, scale=True, offset=False, init_std=config.init_std, seed=config.train.seed)
    reference = None
    if isinstance(records[0], Preference):
        reference = reference_logprobs(model, tokenizer, records, config.train.batch_size)

    @torch.no_grad()
    def prox(lr: float) -> None:
        a = adapter.A
        a.copy_(a.sign() * (a.abs() - lr * config.l1).clamp(min=0))

    with apply_adapters(model, adapter):
        losses = train(model, tokenizer, [adapter.A], records, config.train, after_step=prox,
                       reference=reference, desc="lofit select")
    norms_t = adapter.A.detach().norm(dim=-1)
    norms = {head_name(lay, h): float(n) for (lay, h), n in zip(heads, norms_t, strict=True)}
    nonzero = int((norms_t > 0).sum())
    order = sorted(norms, key=lambda n: -norms[n])
    kept = [n for n in order[:k] if norms[n] > 0]
    return SelectResult(kept, norms, k, nonzero, losses, adapter)
