"""Attention weights of chosen query rows, recomputed from one attention call's query and keys.

The atlas methods need more than the top-1 key: the attention mass on a span, the pattern of a short sequence.
The seam hands each attention call to an observer as an `AttentionCall` (the query after RoPE and after
headlab's query hooks, the keys the call sees, the mask the model built, and the module's own scaling,
soft-cap, sinks and window); `probabilities(rows)` gives the weights of those rows only, so a method that
needs the last row of a 100k-token prompt holds [batch, head, 1, keys], never the full matrix.

    with seam.observe_attention(lambda layer, call: seen.append(call.probabilities([-1]))):
        model(input_ids)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from headlab.core.errors import HeadlabError


@dataclass
class AttentionCall:
    module: nn.Module
    query: torch.Tensor  # [batch, head, q_len, d_head], after RoPE
    key: torch.Tensor  # [batch, kv_head, k_len, d_head]: a suffix of the sequence (a sliding cache keeps its last)
    mask: torch.Tensor | None  # what the model built: 4D bool/additive, 2D padding (flash attention), or None
    scaling: float
    softcap: float | None  # Gemma 2: logits <- softcap * tanh(logits / softcap)
    sinks: torch.Tensor | None  # gpt-oss: one logit per head that joins the softmax's denominator only
    window: int | None  # sliding window size, for masks that do not carry it
    first_key: int  # absolute position of key slot 0 (cached tokens + q_len - k_len)
    value: torch.Tensor | None = None  # [batch, kv_head, k_len, d_head], the values beside `key`

    @property
    def n_query(self) -> int:
        return self.query.shape[2]

    @property
    def n_key(self) -> int:
        return self.key.shape[2]

    def key_positions(self) -> torch.Tensor:
        """Absolute sequence position of every key slot, [k_len]."""
        return torch.arange(self.n_key, device=self.key.device) + self.first_key

    def query_positions(self) -> torch.Tensor:
        """Absolute sequence position of every query row, [q_len] (the sequence ends with the queries)."""
        return torch.arange(self.n_query, device=self.key.device) + self.first_key + self.n_key - self.n_query

    def _rows(self, rows: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        index = torch.arange(self.n_query) if rows is None else torch.as_tensor(rows).reshape(-1)
        return (index % self.n_query).to(self.key.device)

    def visible(self, rows: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Which keys each of `rows` may see, [batch | 1, head | 1, rows, k_len] bool."""
        index = self._rows(rows)
        if self.mask is not None and self.mask.ndim == 4:  # the model's own causal (and window) mask
            part = self.mask[:, :, index, -self.n_key:]
            return part if part.dtype == torch.bool else part > torch.finfo(part.dtype).min / 2
        slot = torch.arange(self.n_key, device=self.key.device)
        query_slot = (index + self.n_key - self.n_query)[:, None]  # the queries are the last slots
        ok = slot[None, :] <= query_slot
        if self.window is not None:
            ok = ok & (slot[None, :] > query_slot - self.window)
        ok = ok[None, None]
        if self.mask is not None:
            if self.mask.ndim != 2:
                raise HeadlabError(f"unexpected attention mask of shape {tuple(self.mask.shape)}")
            ok = ok & self.mask[:, None, None, -self.n_key:].bool()
        return ok

    def logits(self, rows: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Scaled (and soft-capped) attention logits of `rows`, -inf where a key is not visible:
        [batch, head, rows, k_len] float32."""
        b, n_heads, _, d = self.query.shape
        n_kv = self.key.shape[1]
        q = self.query[:, :, self._rows(rows)].float()
        q = q.reshape(b, n_kv, n_heads // n_kv, q.shape[2], d)  # grouped-query: never repeat the keys
        scores = torch.einsum("bkgrd,bknd->bkgrn", q, self.key.float()).reshape(b, n_heads, q.shape[3], -1)
        scores = scores * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        return scores.masked_fill(~self.visible(rows), float("-inf"))

    def probabilities(self, rows: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights of `rows` over the keys, [batch, head, rows, k_len] float32, as the model's softmax
        gives them (with sinks, a row sums to less than 1)."""
        logits = self.logits(rows)
        norm = logits.logsumexp(dim=-1, keepdim=True)
        if self.sinks is not None:
            sink = self.sinks.float().reshape(1, -1, 1, 1).expand_as(norm)
            norm = torch.logaddexp(norm, sink)
        return torch.exp(logits - norm)

    def output(self, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The attention output of every row when only the keys where `keep` ([rows, k_len] bool, or anything
        that broadcasts to [batch, head, rows, k_len]) join the keys the model lets it see: [batch, rows, head,
        d_head] in the values' dtype, shaped like the seam's z. Differentiable; forms every row's weights, so
        it is for training-length sequences (DuoAttention's gates), not for 100k-token prompts. A row left
        with no key gives zeros."""
        if self.value is None:
            raise HeadlabError("attention output: this call carries no values")
        logits = self.logits()
        if keep is not None:
            logits = logits.masked_fill(~keep, float("-inf"))
        norm = logits.logsumexp(dim=-1, keepdim=True)
        if self.sinks is not None:
            norm = torch.logaddexp(norm, self.sinks.float().reshape(1, -1, 1, 1).expand_as(norm))
        weights = torch.exp(logits - norm).nan_to_num(0.0)  # a row with no key: -inf - -inf
        b, n_heads, rows, n_key = weights.shape
        n_kv = self.value.shape[1]
        grouped = weights.reshape(b, n_kv, n_heads // n_kv, rows, n_key)
        out = torch.einsum("bkgrn,bknd->bkgrd", grouped, self.value.float()).reshape(b, n_heads, rows, -1)
        return out.transpose(1, 2).to(self.value.dtype)


def attention_call(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                   kwargs: dict, first_key: int, value: torch.Tensor | None = None) -> AttentionCall:
    """An `AttentionCall` from what transformers passes an attention function (its keyword arguments)."""
    scaling = kwargs.get("scaling")
    sinks = kwargs.get("s_aux")
    if sinks is None:
        sinks = getattr(module, "sinks", None)
    return AttentionCall(module=module, query=query, key=key, mask=mask,
                         scaling=query.shape[-1] ** -0.5 if scaling is None else float(scaling),
                         softcap=kwargs.get("softcap"), sinks=sinks, window=kwargs.get("sliding_window"),
                         first_key=first_key, value=value)
