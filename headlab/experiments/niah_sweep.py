"""Needle-in-a-haystack sweep over context lengths x needle depths, with the classic heatmap.

    cells, records = niah_sweep(model, tokenizer, NiahSweepConfig(lengths=[256, 512, 1024]))

Needles come from a NIAH spec file (haystack text files and needles, headlab.data.niah; any model), or by
default from the toy world (a fact sentence in toy filler, asked about; the shipped tiny model's domain).
A probe scores 1 when the answer appears in the response (substring match after normalisation); a spec
needle without an answer scores the ROUGE-1 recall of the needle sentence instead. Prompts may run past the
model's max_position_embeddings on purpose: the sweep shows where retrieval breaks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headlab.core.distributed import map_items
from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json, atomic_write_text
from headlab.data.metrics import substring_match
from headlab.data.niah import check_lengths, insert_at_depth, length_limit, load_niah_spec, niah_context
from headlab.data.prompts import encode_prompt, render_prompt
from headlab.experiments.evaluate import generate_with_progress


@dataclass
class NiahSweepConfig:
    lengths: list[int] = field(default_factory=lambda: [256, 512, 1024])
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    needles: int = 4               # needles per cell (toy world); a spec uses its own needle list
    seed: int = 0
    max_new_tokens: int = 40
    batch_size: int = 8
    spec: str | None = None        # NIAH spec file; its lengths and depths replace the ones above

    def check(self) -> None:
        if not self.lengths or any(n < 1 for n in self.lengths):
            raise HeadlabError(f"niah: field 'lengths' must be positive token counts (got {self.lengths})")
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise HeadlabError(f"niah: field 'depths' must be fractions in [0, 1] (got {self.depths})")
        if self.needles < 1:
            raise HeadlabError(f"niah: field 'needles' must be >= 1 (got {self.needles})")


def _words(text: str) -> list[str]:
    from headlab.experiments.detect import words

    return words(text)


def toy_probes(tokenizer, cfg: NiahSweepConfig) -> list[dict[str, Any]]:
    """Toy-world probes: for each length and needle, one haystack with the needle moved to every depth."""
    from headlab.data.world_niah import niah_records

    probes = []
    for length in cfg.lengths:
        for k in range(cfg.needles):
            # One toy probe gives a haystack sized for `length` and a needle; re-place the needle per depth.
            base = niah_records(tokenizer, 1, length, seed=hash_seed(cfg.seed, length, k))[0]
            haystack = " ".join(base["context"].replace(base["needle"], " ").split())
            for depth in cfg.depths:
                probes.append({"length": length, "depth": depth, "needle_index": k, "needle": base["needle"],
                               "question": base["question"], "answer": base["short_answer"],
                               "context": insert_at_depth(haystack, base["needle"], depth)})
    return probes


def hash_seed(*parts: int) -> int:
    """A stable seed from several integers (Python's hash() of a tuple changes between runs)."""
    return random.Random(repr(parts)).randrange(2**31)


def spec_probes(tokenizer, cfg: NiahSweepConfig, max_positions: int | None = None) -> list[dict[str, Any]]:
    spec = load_niah_spec(cfg.spec, length_limit(max_positions), max_positions)
    cfg.lengths, cfg.depths = spec.lengths, spec.depths
    haystack_ids = tokenizer(spec.haystack_text, add_special_tokens=False)["input_ids"]
    return [{"length": length, "depth": depth, "needle_index": k, "needle": n["needle"], "question": n["question"],
             "answer": n.get("answer"), "context": niah_context(tokenizer, haystack_ids, n, length,
                                                                         depth, spec.source)}
            for k, n in enumerate(spec.needles) for length in spec.lengths for depth in spec.depths]


def probe_score(probe: dict[str, Any], prediction: str) -> float:
    if probe.get("answer"):
        return substring_match(prediction, [probe["answer"]])
    reference, response = _words(probe["needle"]), set(_words(prediction))
    return sum(w in response for w in reference) / max(len(reference), 1)


def niah_sweep(model, tokenizer, cfg: NiahSweepConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the sweep; returns the grid ({lengths, depths, scores[depth][length]}) and per-probe records."""
    from headlab.model.loading import max_positions

    cfg.check()
    positions = max_positions(model.config) if hasattr(model, "config") else None
    if not cfg.spec:
        check_lengths(cfg.lengths, length_limit(positions), "niah", positions)
    probes = spec_probes(tokenizer, cfg, positions) if cfg.spec else toy_probes(tokenizer, cfg)
    prompts = [encode_prompt(tokenizer, render_prompt(tokenizer, p["context"], p["question"])) for p in probes]
    outputs = map_items(lambda block: generate_with_progress(model, tokenizer, block, cfg.max_new_tokens,
                                                             cfg.batch_size, desc="niah"), prompts)
    records = []
    for p, ids, out in zip(probes, prompts, outputs, strict=True):
        prediction = tokenizer.decode(out, skip_special_tokens=True).strip()
        records.append({"length": p["length"], "depth": p["depth"], "needle_index": p["needle_index"],
                        "prompt_tokens": len(ids), "answer": p["answer"], "prediction": prediction,
                        "score": probe_score(p, prediction)})
    grid = np.zeros((len(cfg.depths), len(cfg.lengths)))
    for i, d in enumerate(cfg.depths):
        for j, n in enumerate(cfg.lengths):
            cell = [r["score"] for r in records if r["depth"] == d and r["length"] == n]
            grid[i, j] = sum(cell) / len(cell)
    return {"lengths": cfg.lengths, "depths": cfg.depths, "scores": grid.round(4).tolist(),
            "mean": float(grid.mean())}, records


def niah_heatmap(grid: dict[str, Any], path: str | Path, title: str = "Needle in a haystack") -> None:
    """Depth (rows, 0 = start of the context at the top) x context length (columns), score 0..1."""
    import matplotlib.pyplot as plt

    from headlab.core.plots import save_figure

    scores = np.array(grid["scores"])
    size = (max(4.0, 0.9 * len(grid["lengths"]) + 2), max(3.0, 0.5 * len(grid["depths"]) + 1.5))
    fig, ax = plt.subplots(figsize=size)
    im = ax.imshow(scores, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(grid["lengths"])), [str(n) for n in grid["lengths"]])
    ax.set_yticks(range(len(grid["depths"])), [f"{d:g}" for d in grid["depths"]])
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            ax.text(j, i, f"{scores[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"{title} (mean {grid['mean']:.2f})")
    fig.colorbar(im, ax=ax, label="score")
    save_figure(fig, path)


def write_niah(grid: dict, records: list[dict], out: str | Path, config: dict[str, Any],
               title: str = "Needle in a haystack") -> None:
    out = Path(out)
    atomic_write_text(out / "niah_predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(out / "niah.json", grid)
    atomic_write_json(out / "config.json", config)
    niah_heatmap(grid, out / "niah.png", title)
