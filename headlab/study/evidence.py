"""The study's evidence: every number the report shows, with its n and 95% interval, computed from the
per-example records the stages wrote; and the long-format table of every score behind them.

Scores are means over held-out examples; a model with several fine-tune seeds is scored per example as the
mean over its seeds (each seed's own score and interval are kept too). Comparisons are paired: the same
examples under two conditions (real vs a synthetic variant, top-K vs random knockout, patched vs unpatched),
bootstrapped over examples, with a sign-flip permutation p-value. Intervals are percentile bootstraps with a
fixed seed (`headlab.core.stats`), so a re-run of the report gives the same numbers.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from headlab.core.errors import HeadlabError
from headlab.core.io import read_json
from headlab.core.stats import mean_interval, paired_difference, spearman_interval
from headlab.study.config import REAL, StudyConfig
from headlab.study.layout import BASE, eval_ref

METHOD = "percentile"  # BCa costs 10x more per interval and the report computes hundreds; n is >= 100 here
COLUMNS = ["task", "model", "seed", "example_id", "condition", "k", "control_seed", "score"]


def est(values) -> dict:
    return mean_interval(values, method=METHOD).to_dict()


def diff(a, b) -> dict:
    return paired_difference(a, b, method=METHOD).to_dict()


def _mean_rows(rows: list[list[float]]) -> list[float]:
    """Per-item mean over several runs (seeds) of the same items."""
    return [statistics.fmean(col) for col in zip(*rows, strict=True)]


def _predictions(folder: Path) -> tuple[list[str], list[float]]:
    ids, scores = [], []
    for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            ids.append(r["id"])
            scores.append(float(r["score"]))
    return ids, scores


class Evidence:
    """Reads a finished run folder; `numbers` for the report, `rows` for scores.csv / scores.jsonl."""

    def __init__(self, root: Path, config: StudyConfig):
        self.root, self.config = Path(root), config
        self.rows: list[dict] = []
        self.seeds = [config.seed + s for s in range(config.finetune_seeds)]
        self.numbers = {"method": f"95% {METHOD} bootstrap over examples (9999 resamples, seeded); paired "
                                  "differences with a two-sided sign-flip permutation p",
                        "tasks": {t: self._task(t) for t in config.tasks}, "niah": self._niah()}

    def _row(self, task, model, seed, ids, scores, condition, k=None, control_seed=None) -> None:
        for i, s in zip(ids, scores, strict=True):
            self.rows.append({"task": task, "model": model, "seed": seed, "example_id": i, "condition": condition,
                              "k": k, "control_seed": control_seed, "score": s})

    # ---- per task ---------------------------------------------------------------------------------------

    def _task(self, task: str) -> dict:
        config, root = self.config, self.root
        per_example: dict[str, list[float]] = {}
        scores: dict[str, dict] = {}
        ids = None
        for m in [BASE, *config.models]:
            seed_idx = [0] if m == BASE else range(config.finetune_seeds)
            runs = []
            for s in seed_idx:
                ids_m, sc = _predictions(root / eval_ref(task, m, s))
                if ids is None:
                    ids = ids_m
                if ids_m != ids:  # paired comparisons need the same examples in the same order
                    raise HeadlabError(f"{eval_ref(task, m, s)}: its examples differ from the base model's")
                seed = None if m == BASE else self.seeds[s]
                self._row(task, m, seed, ids_m, sc, "eval")
                runs.append((seed, sc))
            per_example[m] = _mean_rows([sc for _, sc in runs])
            seed_ests = [{"seed": seed, **est(sc)} for seed, sc in runs]
            values = [e["value"] for e in seed_ests]
            scores[m] = {**est(per_example[m]), "seeds": seed_ests,
                         "seed_spread": max(values) - min(values) if len(values) > 1 else None}
        heads = {m: read_json(root / "heads" / task / m / "summary.json") for m in [BASE, *config.models]}
        probes = {m: {"counted": h["probes_counted"], "given": h.get("probes_given", h["probes_counted"]),
                      "fallback": bool(h.get("config", {}).get("no_probe_succeeded", False))}
                  for m, h in heads.items()}
        return {"n_eval": len(ids), "scores": scores,
                "vs_real": {v: diff(per_example[REAL], per_example[v]) for v in config.variants},
                "vs_base": {m: diff(per_example[m], per_example[BASE]) for m in config.models},
                "probes": probes, "probes_wanted": config.detect_counted,
                "compare": self._compare(task, scores),
                "knockout": {m: self._knockout(task, m) for m in [BASE, *config.models]},
                "patch": {v: self._patch(task, v) for v in config.variants}}

    def _compare(self, task: str, scores: dict) -> dict:
        raw = read_json(self.root / "compare" / task / "compare.json")
        # Without the file paths, which name this run folder: the numbers alone, comparable across runs.
        out = {k: v for k, v in raw.items() if k not in ("files", "reference", "spearman")}
        rows = out.get("vs_reference", [])
        for r in rows:
            r["score"] = scores[r["label"]]["value"]
        if rows:
            out["spearman"] = spearman_interval([r["recall"] for r in rows], [r["score"] for r in rows])
        return out

    def _knockout(self, task: str, model: str) -> dict:
        raw = read_json(self.root / "knockout" / task / model / "knockout.json")
        if raw.get("skipped"):
            return {"skipped": raw["skipped"]}
        ids, seed = raw["item_ids"], None if model == BASE else self.config.seed
        self._row(task, model, seed, ids, raw["baseline_items"], "knockout_none", k=0)
        curve = []
        for p in raw["curve"]:
            if p["k"] == 0:
                continue
            self._row(task, model, seed, ids, p["top_items"], "knockout_top", k=p["k"])
            for s, items in enumerate(p["random_items"]):
                self._row(task, model, seed, ids, items, "knockout_random", k=p["k"], control_seed=self.config.seed + s)
            random = _mean_rows(p["random_items"])
            curve.append({"k": p["k"], "top": est(p["top_items"]), "random": est(random),
                          "top_vs_random": diff(p["top_items"], random),
                          "top_vs_random_each": [diff(p["top_items"], r) for r in p["random_items"]]})
        main = next(c for c in curve if c["k"] == raw["k"])
        top_items = next(p for p in raw["curve"] if p["k"] == raw["k"])["top_items"]
        return {"k": raw["k"], "n": len(ids), "seeds": len(raw["random"]), "baseline": est(raw["baseline_items"]),
                **{key: main[key] for key in ("top", "random", "top_vs_random", "top_vs_random_each")},
                "top_vs_none": diff(top_items, raw["baseline_items"]), "curve": curve}

    def _patch(self, task: str, variant: str) -> dict:
        raw = read_json(self.root / "patch" / task / variant / "patching.json")
        if raw.get("skipped"):
            return {"skipped": raw["skipped"]}
        ids, seed = raw["item_ids"], self.config.seed
        target = raw["target_items"]
        self._row(task, variant, seed, ids, target, "patch_none")
        self._row(task, variant, seed, ids, raw["source_items"], "patch_source_model")
        sets = {}
        for name, st in raw["sets"].items():
            for s, items in enumerate(st["items"]):
                self._row(task, variant, seed, ids, items, f"patch_{name}", k=st["size"],
                          control_seed=self.config.seed + s if name == "random" else None)
            items = _mean_rows(st["items"])
            sets[name] = {"size": st["size"], "score": est(items), "vs_target": diff(items, target)}
        curve = []
        for p in raw.get("curve", []):
            self._row(task, variant, seed, ids, p["top_items"], "patch_curve_top", k=p["k"])
            for s, items in enumerate(p["random_items"]):
                self._row(task, variant, seed, ids, items, "patch_curve_random", k=p["k"],
                          control_seed=self.config.seed + s)
            random = _mean_rows(p["random_items"])
            curve.append({"k": p["k"], "top": est(p["top_items"]), "random": est(random),
                          "top_vs_random": diff(p["top_items"], random)})
        return {"k": raw["k"], "n": len(ids), "target": est(target), "source": est(raw["source_items"]),
                "sets": sets, "curve": curve}

    # ---- needle in a haystack -----------------------------------------------------------------------------

    def _niah(self) -> dict:
        out = {}
        for folder in sorted((self.root / "niah").iterdir()) if (self.root / "niah").is_dir() else []:
            path = folder / "niah_predictions.jsonl"
            if not path.is_file():
                continue
            recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            ids = [f"L{r['length']}-d{r['depth']}-n{r['needle_index']}" for r in recs]
            self._row("niah", folder.name, None, ids, [float(r["score"]) for r in recs], "niah")
            lengths = sorted({r["length"] for r in recs})
            out[folder.name] = {"all": est([r["score"] for r in recs]),
                                "by_length": {str(n): est([r["score"] for r in recs if r["length"] == n])
                                              for n in lengths}}
        return out


def write_table(rows: list[dict], out: Path) -> None:
    """scores.csv and scores.jsonl: one row per (task, model, seed, example, condition, k, control seed)."""
    import csv
    import io

    from headlab.core.io import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r[k] is None else r[k]) for k in COLUMNS} for r in rows)
    atomic_write_text(out / "scores.csv", buf.getvalue())
    atomic_write_text(out / "scores.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def interval_errors(ests: list[dict]) -> np.ndarray:
    """matplotlib's asymmetric yerr (2 x n) from interval dicts; zero length where there is no interval."""
    lo = [e["value"] - e["low"] if e.get("low") is not None else 0.0 for e in ests]
    hi = [e["high"] - e["value"] if e.get("high") is not None else 0.0 for e in ests]
    return np.array([lo, hi])
