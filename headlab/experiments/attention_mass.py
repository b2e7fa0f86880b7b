"""Attention-mass retrieval score: HeadKV's "retrieval-reasoning" score (Fu et al. 2024, FYYFU/HeadKV
`retrieval_head_detection_r2.py`), on the decoding loop, batching and success filter of copy-paste detection.

Where the copy-paste score asks whether a head's single most-attended key is the needle token being generated,
this one asks how much attention the head puts on the needle, with no copy match
(docs/definitions.md#attention-mass). At each decoding step, for the last query of every head: take the `n`
most-attended keys (n = the needle's length; ties to the lower position), sum the weights of those inside the
needle, divide by n. A probe's score is the mean of that over its decoding steps; `keys="span"` sums the
weight on every needle key instead (HeadKV's other branch).

HeadKV itself scales by 10 and divides by the answer's token count, which is also where it stops decoding; here
the mean is over the steps actually decoded (up to max_new_tokens, stopping as detection does), and the success
filter is detection's. The weights come from the seam's attention observer, one row per layer per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from headlab.core.errors import HeadlabError
from headlab.data.probes import Probe
from headlab.experiments.detect import DetectConfig, DetectionResult, detect_retrieval_heads
from headlab.mech.generate import greedy_decode, left_pad
from headlab.model.seam import Seam, input_device

KEY_CHOICES = ("top-k", "span")


@dataclass
class MassConfig(DetectConfig):
    keys: str = "top-k"  # "top-k": the needle-length most-attended keys that lie in the needle; "span": all of it

    def __post_init__(self) -> None:
        if self.keys not in KEY_CHOICES:
            raise HeadlabError(f"keys: expected one of {', '.join(KEY_CHOICES)}, got {self.keys!r}")


def needle_mass(weights: torch.Tensor, positions: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                top_k: bool) -> torch.Tensor:
    """Per head, the weight on needle keys: weights [batch, head, keys] at absolute `positions` [keys]; the
    needle of row b is [lo[b], hi[b]). With `top_k`, only keys ranked below the needle's length count."""
    inside = (positions[None] >= lo[:, None]) & (positions[None] < hi[:, None])  # (B, K)
    keep = inside[:, None, :]
    if top_k:
        order = weights.argsort(dim=-1, descending=True, stable=True)  # stable: ties to the lower position
        ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                                 .expand_as(order))
        keep = keep & (ranks < (hi - lo)[:, None, None])
    return (weights * keep).sum(-1)


def greedy_mass_scores(top_k: bool):
    """A step scorer for `detect_retrieval_heads`: decode a left-padded batch greedily and score needle mass."""

    @torch.no_grad()
    def score(model, seam: Seam, probes: list[Probe], stop_sets: list[set[int]], max_new_tokens: int,
              pad_id: int) -> list[tuple[list[int], torch.Tensor]]:
        device = input_device(model)
        g = seam.geometry
        input_ids, mask = left_pad([p.input_ids for p in probes], pad_id, device)
        pads = input_ids.shape[1] - mask.sum(-1)
        lo = torch.tensor([p.needle_start for p in probes], device=device) + pads
        hi = torch.tensor([p.needle_end for p in probes], device=device) + pads
        step_mass = torch.zeros(len(probes), g.n_layers, g.n_heads, device=device)
        total = torch.zeros_like(step_mass)
        steps = torch.zeros(len(probes), device=device)

        def observe(layer: int, call) -> None:
            weights = call.probabilities([-1])[:, :, 0]  # (B, H, K): the last query only
            step_mass[:, layer] = needle_mass(weights, call.key_positions(), lo.to(weights.device),
                                              hi.to(weights.device), top_k).to(device)

        def add_step(step: int, token: torch.Tensor, live: torch.Tensor) -> None:
            total.add_(step_mass * live[:, None, None])
            steps.add_(live.float())

        with seam.observe_attention(observe):
            responses = greedy_decode(model, input_ids, mask, stop_sets, max_new_tokens, on_step=add_step,
                                      keep_stop=True)
        per_step = total / ((hi - lo).float() * steps.clamp(min=1))[:, None, None]
        return [(responses[row], per_step[row].cpu()) for row in range(len(probes))]

    return score


def attention_mass_heads(model, tokenizer, probes: list[Probe], config: MassConfig | None = None) -> DetectionResult:
    """Attention-mass scores of every head over the probes, in detection's result (Retrieval_Head format)."""
    config = config or MassConfig()
    return detect_retrieval_heads(model, tokenizer, probes, config, scorer=greedy_mass_scores(config.keys == "top-k"))
