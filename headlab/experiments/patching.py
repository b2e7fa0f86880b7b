"""Cross-model activation patching experiment (docs/definitions.md#activation-patching).

The target generates greedily while the source runs in lockstep on the same tokens; the target's z at the
patched heads is the source's at every position. Head sets, from the top K of each model's ranking (S for
the source, T for the target): `intersection` = S ∩ T, `complement` = S \\ T (only the source's), `source`
= S, and `random`: |S| heads outside S (fewer when S is over half the model), one set per seed. Unpatched
target and source scores come with them.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json
from headlab.core.progress import progress_bar
from headlab.experiments.evaluate import EvalItem, score_items
from headlab.mech.heads import random_heads
from headlab.mech.interventions import patch_from_model
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam

SET_NAMES = ("intersection", "complement", "source", "random")


@dataclass
class PatchConfig:
    k: int = 10  # top K of each model's ranking
    seeds: int = 3
    seed: int = 0
    max_new_tokens: int = 32
    batch_size: int = 8
    progress: bool = True
    # K values of a curve: the source's top K vs K random heads outside them (seeds sets each); none by default
    curve: list[int] | None = None
    sets: list[str] | None = None  # which of intersection, complement, source, random to patch (None: all)


def patch_head_sets(source_ranking: list[str], target_ranking: list[str], geometry: HeadGeometry, k: int,
                    seeds: int, seed: int) -> dict[str, list[list[str]]]:
    """Named head sets to patch; each name maps to one set, or one set per seed for `random`."""
    if not 1 <= k <= min(len(source_ranking), len(target_ranking)):
        raise HeadlabError(f"patch: field 'k' must be in [1, {min(len(source_ranking), len(target_ranking))}], "
                           f"got {k}")
    if seeds < 1:
        raise HeadlabError(f"patch: field 'seeds' must be >= 1, got {seeds}")
    s, t = source_ranking[:k], set(target_ranking[:k])
    sets = {"intersection": [[h for h in s if h in t]], "complement": [[h for h in s if h not in t]], "source": [s]}
    n_random = min(len(s), geometry.total_heads - len(s))  # fewer when S covers more than half the model
    if n_random:
        sets["random"] = [random_heads(geometry, n_random, seed + i, exclude=s) for i in range(seeds)]
    return sets


def run_patching(source: nn.Module, target: nn.Module, tokenizer, items: list[EvalItem],
                 source_ranking: list[str], target_ranking: list[str], config: PatchConfig | None = None) -> dict:
    config = config or PatchConfig()
    g = Seam.attach(target).geometry
    if Seam.attach(source).geometry != g:
        raise HeadlabError("patch: source and target have different head geometry")
    if not items:
        raise HeadlabError("patch: no data items")
    sets = patch_head_sets(source_ranking, target_ranking, g, config.k, config.seeds, config.seed)
    if config.sets is not None:
        unknown = [name for name in config.sets if name not in SET_NAMES]
        if unknown:
            raise HeadlabError(f"patch: field 'sets' must name sets among {', '.join(SET_NAMES)}, got {unknown[0]}")
        sets = {name: v for name, v in sets.items() if name in config.sets}
    curve_ks = sorted({k for k in (config.curve or []) if k > 0})
    bad = [k for k in curve_ks if k > min(len(source_ranking), g.total_heads // 2)]
    if bad:
        raise HeadlabError(f"patch: curve K={bad[0]} is more than the source's {len(source_ranking)} ranked heads "
                           f"or half of the model's {g.total_heads} heads")
    runs = 2 + sum(len(v) for v in sets.values()) + len(curve_ks) * (1 + config.seeds)
    bar = progress_bar(total=runs, desc="patch", unit="run", disable=not config.progress)

    def evaluate(model: nn.Module, heads: list[str] | None = None) -> list[float]:
        """Per-item scores (input order), with `heads` patched from the source when given."""
        bar.update(1)
        if heads is None:
            return score_items(model, tokenizer, items, config.max_new_tokens, config.batch_size)
        with patch_from_model(target, source, heads):
            return score_items(target, tokenizer, items, config.max_new_tokens, config.batch_size)

    target_items, source_items = evaluate(target), evaluate(source)
    result: dict = {"target": statistics.fmean(target_items), "source": statistics.fmean(source_items), "sets": {},
                    "target_items": target_items, "source_items": source_items}
    for name, head_sets in sets.items():
        # An empty set patches nothing: the target's own scores.
        per_set = [evaluate(target, heads) if heads else (bar.update(1), target_items)[1] for heads in head_sets]
        scores = [statistics.fmean(x) for x in per_set]
        result["sets"][name] = {"heads": head_sets if name == "random" else head_sets[0], "size": len(head_sets[0]),
                                "scores": scores, "mean": statistics.fmean(scores),
                                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0, "items": per_set}
    result["curve"] = []
    for k in curve_ks:
        top = source_ranking[:k]
        randoms = [random_heads(g, k, config.seed + s, exclude=top) for s in range(config.seeds)]
        top_items = evaluate(target, top)
        random_items = [evaluate(target, heads) for heads in randoms]
        result["curve"].append({"k": k, "top_heads": top, "top": statistics.fmean(top_items), "top_items": top_items,
                                "random_heads": randoms, "random": [statistics.fmean(x) for x in random_items],
                                "random_items": random_items})
    bar.close()
    result.update(k=config.k, n_items=len(items), item_ids=[it.id for it in items], geometry=g.to_dict())
    return result


def plot_patching(result: dict, path: str | Path, title: str = "Cross-model patching") -> None:
    from headlab.core.plots import plt, save_figure

    names = ["target", "source"] + list(result["sets"])
    means = [result["target"], result["source"]] + [v["mean"] for v in result["sets"].values()]
    errs = [0.0, 0.0] + [v["std"] for v in result["sets"].values()]
    labels = names[:2] + [f"{n}\n({v['size']} heads)" for n, v in result["sets"].items()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(names)), means, yerr=errs, capsize=3,
           color=["gray", "black"] + [f"C{i}" for i in range(len(names) - 2)])
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_ylabel("target score")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    save_figure(fig, path)


def write_patching(result: dict, out_dir: str | Path, config: PatchConfig, extra: dict | None = None) -> None:
    """patching.json, config.json and patching.png in `out_dir`."""
    out = Path(out_dir)
    atomic_write_json(out / "config.json", {**asdict(config), **(extra or {})})
    plot_patching(result, out / "patching.png", f"Cross-model patching, top {config.k}, n={result['n_items']}")
    atomic_write_json(out / "patching.json", result)
