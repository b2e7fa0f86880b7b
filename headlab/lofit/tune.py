"""LoFiT step 2: on the frozen model, learn an offset v[l,h] per selected head (and nothing else)."""

from __future__ import annotations

from collections.abc import Sequence

from headlab.core.errors import HeadlabError
from headlab.lofit.adapter import LofitAdapter, apply_adapters
from headlab.lofit.datasets import Completion, Preference
from headlab.lofit.train import TrainConfig, reference_logprobs, train
from headlab.mech.heads import parse_head
from headlab.model.seam import Seam


def tune_offsets(model, tokenizer, records: Sequence[Completion | Preference], heads: Sequence[str],
                 config: TrainConfig, init_std: float = 1e-3, scales: bool = False,
                 info: dict | None = None) -> tuple[LofitAdapter, list[float]]:
    """Train offsets (and scales if `scales`) on `heads` ("L-H" names); returns (adapter, loss per step).

    The model's own weights are frozen and unchanged afterwards; the adapter is removed from the model.
    """
    if not heads:
        raise HeadlabError("tune: the head list is empty (step 1 selected nothing?)")
    seam = Seam.attach(model)
    parsed = [parse_head(h, "tune heads") for h in heads]
    adapter = LofitAdapter(parsed, seam.geometry, scale=scales, offset=True, init_std=init_std,
                           seed=config.seed, info=dict(info or {}))
    for p in model.parameters():
        p.requires_grad_(False)
    reference = None
    if isinstance(records[0], Preference):
        reference = reference_logprobs(model, tokenizer, records, config.batch_size)
    with apply_adapters(model, adapter):
        losses = train(model, tokenizer, list(adapter.parameters()), records, config, reference=reference,
                       desc="lofit tune")
    return adapter, losses
