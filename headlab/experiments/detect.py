"""Retrieval-head detection: the copy-paste retrieval score of Wu et al. 2024 (docs/definitions.md#retrieval-score).

The prompt is prefilled with the model's own fast attention; each greedy decoding step then reuses the KV
cache, and the seam computes, for the new query only, the top-1 key of every head. Memory grows linearly
with the context; no attention matrix is ever built.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from headlab.core.distributed import map_items
from headlab.core.io import atomic_write_json
from headlab.core.progress import progress_bar
from headlab.data.probes import Probe, check_context_length
from headlab.data.prompts import pad_id_of
from headlab.mech.generate import greedy_decode, left_pad, stop_ids
from headlab.mech.heads import SCORES_FILE, head_name, mean_scores, score_matrix, select_heads
from headlab.model.geometry import HeadGeometry
from headlab.model.loading import max_positions
from headlab.model.seam import Seam, input_device


@dataclass
class DetectConfig:
    max_new_tokens: int = 50
    batch_size: int = 8  # probes per batch (scores do not depend on it)
    keep_failed: bool = False  # count every probe, not only those whose generation succeeded
    success_recall: float = 0.5  # unigram recall of the needle in the response for a probe to count
    threshold: float = 0.1  # a retrieval head has mean score >= threshold ...
    top_k: int | None = None  # ... or is among the top K
    allow_long_context: bool = False  # allow prompts longer than the model's max_position_embeddings
    progress: bool = True

    def counts(self, recall: float) -> bool:
        """Whether a probe whose response scored `recall` (or `success`) counts in the retrieval score."""
        return self.keep_failed or recall >= self.success_recall


@dataclass
class ProbeOutcome:
    id: str
    response_ids: list[int]
    response: str
    recall: float
    counted: bool
    scores: torch.Tensor = field(repr=False)  # [layer, head] copies / needle length


@dataclass
class DetectionResult:
    geometry: HeadGeometry
    outcomes: list[ProbeOutcome]
    config: DetectConfig

    def recounted(self, config: DetectConfig) -> DetectionResult:
        """The same responses and scores counted under `config` (say with `keep_failed`), without decoding
        again."""
        return DetectionResult(self.geometry, [replace(o, counted=config.counts(o.recall)) for o in self.outcomes],
                               config)

    def retrieval_scores(self) -> dict[str, list[float]]:
        """The Retrieval_Head format: {"L-H": [score per counted probe]}."""
        counted = [o.scores for o in self.outcomes if o.counted]
        g = self.geometry
        return {head_name(layer, h): [float(s[layer, h]) for s in counted]
                for layer in range(g.n_layers) for h in range(g.n_heads)}

    def summary(self) -> dict:
        means = mean_scores(self.retrieval_scores())
        return {
            "mean_scores": means,
            "retrieval_heads": select_heads(means, self.config.threshold, self.config.top_k),
            "probes_given": len(self.outcomes),
            "probes_counted": sum(o.counted for o in self.outcomes),
            "probes": [{"id": o.id, "counted": o.counted, "recall": round(o.recall, 4), "response": o.response}
                       for o in self.outcomes],
            "geometry": self.geometry.to_dict(),
            "config": asdict(self.config),
        }


_WORD = re.compile(r"\w+")


def unigram_recall(reference: list, response: list) -> float:
    """ROUGE-1 recall: clipped unigram overlap over the reference length."""
    if not reference:
        return 0.0
    overlap = Counter(reference) & Counter(response)
    return sum(overlap.values()) / len(reference)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@torch.no_grad()
def greedy_copy_scores(model, seam: Seam, probes: list[Probe], stop_sets: list[set[int]], max_new_tokens: int,
                       pad_id: int) -> list[tuple[list[int], torch.Tensor]]:
    """Greedy-decode a batch (left-padded) and count copies per head. Returns (response ids, copies) per probe.

    At every step the query is the last position: the top-1 key `i` of each head, in prompt coordinates,
    copies when it lies in the needle and prompt_ids[i] is the token that step generates. A probe's stop
    token is scored and kept in its response (docs/definitions.md#retrieval-score).
    """
    device = input_device(model)
    g = seam.geometry
    input_ids, mask = left_pad([p.input_ids for p in probes], pad_id, device)
    width = input_ids.shape[1]
    pads = width - mask.sum(-1)
    # Positions of the left-padded sequence, the coordinates the seam reports top-1 keys in (every layer).
    needle_lo = torch.tensor([p.needle_start for p in probes], device=device) + pads
    needle_hi = torch.tensor([p.needle_end for p in probes], device=device) + pads
    copies = torch.zeros(len(probes), g.n_layers, g.n_heads, device=device)

    with seam.capture_top1() as recorder:
        def count_copies(step: int, token: torch.Tensor, live: torch.Tensor) -> None:
            top1 = recorder.pop().to(device)  # (B, L, H), absolute positions (sliding-window layers mapped back)
            in_needle = (top1 >= needle_lo[:, None, None]) & (top1 < needle_hi[:, None, None])
            attended = input_ids.gather(1, top1.clamp(max=width - 1).flatten(1)).view_as(top1)
            copies.add_((in_needle & (attended == token[:, None, None]) & live[:, None, None]).float())

        responses = greedy_decode(model, input_ids, mask, stop_sets, max_new_tokens, on_step=count_copies,
                                  keep_stop=True)
    spans = (needle_hi - needle_lo).float()
    return [(responses[row], (copies[row] / spans[row]).cpu()) for row in range(len(probes))]


SuccessFn = Callable[[Probe, str, list[int]], float]  # (probe, response text, response ids) -> success score
# (model, seam, probes, stop sets, max new tokens, pad id) -> (response ids, [layer, head] scores) per probe: how a
# batch is decoded and scored. Copy-paste retrieval is greedy_copy_scores; the other decoding-time atlas methods
# (experiments/attention_mass.py) plug in here and share batching, filtering and the run folder.
StepScorer = Callable[..., list[tuple[list[int], torch.Tensor]]]


def detect_retrieval_heads(model, tokenizer, probes: list[Probe], config: DetectConfig | None = None,
                           success: SuccessFn | None = None,
                           scorer: StepScorer = greedy_copy_scores) -> DetectionResult:
    """Retrieval scores of every head over the probes (docs/definitions.md#retrieval-score).

    `success` replaces the needle-recall filter: a probe counts when it returns >= config.success_recall.
    The task retrieval score passes the task metric here (docs/definitions.md#task-retrieval-score).
    `scorer` decodes and scores one batch (default: the copy-paste score).
    """
    config = config or DetectConfig()
    seam = Seam.attach(model)
    if not config.allow_long_context:
        check_context_length(probes, max_positions(model.config), config.max_new_tokens)
    pad_id = pad_id_of(tokenizer)
    stops = {kind: stop_ids(model, tokenizer, kind) for kind in {p.stops_at_newline for p in probes}}
    # Batch probes of similar length together; results are reported in the input order.
    def score(block: list[Probe]) -> list[ProbeOutcome]:
        order = sorted(range(len(block)), key=lambda i: -len(block[i].input_ids))
        outcomes: dict[int, ProbeOutcome] = {}
        bar = progress_bar(total=len(block), desc="detect", unit="probe", disable=not config.progress)
        for lo in range(0, len(order), config.batch_size):
            idx = order[lo:lo + config.batch_size]
            batch = [block[i] for i in idx]
            results = scorer(model, seam, batch, [stops[p.stops_at_newline] for p in batch],
                             config.max_new_tokens, pad_id)
            for i, p, (response_ids, scores) in zip(idx, batch, results, strict=True):
                outcomes[i] = _outcome(p, response_ids, scores, tokenizer, config, success)
            bar.update(len(batch))
        bar.close()
        return [outcomes[i] for i in range(len(block))]

    # Under `accelerate launch` each process scores its block of probes; all get every outcome back.
    outcomes = map_items(score, probes)
    return DetectionResult(seam.geometry, outcomes, config)


def _outcome(probe: Probe, response_ids: list[int], scores: torch.Tensor, tokenizer,
             config: DetectConfig, success: SuccessFn | None) -> ProbeOutcome:
    response = tokenizer.decode(response_ids, skip_special_tokens=True)
    if success is not None:
        recall = float(success(probe, response, response_ids))
    elif probe.is_text:
        recall = unigram_recall(words(probe.needle), words(response))
    else:
        recall = unigram_recall(probe.needle_ids, response_ids)
    return ProbeOutcome(probe.id, response_ids, response, recall, config.counts(recall), scores)


# --- the run folder -----------------------------------------------------------------------------------------

SUMMARY_FILE = "summary.json"
HEATMAP_FILE = "retrieval_heads.png"


def write_detection(result: DetectionResult, out_dir: str | Path, extra_config: dict | None = None) -> dict:
    """Write retrieval_scores.json, summary.json and the heatmap; return the summary."""
    from headlab.core.plots import head_heatmap  # matplotlib only when a run folder is written

    out_dir = Path(out_dir)
    summary = result.summary()
    if extra_config:
        summary["config"].update(extra_config)
    atomic_write_json(out_dir / SCORES_FILE, result.retrieval_scores())
    head_heatmap(score_matrix(summary["mean_scores"], result.geometry), out_dir / HEATMAP_FILE)
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary
