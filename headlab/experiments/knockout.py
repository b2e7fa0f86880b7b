"""Knockout experiment: task score with the top-K heads knocked out, against K random heads outside the top
set over several seeds, and a curve over K (docs/definitions.md#knockout)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json
from headlab.core.progress import progress_bar
from headlab.data.prompts import pad_id_of
from headlab.experiments.evaluate import EvalItem, prompt_batches, score_items
from headlab.mech.heads import random_heads
from headlab.mech.interventions import MODES, WHERE, head_means, knockout
from headlab.model.geometry import HeadGeometry
from headlab.model.seam import Seam, input_device


@dataclass
class KnockoutConfig:
    k: int = 10
    mode: str = "uniform"
    where: str = "decode"
    seeds: int = 5  # random control sets per K
    seed: int = 0  # control set s is drawn with seed + s
    curve: list[int] | None = None  # K values of the curve; default 0, k/4, k/2, 3k/4, k
    max_new_tokens: int = 32
    batch_size: int = 8
    progress: bool = True

    def check(self, geometry: HeadGeometry, n_ranked: int) -> list[int]:
        """Validate; return the curve's K values (sorted, k included)."""
        if self.mode not in MODES:
            raise HeadlabError(f"knockout: field 'mode' must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.where not in WHERE:
            raise HeadlabError(f"knockout: field 'where' must be one of {', '.join(WHERE)}, got {self.where!r}")
        if self.seeds < 1:
            raise HeadlabError(f"knockout: field 'seeds' must be >= 1, got {self.seeds}")
        ks = sorted({0, self.k, *(self.curve if self.curve is not None
                                  else (round(self.k * f) for f in (0.25, 0.5, 0.75)))})
        # The random control needs K heads outside the top K.
        limit = min(n_ranked, geometry.total_heads // 2)
        bad = [k for k in ks if not 0 <= k <= limit]
        if bad:
            field = "k" if bad[0] == self.k else "curve"  # name the setting the user actually gave
            raise HeadlabError(f"knockout: field '{field}' must be in [0, {limit}] (ranked heads: {n_ranked}, "
                               f"total heads: {geometry.total_heads}), got {bad[0]}")
        return ks


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_knockout(model: nn.Module, tokenizer, items: list[EvalItem], ranking: list[str],
                 config: KnockoutConfig | None = None) -> dict:
    """Knock out the top-K of `ranking` (best first) and random controls; return scores and the curve."""
    config = config or KnockoutConfig()
    g = Seam.attach(model).geometry
    ks = config.check(g, len(ranking))
    if not items:
        raise HeadlabError("knockout: no data items")
    means = None
    if config.mode == "mean":  # reference set: the evaluation prompts themselves
        means = head_means(model, prompt_batches(items, pad_id_of(tokenizer), config.batch_size, input_device(model)))

    def evaluate(heads: list[str]) -> list[float]:
        """Per-item scores (input order): paired tests across conditions need them, not just the mean."""
        with knockout(model, heads, config.mode, config.where, means):
            return score_items(model, tokenizer, items, config.max_new_tokens, config.batch_size)

    runs = 1 + sum(1 + config.seeds for k in ks if k > 0)
    bar = progress_bar(total=runs, desc="knockout", unit="run", disable=not config.progress)
    baseline_items = evaluate([])
    baseline = statistics.fmean(baseline_items)
    bar.update(1)
    curve = []
    for k in ks:
        top = ranking[:k]
        point = {"k": k, "top_heads": top, "top": baseline, "random": [], "random_heads": [],
                 "top_items": baseline_items, "random_items": []}
        if k > 0:
            point["top_items"] = evaluate(top)
            point["top"] = statistics.fmean(point["top_items"])
            bar.update(1)
            for s in range(config.seeds):
                heads = random_heads(g, k, config.seed + s, exclude=top)
                point["random_heads"].append(heads)
                point["random_items"].append(evaluate(heads))
                point["random"].append(statistics.fmean(point["random_items"][-1]))
                bar.update(1)
        point["random_mean"], point["random_std"] = _spread(point["random"]) if k > 0 else (baseline, 0.0)
        curve.append(point)
    bar.close()
    main = next(p for p in curve if p["k"] == config.k)
    return {"baseline": baseline, "k": config.k, "top": main["top"], "top_heads": main["top_heads"],
            "random_mean": main["random_mean"], "random_std": main["random_std"], "random": main["random"],
            "curve": curve, "n_items": len(items), "item_ids": [it.id for it in items],
            "baseline_items": baseline_items, "geometry": g.to_dict()}


def plot_knockout(result: dict, path: str | Path, title: str = "Knockout") -> None:
    from headlab.core.plots import plt, save_figure

    ks = [p["k"] for p in result["curve"]]
    top = [p["top"] for p in result["curve"]]
    mean = [p["random_mean"] for p in result["curve"]]
    std = [p["random_std"] for p in result["curve"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, top, "o-", color="C3", label="top-K heads")
    ax.plot(ks, mean, "s--", color="C0", label="random K heads (mean)")
    ax.fill_between(ks, [m - s for m, s in zip(mean, std, strict=True)],
                    [m + s for m, s in zip(mean, std, strict=True)], color="C0", alpha=0.2, label="random ±1 sd")
    ax.axhline(result["baseline"], color="gray", lw=0.8, ls=":", label="no knockout")
    ax.set_xlabel("K heads knocked out")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_knockout(result: dict, out_dir: str | Path, config: KnockoutConfig, extra: dict | None = None) -> None:
    """knockout.json, config.json and knockout_curve.png in `out_dir`."""
    out = Path(out_dir)
    atomic_write_json(out / "config.json", {**asdict(config), **(extra or {})})
    plot_knockout(result, out / "knockout_curve.png",
                  f"Knockout ({config.mode}, {config.where}), n={result['n_items']}")
    atomic_write_json(out / "knockout.json", result)
