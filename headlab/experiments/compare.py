"""Head-set comparison (docs/definitions.md#head-set-comparison): recall, Jaccard and score-vector cosine between
head-score files, and, given a downstream score per model, the Spearman correlation of recall with score."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from scipy.stats import spearmanr

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json, read_json
from headlab.mech.heads import SCORES_FILE, cosine, load_scores, mean_scores, overlap, parse_head, select_heads

SUMMARY_FILE = "summary.json"


@dataclass
class CompareConfig:
    threshold: float | None = 0.1  # retrieval heads have mean score >= this
    top_k: int | None = None  # take the top K heads instead of a threshold


def scores_path(path: str | Path) -> Path:
    path = Path(path)
    return path / SCORES_FILE if path.is_dir() else path


def read_means(path: str | Path) -> dict[str, float]:
    """Mean score per head from a Retrieval_Head file, or from a detect output folder."""
    return mean_scores(load_scores(scores_path(path)))


def score_geometry(path: str | Path, names: list[str]) -> tuple[int, int] | None:
    """(n_layers, n_heads) of the model a score file came from, or None when the file does not tell.

    A Retrieval_Head-format file carries no geometry itself. The rule, in order:
    1. a `headlab detect` run folder (retrieval_scores.json with a summary.json beside it) declares it in
       summary.json's "geometry";
    2. else, when the file's heads cover a full grid (every L-H for L < max layer + 1, H < max head + 1, as our
       writer and Retrieval_Head's write them), that grid is the geometry;
    3. else (a partial file, say the top heads only) the geometry is unknown and is not checked.
    """
    path = scores_path(path)
    summary = path.parent / SUMMARY_FILE
    if path.name == SCORES_FILE and summary.is_file():
        try:
            g = read_json(summary)
        except HeadlabError:
            g = None  # not ours to judge: fall back to the head names
        g = g.get("geometry") if isinstance(g, dict) else None
        if isinstance(g, dict) and all(isinstance(g.get(k), int) and not isinstance(g.get(k), bool) and g[k] > 0
                                       for k in ("n_layers", "n_heads")):
            return g["n_layers"], g["n_heads"]
    heads = {parse_head(n) for n in names}
    n_layers = max(layer for layer, _ in heads) + 1
    n_heads = max(h for _, h in heads) + 1
    return (n_layers, n_heads) if len(heads) == n_layers * n_heads else None


def check_same_geometry(files: list[tuple[str | Path, dict[str, float]]]) -> None:
    """Refuse files from models of different geometry (see `score_geometry`): their head sets cannot be
    compared, and recall would read 0 rather than meaning anything."""
    known = [(p, g) for p, m in files if (g := score_geometry(p, list(m))) is not None]
    for p, g in known[1:]:
        p0, g0 = known[0]
        if g != g0:
            raise HeadlabError(f"compare: {p0} is from a {g0[0]} layers x {g0[1]} heads model but {p} is from a "
                               f"{g[0]} layers x {g[1]} heads model; head sets of different geometries cannot be "
                               "compared")


def label_of(path: str | Path) -> str:
    path = Path(path)
    return path.name if path.is_dir() or path.name != SCORES_FILE else path.parent.name


def pair_stats(a: dict[str, float], r: dict[str, float], config: CompareConfig) -> dict[str, float]:
    """recall of R's heads by A's, Jaccard, shared count, and cosine of the full score vectors."""
    stats = overlap(select_heads(a, config.threshold, config.top_k), select_heads(r, config.threshold, config.top_k))
    return {**stats, "cosine": cosine(a, r)}


def recall_score_correlation(recalls: list[float], scores: list[float]) -> dict:
    """Spearman rho and two-sided p of recall against downstream score across models (None when undefined)."""
    if len(recalls) != len(scores):
        raise HeadlabError(f"compare: {len(scores)} downstream scores for {len(recalls)} models")
    if len(recalls) < 3:
        raise HeadlabError(f"compare: a Spearman correlation needs at least 3 models, got {len(recalls)}")
    if len(set(recalls)) < 2 or len(set(scores)) < 2:  # a constant input has no rank correlation
        return {"rho": None, "p": None, "n": len(recalls)}
    rho, p = spearmanr(recalls, scores)
    rho, p = float(rho), float(p)
    defined = not (math.isnan(rho) or math.isnan(p))
    return {"rho": rho if defined else None, "p": p if defined else None, "n": len(recalls)}


def compare_head_files(paths: list[str | Path], reference: str | Path | None = None,
                       downstream: list[float] | None = None, config: CompareConfig | None = None) -> dict:
    """Pairwise statistics of every file against every other, and each file against `reference` with the
    Spearman correlation of recall and `downstream` (one score per file, in order)."""
    config = config or CompareConfig()
    if len(paths) + (reference is not None) < 2:
        raise HeadlabError("compare: give at least two head-score files (or one and --reference)")
    if downstream is not None and reference is None:
        raise HeadlabError("compare: downstream scores need a reference head set (--reference)")
    if downstream is not None and len(downstream) != len(paths):
        raise HeadlabError(f"--scores: {len(downstream)} scores given for {len(paths)} head-score files")
    labels = [label_of(p) for p in paths]
    means = [read_means(p) for p in paths]
    ref = read_means(reference) if reference is not None else None
    check_same_geometry(list(zip(paths, means, strict=True)) + ([(reference, ref)] if ref is not None else []))
    out: dict = {"files": [str(p) for p in paths], "labels": labels,
                 "heads": {lab: select_heads(m, config.threshold, config.top_k)
                           for lab, m in zip(labels, means, strict=True)},
                 "pairwise": [{"a": labels[i], "r": labels[j], **pair_stats(means[i], means[j], config)}
                              for i in range(len(paths)) for j in range(len(paths)) if i != j],
                 "config": asdict(config)}
    if reference is not None:
        out["reference"] = str(reference)
        out["vs_reference"] = [{"label": lab, **pair_stats(m, ref, config)} for lab, m in zip(labels, means,
                                                                                              strict=True)]
        if downstream is not None:
            for row, s in zip(out["vs_reference"], downstream, strict=True):
                row["score"] = s
            out["spearman"] = recall_score_correlation([r["recall"] for r in out["vs_reference"]], downstream)
    return out


def plot_recall_vs_score(result: dict, path: str | Path) -> None:
    from headlab.core.plots import plt, save_figure

    rows = result["vs_reference"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter([r["recall"] for r in rows], [r["score"] for r in rows], color="C3")
    for r in rows:
        ax.annotate(r["label"], (r["recall"], r["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    sp = result["spearman"]
    rho = "undefined" if sp["rho"] is None else f"{sp['rho']:.2f} (p={sp['p']:.3g})"
    ax.set_xlabel("recall of the reference retrieval heads")
    ax.set_ylabel("downstream score")
    ax.set_title(f"Spearman rho {rho}, n={sp['n']}")
    save_figure(fig, path)


def write_compare(result: dict, out_dir: str | Path) -> None:
    """compare.json, config.json and, with downstream scores, recall_vs_score.png."""
    out = Path(out_dir)
    atomic_write_json(out / "config.json", {**result["config"], "files": result["files"],
                                            "reference": result.get("reference")})
    if "spearman" in result:
        plot_recall_vs_score(result, out / "recall_vs_score.png")
    atomic_write_json(out / "compare.json", result)
