"""Figures. matplotlib with the Agg backend: no display needed, PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from headlab.core.io import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def head_heatmap(matrix: np.ndarray, path: str | Path, title: str = "Retrieval score per head") -> None:
    """Layers x heads heatmap of mean scores, layer 0 at the top."""
    n_layers, n_heads = matrix.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * n_heads + 2), max(3.0, 0.22 * n_layers + 1.5)))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-6))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    ax.set_xticks(range(0, n_heads, max(1, n_heads // 16)))
    ax.set_yticks(range(0, n_layers, max(1, n_layers // 16)))
    fig.colorbar(im, ax=ax, label="mean score")
    save_figure(fig, path)
