"""Scores per kv head: under grouped-query attention query head h reads kv head h // groups, so a kv head's
score gathers its group's query-head scores (docs/definitions.md#per-kv-head). KV-cache methods keep or drop a
kv head, not a query head: this is the unit they need."""

from __future__ import annotations

from headlab.core.errors import HeadlabError
from headlab.model.geometry import HeadGeometry

REDUCTIONS = ("max", "mean")


def kv_head_of(head: int, geometry: HeadGeometry) -> int:
    """The kv head query head `head` reads."""
    return head // (geometry.n_heads // geometry.n_kv_heads)


def kv_head_scores(means: dict[str, float], geometry: HeadGeometry, reduce: str = "max") -> dict[str, float]:
    """{"L-K": score} from query-head means {"L-H": score}: the max or mean over the query heads of each group."""
    if reduce not in REDUCTIONS:
        raise HeadlabError(f"kv-reduce: expected one of {', '.join(REDUCTIONS)}, got {reduce!r}")
    groups: dict[str, list[float]] = {}
    for name, score in means.items():
        layer, head = (int(x) for x in name.split("-"))
        groups.setdefault(f"{layer}-{kv_head_of(head, geometry)}", []).append(score)
    pick = max if reduce == "max" else (lambda xs: sum(xs) / len(xs))
    order = sorted(groups, key=lambda n: tuple(int(x) for x in n.split("-")))
    return {name: float(pick(groups[name])) for name in order}
