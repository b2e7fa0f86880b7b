"""Agreement between head-finding methods on one model: for every pair of methods, the Spearman rank correlation
of their per-head mean scores (over every head both scored) and the overlap of their top-K heads
(|top_K(A) & top_K(B)| / K, ties broken by head name as `mech.heads.ranked` does). Drawn as two method x method
matrices. Scores of one method and unit each, e.g. every `heads score` run's mean_scores on the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from headlab.core.errors import HeadlabError
from headlab.mech.heads import ranked


def agreement(scores: dict[str, dict[str, float]], k: int = 10) -> dict:
    """{"methods", "k", "spearman": [[rho]], "top_k_overlap": [[share]], "n_heads"} over method pairs."""
    methods = list(scores)
    if len(methods) < 2:
        raise HeadlabError("method agreement: needs the scores of at least two methods")
    if k < 1:
        raise HeadlabError(f"method agreement: field 'k' must be >= 1 (got {k})")
    heads = sorted(set.intersection(*(set(s) for s in scores.values())))
    if len(heads) < 2:
        raise HeadlabError("method agreement: the methods share fewer than two heads (different models or units?)")
    n = len(methods)
    rho = np.eye(n)
    share = np.eye(n)
    tops = {m: set(ranked({h: scores[m][h] for h in heads})[:k]) for m in methods}
    for i in range(n):
        for j in range(i + 1, n):
            a = [scores[methods[i]][h] for h in heads]
            b = [scores[methods[j]][h] for h in heads]
            r = spearmanr(a, b).statistic if np.std(a) > 0 and np.std(b) > 0 else float("nan")
            rho[i, j] = rho[j, i] = r
            share[i, j] = share[j, i] = len(tops[methods[i]] & tops[methods[j]]) / min(k, len(heads))
    return {"methods": methods, "k": k, "n_heads": len(heads), "spearman": rho.tolist(),
            "top_k_overlap": share.tolist(), "top_k": {m: sorted(t) for m, t in tops.items()}}


def plot_agreement(result: dict, path: str | Path, title: str = "") -> None:
    """Two heatmaps side by side: Spearman rho in [-1, 1], top-K overlap in [0, 1], values written in."""
    from headlab.core.plots import plt, save_figure

    methods = result["methods"]
    n = len(methods)
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 1.1 * n * 2, 1.5 + 0.9 * n))
    panels = [("spearman", f"rank correlation ({result['n_heads']} heads)", -1.0, "coolwarm"),
              ("top_k_overlap", f"top-{result['k']} overlap", 0.0, "viridis")]
    for ax, (key, label, low, cmap) in zip(axes, panels, strict=True):
        values = np.array(result[key], dtype=float)
        ax.imshow(values, vmin=low, vmax=1.0, cmap=cmap)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}", ha="center",
                        va="center", fontsize=8, color="black" if key == "spearman" else "white")
        ax.set_xticks(range(n), methods, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), methods, fontsize=8)
        ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
