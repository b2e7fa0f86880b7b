"""Head names and head-score files in the Retrieval_Head format: {"L-H": [score per probe, ...]}."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from headlab.core.errors import HeadlabError, where
from headlab.core.io import read_json
from headlab.model.geometry import HeadGeometry

Head = tuple[int, int]
SCORES_FILE = "retrieval_scores.json"  # a detection run folder's head-score file


def head_name(layer: int, head: int) -> str:
    return f"{layer}-{head}"


def parse_head(name: str, source: str = "head") -> Head:
    """'12-7' -> (12, 7); anything else is an error naming its source.

    Only the canonical spelling is a head name: ASCII digits without leading zeros, so '05-00' and '5-0'
    cannot both appear in one file as two names of the same head, and '٥-٠' (Arabic-Indic digits) is not
    read as 5-0."""
    parts = name.split("-") if isinstance(name, str) else []
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts) or name != head_name(
            int(parts[0]), int(parts[1])):
        raise HeadlabError(f"{source}: {name!r} is not a head name of the form LAYER-HEAD (like '12-7')")
    return int(parts[0]), int(parts[1])


def load_scores(path: str | Path, geometry: HeadGeometry | None = None) -> dict[str, list[float]]:
    """Read and check a Retrieval_Head-format file (ours or another tool's); optionally check head ranges.

    Every head must hold the same number of scores (one per counted probe); a ragged file is refused,
    naming the first head whose length differs from the first head's. A bare number is read as a list of
    one (some tools store the mean only), so a file of means only is fine but a mix of means and lists is
    not."""
    raw = read_json(path)
    if not isinstance(raw, dict) or not raw:
        raise HeadlabError(f"{path}: expected a non-empty JSON object of head name -> list of scores")
    scores = {}
    for name, values in raw.items():
        layer, head = parse_head(name, where(path, None, name))
        if geometry is not None:
            geometry.check_head(layer, head, str(path))
        if isinstance(values, (int, float)) and not isinstance(values, bool):
            values = [values]  # some tools store the mean only
        if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise HeadlabError(f"{where(path, None, name)}: expected a list of finite numbers")
        scores[head_name(layer, head)] = [float(v) for v in values]
    first, *rest = scores
    for name in rest:
        if len(scores[name]) != len(scores[first]):
            raise HeadlabError(
                f"{path}: head '{name}' has {len(scores[name])} scores but head '{first}' has "
                f"{len(scores[first])}; a Retrieval_Head-format file has one score per counted probe for every "
                "head")
    return scores


def mean_scores(scores: dict[str, list[float]]) -> dict[str, float]:
    """Mean per head; a head with no counted probes scores 0."""
    return {name: (sum(v) / len(v) if v else 0.0) for name, v in scores.items()}


def ranked(means: dict[str, float]) -> list[str]:
    """Head names by descending mean score; ties by (layer, head) so the order is deterministic."""
    return sorted(means, key=lambda n: (-means[n], parse_head(n)))


def scored_ranking(means: dict[str, float]) -> list[str]:
    """`ranked`, without the heads whose mean is 0: they never copied, and ranking their ties by index would
    fill a top-K set with arbitrary heads (often a whole early layer)."""
    return [n for n in ranked(means) if means[n] > 0]


def select_heads(means: dict[str, float], threshold: float | None = 0.1, top_k: int | None = None) -> list[str]:
    """The retrieval heads: the top K of `scored_ranking` when top_k is given (fewer when fewer heads
    scored), else those with mean >= threshold; ranked."""
    order = ranked(means)
    if top_k is not None:
        if top_k < 0:
            raise HeadlabError(f"top-k must be >= 0, got {top_k}")
        return scored_ranking(means)[:top_k]
    if threshold is None:
        return order
    return [n for n in order if means[n] >= threshold]


def score_matrix(means: dict[str, float], geometry: HeadGeometry | None = None) -> np.ndarray:
    """[layer, head] array of mean scores; the shape comes from the geometry or the largest names."""
    heads = [parse_head(n) for n in means]
    if geometry is None:
        n_layers = max(layer for layer, _ in heads) + 1
        n_heads = max(h for _, h in heads) + 1
    else:
        n_layers, n_heads = geometry.n_layers, geometry.n_heads
    matrix = np.zeros((n_layers, n_heads))
    for (layer, head), value in zip(heads, means.values(), strict=True):
        matrix[layer, head] = value
    return matrix


def random_heads(geometry: HeadGeometry, k: int, seed: int = 0, exclude: Sequence[str] = ()) -> list[str]:
    """K heads drawn uniformly without replacement from those not in `exclude`, sorted by (layer, head): the
    control for a tested or selected set (knockout, patching, LoFiT). Same seed, same draw."""
    excluded = set(exclude)
    pool = [head_name(layer, h) for layer in range(geometry.n_layers) for h in range(geometry.n_heads)
            if head_name(layer, h) not in excluded]
    if not 1 <= k <= len(pool):
        raise HeadlabError(f"random heads: cannot draw {k} of the {len(pool)} heads outside the tested set")
    return sorted(random.Random(seed).sample(pool, k), key=parse_head)


def overlap(a: list[str], r: list[str]) -> dict[str, float]:
    """Recall |A & R| / |R| and Jaccard of two head sets (docs/definitions.md#head-set-comparison)."""
    sa, sr = set(a), set(r)
    union = sa | sr
    return {
        "recall": len(sa & sr) / len(sr) if sr else 0.0,
        "jaccard": len(sa & sr) / len(union) if union else 0.0,
        "intersection": len(sa & sr),
    }


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    """Cosine similarity of two full score vectors over the union of their heads (missing = 0)."""
    names = sorted(set(a) | set(b), key=parse_head)
    va = np.array([a.get(n, 0.0) for n in names])
    vb = np.array([b.get(n, 0.0) for n in names])
    denom = np.linalg.norm(va) * np.linalg.norm(vb)
    return float(va @ vb / denom) if denom else 0.0
