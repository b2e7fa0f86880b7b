"""A minimal finished study run: the files the report reads, with figures drawn by headlab's plotting code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headlab.compare import plot_recall_vs_score, recall_score_correlation
from headlab.io import atomic_write_json
from headlab.niah_sweep import niah_heatmap
from headlab.plots import head_heatmap
from headlab.study.config import REAL, StudyConfig
from headlab.study.report import BASE


def fake_run(root: Path, config: StudyConfig) -> dict[str, Path]:
    """Write what `collect` and `write_report` read from a finished run; returns the report's deps."""
    rng = np.random.default_rng(0)
    task = config.tasks[0]
    models = [BASE, *config.models]
    deps = {}
    for i, m in enumerate(models):
        deps[f"eval/{task}/{m}"] = root / "eval" / task / m
        atomic_write_json(root / "eval" / task / m / "summary.json", {"score": 0.2 + 0.15 * i, "n": 16})
        atomic_write_json(root / "knockout" / task / m / "knockout.json",
                          {"k": 4, "baseline": 0.8, "top": 0.3, "random_mean": 0.7, "random_std": 0.05})
        atomic_write_json(root / "heads" / task / m / "summary.json", {"probes_counted": 8})
        head_heatmap(rng.random((4, 8)), root / "heads" / task / m / "retrieval_heads.png")
    for v in config.variants:
        atomic_write_json(root / "patch" / task / v / "patching.json", {
            "target": 0.4, "source": 0.8,
            "sets": {s: {"mean": 0.5, "size": 2} for s in ("intersection", "complement", "random")}})
    rows = [{"label": v, "recall": 0.25 * (i + 1), "jaccard": 0.2, "cosine": 0.9, "score": 0.3 + 0.2 * i}
            for i, v in enumerate(config.variants)]
    compare = {"vs_reference": rows, "files": [], "reference": "x",
               "spearman": recall_score_correlation([r["recall"] for r in rows], [r["score"] for r in rows])}
    atomic_write_json(root / "compare" / task / "compare.json", compare)
    plot_recall_vs_score(compare, root / "compare" / task / "recall_vs_score.png")
    for label in (BASE, f"{task}-{REAL}"):
        niah_heatmap({"lengths": [256, 512], "depths": [0.0, 1.0], "scores": [[1.0, 0.5], [0.5, 0.0]], "mean": 0.5},
                     root / "niah" / label / "niah.png")
    return deps
