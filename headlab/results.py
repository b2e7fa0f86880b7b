"""Writing detection results to a run folder: scores, summary (with config), heatmap."""

from __future__ import annotations

from pathlib import Path

from headlab.detect import DetectionResult
from headlab.heads import score_matrix
from headlab.io import atomic_write_json
from headlab.plots import head_heatmap

SCORES_FILE = "retrieval_scores.json"
SUMMARY_FILE = "summary.json"
HEATMAP_FILE = "retrieval_heads.png"


def write_detection(result: DetectionResult, out_dir: str | Path, extra_config: dict | None = None) -> dict:
    """Write retrieval_scores.json, summary.json and the heatmap; return the summary."""
    out_dir = Path(out_dir)
    summary = result.summary()
    if extra_config:
        summary["config"].update(extra_config)
    atomic_write_json(out_dir / SCORES_FILE, result.retrieval_scores())
    head_heatmap(score_matrix(summary["mean_scores"], result.geometry), out_dir / HEATMAP_FILE)
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    return summary
