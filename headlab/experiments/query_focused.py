"""Query-focused retrieval heads (QRHead; Wu et al. 2025, princeton-pli/QRHead `attn_retriever.py` and
`exp_scripts/detection/`): how much a head's attention goes from the question to the gold document, beyond
what the same prompt with a null question ("N/A") would give it.

For one example and one head (docs/definitions.md#query-focused-retrieval):
1. the prompt with the real question and the prompt with the null question share every token up to the query
   span, the tokens after the last context token (the question, the task instruction, the chat template's
   closing tokens);
2. a key's score is the head's attention weight on it, averaged over the query span's rows, minus the same
   with the null question;
3. a document's score is the sum of its tokens' calibrated scores, leaving out tokens below
   mean - 2 std of that document (the original's outlier rule: std unbiased, only tokens strictly above the
   threshold count, so a document whose tokens all score the same adds 0; a one-token document keeps its
   token, where the original's undefined std drops it);
4. the example's score is the sum over its gold documents; the head's score is the mean over examples.

A document's tokens are its header ("Document [3] (Title: ...) ") and text, as the original counts its "[3] "
prefix. Both prompts of an example run in the same left-padded forward, without a KV cache; each layer's
weights come from the seam's observer for the last rows only ([batch, head, rows, keys]: never the
full matrix), so scores do not depend on batching or the attention implementation. Heads are query heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from headlab.core.errors import HeadlabError, check_fields
from headlab.data.example import TaskExample, document_header
from headlab.data.task_prompts import char_to_token_span, encode_prompt, render_task_prompt
from headlab.mech.generate import left_pad
from headlab.mech.heads import head_name, mean_scores
from headlab.model.attention_rows import AttentionCall
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam, input_device

METHOD = "query-focused"
UNIT = "query head"
NULL_QUERY = "N/A"


@dataclass
class QueryFocusedConfig:
    batch_size: int = 4  # examples per forward; each adds two rows, its question and the null one
    null_query: str = NULL_QUERY  # the calibration question
    outlier_std: float = 2.0  # a document's tokens below mean - outlier_std * std are left out

    def __post_init__(self) -> None:
        self.check()

    def check(self, source: str = "query-focused scores", prefix: str = "") -> None:
        """One line naming the first bad field."""
        check_fields(source, self, [
            ("batch_size", isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool)
             and self.batch_size >= 1, "an integer >= 1"),
            ("null_query", isinstance(self.null_query, str) and self.null_query.strip() != "", "a non-empty string"),
            ("outlier_std", isinstance(self.outlier_std, (int, float)) and not isinstance(self.outlier_std, bool)
             and self.outlier_std >= 0, "a number >= 0"),
        ], prefix)


@dataclass
class QueryInput:
    """One example as token ids: the real and the null prompt, where the query span starts (the same in
    both), every document's token range [lo, hi) and which documents are gold (indices into `doc_spans`)."""
    id: str
    query_ids: list[int]
    null_ids: list[int]
    query_start: int
    doc_spans: list[tuple[int, int]]
    gold: list[int]

    def check(self) -> None:
        where = f"query-focused input {self.id!r}"
        if self.query_ids[:self.query_start] != self.null_ids[:self.query_start]:
            raise HeadlabError(f"{where}: the real and null prompts differ before the query span")
        if not 0 < self.query_start < min(len(self.query_ids), len(self.null_ids)):
            raise HeadlabError(f"{where}: the query span must start inside both prompts "
                               f"(start {self.query_start}, lengths {len(self.query_ids)} and {len(self.null_ids)})")
        if not self.doc_spans or not self.gold:
            raise HeadlabError(f"{where}: needs documents and at least one gold document")
        for lo, hi in self.doc_spans:
            if not 0 <= lo < hi <= self.query_start:
                raise HeadlabError(f"{where}: document span [{lo}, {hi}) must lie before the query span "
                                   f"({self.query_start})")
        if any(not 0 <= g < len(self.doc_spans) for g in self.gold):
            raise HeadlabError(f"{where}: gold document index out of range")


# --- inputs from task examples ------------------------------------------------------------------------------

def _document_char_spans(example: TaskExample) -> list[tuple[int, int]]:
    """Each document's [start, end) in the context: its header and text, found in context order."""
    spans, pos = [], 0
    for doc in example.documents:
        rendered = document_header(doc) + doc.text
        start = example.context.find(rendered, pos)
        if start < 0:
            raise HeadlabError(f"example {example.id}: document {doc.id} is not in its context as rendered "
                               f"({document_header(doc).strip()!r} ...), so its tokens cannot be located")
        spans.append((start, start + len(rendered)))
        pos = start + len(rendered)
    return spans


def query_input(example: TaskExample, tokenizer: Any, null_query: str = NULL_QUERY) -> QueryInput:
    """The QueryInput of a task example under the model's prompt template (the prompt evaluation uses)."""
    if not example.documents:
        raise HeadlabError(f"example {example.id}: field 'documents' is empty; query-focused scores need them")
    if not example.gold_doc_ids:
        raise HeadlabError(f"example {example.id}: field 'gold_doc_ids' is empty; query-focused scores need "
                           "the gold documents")
    prompts = [render_task_prompt(e, tokenizer) for e in (example, replace(example, question=null_query))]
    offset = prompts[0].find(example.context)
    if offset < 0 or prompts[1].find(example.context) != offset:
        raise HeadlabError(f"example {example.id}: the prompt template changed the context text, so the "
                           "documents cannot be located")
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    offsets = encoded[0]["offsets"]
    doc_chars = _document_char_spans(example)
    doc_spans = [char_to_token_span(offsets, offset + s, offset + e) for s, e in doc_chars]
    query_start = char_to_token_span(offsets, offset, offset + len(example.context))[1]
    ids = [e["input_ids"] for e in encoded]
    if ids[0][:query_start] != ids[1][:query_start]:
        raise HeadlabError(f"example {example.id}: the null question changed the tokens before the question "
                           "(a tokenizer merged the context's last token with the question)")
    index = {doc.id: i for i, doc in enumerate(example.documents)}
    return QueryInput(example.id, ids[0], ids[1], query_start, doc_spans, [index[g] for g in example.gold_doc_ids])


def query_inputs(examples: Sequence[TaskExample], tokenizer: Any, null_query: str = NULL_QUERY) -> list[QueryInput]:
    return [query_input(e, tokenizer, null_query) for e in examples]


# --- the score ------------------------------------------------------------------------------------------------

def document_score(calibrated: torch.Tensor, outlier_std: float = 2.0) -> torch.Tensor:
    """Per head, the sum of a document's calibrated token scores [head, tokens] above mean - k std."""
    if calibrated.shape[-1] < 2:
        return calibrated.sum(-1)
    threshold = calibrated.mean(-1, keepdim=True) - outlier_std * calibrated.std(-1, keepdim=True)
    return (calibrated * (calibrated > threshold)).sum(-1)


def example_score(query_keys: torch.Tensor, null_keys: torch.Tensor, item: QueryInput,
                  outlier_std: float = 2.0) -> torch.Tensor:
    """Per head, the example's score from the query-averaged weights on the shared prefix's keys
    ([head, query_start] for the real and the null question)."""
    calibrated = query_keys - null_keys
    return sum(document_score(calibrated[:, slice(*item.doc_spans[g])], outlier_std) for g in item.gold)


@dataclass
class QueryFocusedResult:
    scores: dict[str, list[float]]  # Retrieval_Head format: {"L-H": [score per example]}, query heads
    mean: dict[str, float]
    example_ids: list[str]
    geometry: HeadGeometry
    config: QueryFocusedConfig
    method: str = METHOD
    unit: str = UNIT

    def retrieval_scores(self) -> dict[str, list[float]]:
        return self.scores

    def summary(self) -> dict:
        return {"method": self.method, "unit": self.unit, "n_examples": len(self.example_ids),
                "example_ids": self.example_ids, "mean_scores": self.mean, "geometry": self.geometry.to_dict(),
                "config": asdict(self.config)}


def _batch_scores(model, seam: Seam, items: list[QueryInput], pad_id: int, outlier_std: float) -> torch.Tensor:
    """[examples, layer, head] scores of one batch: rows 2i and 2i+1 are example i's real and null prompts."""
    g = seam.geometry
    rows = [ids for item in items for ids in (item.query_ids, item.null_ids)]
    device = input_device(model)
    ids, mask = left_pad(rows, pad_id, device)
    width = ids.shape[1]
    lengths = [len(r) for r in rows]
    spans = [n - item.query_start for item in items for n in (len(item.query_ids), len(item.null_ids))]
    n_rows = max(spans)  # the last n_rows positions hold every row's query span
    # valid[b, r]: position width - n_rows + r of row b lies in its query span
    valid = torch.arange(n_rows)[None, :] >= (n_rows - torch.tensor(spans))[:, None]
    out = torch.zeros(len(items), g.n_layers, g.n_heads)
    seen: set[int] = set()

    def observe(layer: int, call: AttentionCall) -> None:
        if call.first_key != 0 or call.n_key != width:
            raise HeadlabError(f"query-focused scores: layer {layer} saw {call.n_key} keys from position "
                               f"{call.first_key}; the whole prompt of {width} was expected (no KV cache)")
        p = call.probabilities(torch.arange(width - n_rows, width))  # [rows, head, n_rows, keys]
        v = valid.to(p.device)[:, None, :, None]
        # A pad row sees no key (its weights are NaN): where() rather than a product keeps it out.
        per_key = torch.where(v, p, 0).sum(2) / v.sum(2).to(p.dtype)  # mean over the query span's rows
        per_key = per_key.cpu()
        for i, item in enumerate(items):
            real = per_key[2 * i, :, width - lengths[2 * i]:][:, :item.query_start]
            null = per_key[2 * i + 1, :, width - lengths[2 * i + 1]:][:, :item.query_start]
            out[i, layer] = example_score(real, null, item, outlier_std)
        seen.add(layer)

    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), seam.observe_attention(observe):
        model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1)
    if len(seen) != g.n_layers:
        raise HeadlabError(f"query-focused scores: the observer saw {len(seen)} of {g.n_layers} layers")
    return out


def query_focused_scores(model, items: Sequence[QueryInput], config: QueryFocusedConfig | None = None,
                         pad_id: int = 0, progress=None) -> QueryFocusedResult:
    """Every query head's score on every example (docstring of this module); `progress(n)` after each batch."""
    config = config or QueryFocusedConfig()
    config.check()
    items = list(items)
    if not items:
        raise HeadlabError("query-focused scores: no examples")
    for item in items:
        item.check()
    seam = Seam.attach(model)
    g = seam.geometry
    scores = torch.zeros(len(items), g.n_layers, g.n_heads)
    # Longest first, so that a batch pads little; results go back to the input order.
    order = sorted(range(len(items)), key=lambda i: -len(items[i].query_ids))
    for lo in range(0, len(order), config.batch_size):
        index = order[lo:lo + config.batch_size]
        scores[index] = _batch_scores(model, seam, [items[i] for i in index], pad_id, config.outlier_std)
        if progress is not None:
            progress(len(index))
    per_head = {head_name(layer, h): [float(s) for s in scores[:, layer, h]]
                for layer in range(g.n_layers) for h in range(g.n_heads)}
    return QueryFocusedResult(per_head, mean_scores(per_head), [i.id for i in items], g, config)
