"""A minimal finished study run: the files the report reads, with figures drawn by headlab's plotting code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from headlab.core.io import atomic_write_json, atomic_write_text
from headlab.core.plots import head_heatmap
from headlab.experiments.compare import recall_score_correlation
from headlab.experiments.niah_sweep import niah_heatmap
from headlab.study.config import REAL, StudyConfig
from headlab.study.layout import BASE, eval_ref

N = 20  # held-out examples
IDS = [f"ex{i}" for i in range(N)]


def hits(k: int) -> list[float]:
    """Scores of N examples with the first k right: a mean of k / N."""
    return [1.0] * k + [0.0] * (N - k)


def knockout_record(k: int = 4, baseline: int = 16, top: int = 6, random: int = 14, seeds: int = 3) -> dict:
    """A knockout.json: baseline 0.8, top-K 0.3 and random 0.7 by default, over a curve 1, 2, ..., k."""
    curve = [{"k": 0, "top": baseline / N, "top_items": hits(baseline), "random": [], "random_items": []}]
    for kk in [x for x in (1, 2, 4, 8) if x < k] + [k]:
        curve.append({"k": kk, "top": top / N, "top_items": hits(top), "random": [random / N] * seeds,
                      "random_items": [hits(random)] * seeds})
    return {"k": k, "baseline": baseline / N, "baseline_items": hits(baseline), "top": top / N,
            "random_mean": random / N, "random": [random / N] * seeds, "curve": curve, "item_ids": IDS, "n_items": N}


def patch_record(target: int = 8, source: int = 16, patched: int = 10, size: int = 2) -> dict:
    sets = {s: {"size": size, "scores": [patched / N], "mean": patched / N, "items": [hits(patched)]}
            for s in ("intersection", "complement", "source")}
    sets["random"] = {"size": size, "scores": [target / N] * 2, "mean": target / N, "items": [hits(target)] * 2}
    curve = [{"k": k, "top": patched / N, "top_items": hits(patched), "random": [target / N] * 2,
              "random_items": [hits(target)] * 2} for k in (1, 2)]
    return {"k": size, "target": target / N, "source": source / N, "target_items": hits(target),
            "source_items": hits(source), "sets": sets, "curve": curve, "item_ids": IDS, "n_items": N}


def _predictions(folder: Path, right: int) -> None:
    atomic_write_text(folder / "predictions.jsonl", "".join(
        json.dumps({"id": i, "score": s}) + "\n" for i, s in zip(IDS, hits(right), strict=True)))
    atomic_write_json(folder / "summary.json", {"score": right / N, "n": N})


def fake_run(root: Path, config: StudyConfig) -> dict[str, Path]:
    """Write what `collect` and `write_report` read from a finished run; returns the report's deps."""
    rng = np.random.default_rng(0)
    task = config.tasks[0]
    models = [BASE, *config.models]
    deps = {}
    for i, m in enumerate(models):
        for s in [0] if m == BASE else range(config.finetune_seeds):
            deps[eval_ref(task, m, s)] = root / eval_ref(task, m, s)
            _predictions(root / eval_ref(task, m, s), 2 + 3 * i + s)
        atomic_write_json(root / "knockout" / task / m / "knockout.json", knockout_record())
        atomic_write_json(root / "heads" / task / m / "summary.json",
                          {"probes_counted": 8, "probes_given": 20, "config": {"no_probe_succeeded": False}})
        head_heatmap(rng.random((4, 8)), root / "heads" / task / m / "retrieval_heads.png")
    for v in config.variants:
        atomic_write_json(root / "patch" / task / v / "patching.json", patch_record())
    rows = [{"label": v, "recall": 0.25 * (i + 1), "jaccard": 0.2, "cosine": 0.9, "score": 0.3 + 0.2 * i}
            for i, v in enumerate(config.variants)]
    compare = {"vs_reference": rows, "files": [], "reference": "x",
               "spearman": recall_score_correlation([r["recall"] for r in rows], [r["score"] for r in rows])}
    atomic_write_json(root / "compare" / task / "compare.json", compare)
    for label in (BASE, f"{task}-{REAL}"):
        niah_heatmap({"lengths": [256, 512], "depths": [0.0, 1.0], "scores": [[1.0, 0.5], [0.5, 0.0]], "mean": 0.5},
                     root / "niah" / label / "niah.png")
        recs = [{"length": n, "depth": d, "needle_index": j, "score": float((n == 256) or j == 0)}
                for n in (256, 512) for d in (0.0, 1.0) for j in range(3)]
        atomic_write_text(root / "niah" / label / "niah_predictions.jsonl",
                          "".join(json.dumps(r) + "\n" for r in recs))
    return deps
