"""Attention-pattern head scores, as TransformerLens's head detector (`transformer_lens/head_detector.py`,
its default "mul" measure) defines them: previous-token, duplicate-token and induction heads.

For one head on one sequence, with attention pattern P [query, key] and a 0/1 detection pattern D of the same
shape, the score is sum(P * D) / sum(P): the share of the head's attention, over the whole sequence, that goes
where the head type says it should (docs/definitions.md#attention-pattern-scores). `exclude_bos` zeroes P's
first key column first, `exclude_current_token` its diagonal. A head's score over several sequences is the
mean of its per-sequence scores.

Detection patterns, for the tokens t of a sequence:
- previous-token: D[i, i-1] = 1;
- duplicate-token: D[i, j] = 1 where j < i and t[j] == t[i];
- induction: the duplicate-token pattern shifted one column right (D[i, j] = dup[i, j-1], column 0 empty): the
  query attends to the token after an earlier copy of itself.

The usual inputs are `[bos] + r + r` with r random non-special tokens (`random_repeated_tokens`);
RazorAttention's protocol repeats r four times (`repeats=4`), and its "echo" heads are the duplicate-token
pattern (`razor_attention_heads` applies its selection rule). Heads are query heads. The weights come from the
seam's attention observer, which recomputes the model's own attention from query and keys, so the scores do
not depend on the attention implementation (sdpa, eager) or on batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from headlab.core.errors import HeadlabError, check_fields
from headlab.core.io import atomic_write_json
from headlab.experiments.detect import HEATMAP_FILE, SCORES_FILE, SUMMARY_FILE
from headlab.mech.heads import head_name, mean_scores, score_matrix
from headlab.model.attention_rows import AttentionCall
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam, input_device

METHODS = ("induction", "previous-token", "duplicate-token")
UNIT = "query head"


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class PatternConfig:
    method: str  # one of METHODS
    n_sequences: int = 32  # random [bos] + r + r sequences
    length: int = 24  # tokens in r: a sequence holds 1 + repeats * length
    repeats: int = 2  # copies of r after the bos (TransformerLens: 2; RazorAttention: 4)
    batch_size: int = 8  # sequences per forward (scores do not depend on it)
    seed: int = 0  # of the torch.Generator that draws r
    exclude_bos: bool = False  # zero the attention on key 0 before scoring
    exclude_current_token: bool = False  # zero the attention on the query's own position before scoring

    def __post_init__(self) -> None:
        self.check()

    def check(self, source: str = "pattern scores", prefix: str = "") -> None:
        """One line naming the first bad field."""
        check_fields(source, self, [
            ("method", isinstance(self.method, str) and self.method in METHODS, f"one of {', '.join(METHODS)}"),
            *[(n, _integer(getattr(self, n)) and getattr(self, n) >= 1, "an integer >= 1")
              for n in ("n_sequences", "length", "batch_size")],
            ("repeats", _integer(self.repeats) and self.repeats >= 2, "an integer >= 2"),
            ("seed", _integer(self.seed) and self.seed >= 0, "an integer >= 0"),
            *[(n, isinstance(getattr(self, n), bool), "true or false")
              for n in ("exclude_bos", "exclude_current_token")],
        ], prefix)


# --- inputs ---------------------------------------------------------------------------------------------------

def random_repeated_tokens(vocab_size: int, n: int, length: int, seed: int, bos_id: int,
                           exclude_ids: Sequence[int] = (), repeats: int = 2) -> torch.Tensor:
    """`n` sequences `[bos] + r * repeats`, r of `length` ids drawn uniformly (with repeats) from the ids below
    `vocab_size` that are neither `bos_id` nor in `exclude_ids`: LongTensor [n, 1 + repeats * length], on the
    CPU."""
    banned = {int(i) for i in exclude_ids} | {int(bos_id)}
    allowed = torch.tensor([i for i in range(vocab_size) if i not in banned], dtype=torch.long, device="cpu")
    if len(allowed) == 0:
        raise HeadlabError(f"random tokens: no token id below {vocab_size} is left once special tokens are excluded")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    # On the CPU whatever torch's default device is: the same draw everywhere.
    r = allowed[torch.randint(len(allowed), (n, length), generator=generator, device="cpu")]
    bos = torch.full((n, 1), int(bos_id), dtype=torch.long, device="cpu")
    return torch.cat([bos, *[r] * repeats], dim=1)


def repeated_tokens_for(model, config: PatternConfig, tokenizer=None) -> torch.Tensor:
    """`random_repeated_tokens` for a model: its BOS id (the tokenizer's, else the config's, else EOS), every
    special id of the tokenizer and config excluded, ids limited to those the tokenizer knows."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    vocab = cfg.vocab_size if tokenizer is None else min(cfg.vocab_size, len(tokenizer))
    special = [getattr(cfg, n, None) for n in ("bos_token_id", "eos_token_id", "pad_token_id")]
    if tokenizer is not None:
        special += list(tokenizer.all_special_ids)
    flat = [i for s in special for i in (s if isinstance(s, (list, tuple)) else [s]) if i is not None]
    candidates = [getattr(tokenizer, "bos_token_id", None), getattr(cfg, "bos_token_id", None),
                  getattr(tokenizer, "eos_token_id", None), getattr(cfg, "eos_token_id", None)]
    bos = next((c[0] if isinstance(c, (list, tuple)) else c for c in candidates if c not in (None, [], ())), None)
    if bos is None:
        raise HeadlabError("pattern scores: the model has no BOS or EOS token id to start the sequences with")
    return random_repeated_tokens(vocab, config.n_sequences, config.length, config.seed, int(bos), flat,
                                  config.repeats)


# --- detection patterns and the score ------------------------------------------------------------------------

def detection_pattern(method: str, tokens: torch.Tensor) -> torch.Tensor:
    """The 0/1 pattern a head of type `method` would show on each sequence: [n, pos, pos] float32 from
    tokens [n, pos] (lower triangular: only keys a causal query sees)."""
    if method not in METHODS:
        raise HeadlabError(f"pattern scores: method must be one of {', '.join(METHODS)} (got {method!r})")
    n, pos = tokens.shape
    if method == "previous-token":
        one = torch.diag(torch.ones(pos - 1, device=tokens.device), -1)
        return one.expand(n, pos, pos).clone()
    same = tokens[:, :, None] == tokens[:, None, :]  # [n, query, key]
    duplicate = torch.tril(same, diagonal=-1).float()  # a token is not a duplicate of itself
    if method == "duplicate-token":
        return duplicate
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]  # dup[i, j-1] needs j-1 < i, so j <= i: still causal
    return induction


def pattern_score(probabilities: torch.Tensor, pattern: torch.Tensor, exclude_bos: bool = False,
                  exclude_current_token: bool = False) -> torch.Tensor:
    """sum(P * D) / sum(P) over the last two dimensions (query, key): P [..., pos, pos] attention weights,
    D broadcastable 0/1 pattern. A head with no attention left after the exclusions scores 0."""
    p = probabilities
    if exclude_bos or exclude_current_token:
        p = p.clone()  # the caller's weights stay as they were
        if exclude_bos:
            p[..., :, 0] = 0
        if exclude_current_token:
            p.diagonal(dim1=-2, dim2=-1).zero_()
    total = p.sum((-2, -1))
    hit = (p * pattern).sum((-2, -1))
    return torch.where(total > 0, hit / total.clamp(min=torch.finfo(total.dtype).tiny), torch.zeros_like(total))


# --- running the model ----------------------------------------------------------------------------------------

@dataclass
class PatternResult:
    method: str
    scores: dict[str, list[float]]  # Retrieval_Head format: {"L-H": [score per sequence]}, query heads
    mean: dict[str, float]  # mean over sequences, per head
    n_sequences: int
    geometry: HeadGeometry
    config: PatternConfig
    unit: str = UNIT

    def retrieval_scores(self) -> dict[str, list[float]]:
        return self.scores

    def summary(self) -> dict:
        return {"method": self.method, "unit": self.unit, "n_sequences": self.n_sequences,
                "mean_scores": self.mean, "geometry": self.geometry.to_dict(), "config": asdict(self.config)}


def pattern_scores(model, tokens: torch.Tensor, config: PatternConfig,
                   attention_mask: torch.Tensor | None = None) -> PatternResult:
    """Every query head's score on every sequence of `tokens` [n, pos] (docstring of this module).

    The sequences run in batches of `config.batch_size`, without a KV cache; each layer's full attention
    pattern [batch, head, pos, pos] comes from the seam's observer (`AttentionCall.probabilities()` for every
    row). That is fine here because the sequences are short; long prompts would want `probabilities(rows)`.
    `attention_mask`, when given, must be all ones: the patterns assume every position is a real token.
    """
    config.check()
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise HeadlabError(f"pattern scores: tokens must be [sequences, positions] with at least 2 positions "
                           f"(got shape {tuple(tokens.shape)})")
    if attention_mask is not None and (attention_mask.shape != tokens.shape or not bool((attention_mask == 1).all())):
        raise HeadlabError("pattern scores: attention_mask must be all ones and shaped like the tokens "
                           "(padded sequences are not supported)")
    seam = Seam.attach(model)
    g = seam.geometry
    device = input_device(model)
    n, pos = tokens.shape
    patterns = detection_pattern(config.method, tokens.cpu())
    scores = torch.zeros(n, g.n_layers, g.n_heads, device="cpu")  # [sequence, layer, head]
    for lo in range(0, n, config.batch_size):
        hi = min(lo + config.batch_size, n)
        seen: set[int] = set()

        def observe(layer: int, call: AttentionCall, lo: int = lo, hi: int = hi, seen: set[int] = seen) -> None:
            if call.first_key != 0 or call.n_query != pos or call.n_key != pos:
                raise HeadlabError(f"pattern scores: layer {layer} saw {call.n_key} keys from position "
                                   f"{call.first_key} for {call.n_query} queries; a full sequence of {pos} was "
                                   "expected (no KV cache)")
            p = call.probabilities()  # [batch, head, pos, pos] float32: every row, short sequences only
            d = patterns[lo:hi, None].to(p.device)
            scores[lo:hi, layer] = pattern_score(p, d, config.exclude_bos, config.exclude_current_token).cpu()
            seen.add(layer)

        ids = tokens[lo:hi].to(device)
        mask = torch.ones_like(ids)
        with torch.no_grad(), seam.observe_attention(observe):
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        if len(seen) != g.n_layers:
            raise HeadlabError(f"pattern scores: the observer saw {len(seen)} of {g.n_layers} layers")
    per_head = {head_name(layer, h): [float(s) for s in scores[:, layer, h]]
                for layer in range(g.n_layers) for h in range(g.n_heads)}
    return PatternResult(config.method, per_head, mean_scores(per_head), n, g, config)


def write_head_scores(result, out_dir: str | Path, extra_config: dict | None = None) -> dict:
    """Write retrieval_scores.json (Retrieval_Head format), summary.json (`extra_config` joins its config) and
    the heatmap into `out_dir`, as detection does; return the summary. `result`: a PatternResult, or any
    result with its `retrieval_scores()`, `summary()`, `mean` and `geometry` (query_focused's)."""
    from headlab.core.plots import head_heatmap  # matplotlib only when a run folder is written

    out_dir = Path(out_dir)
    summary = result.summary()
    summary["config"].update(extra_config or {})
    atomic_write_json(out_dir / SCORES_FILE, result.retrieval_scores())
    head_heatmap(score_matrix(result.mean, result.geometry), out_dir / HEATMAP_FILE)
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def top_share(means: dict[str, float], ratio: float) -> set[str]:
    """The heads among the top `ratio` of all heads by score, round(n * ratio) of them, every head tied with the
    last one included (RazorAttention's rule, which keeps every head whose value is among the top values)."""
    if not 0 <= ratio <= 1:
        raise HeadlabError(f"head share: ratio must be in [0, 1] (got {ratio})")
    k = round(len(means) * ratio)
    if k == 0:
        return set()
    cut = sorted(means.values(), reverse=True)[k - 1]
    return {name for name, value in means.items() if value >= cut}


def razor_attention_heads(induction: dict[str, float], echo: dict[str, float], induction_ratio: float = 0.14,
                          echo_ratio: float = 0.01) -> list[str]:
    """RazorAttention's heads that keep a full cache: the top `induction_ratio` of heads by induction score
    united with the top `echo_ratio` by echo (duplicate-token) score (msModelSlim's defaults), sorted by name."""
    return sorted(top_share(induction, induction_ratio) | top_share(echo, echo_ratio),
                  key=lambda h: tuple(int(x) for x in h.split("-")))
