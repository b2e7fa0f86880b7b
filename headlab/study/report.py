"""The study's report: figures (PNG), one self-contained HTML page, and the findings in plain words.

Every sentence of the summary is computed from the numbers on the page and says no more than they do:
differences are stated with their sizes and sample counts, and a correlation with its p-value.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from headlab.io import atomic_write_json, atomic_write_text, read_json
from headlab.plots import plt, save_figure
from headlab.study.config import REAL, StudyConfig
from headlab.study.html import Page
from headlab.study.pipeline import StageContext

BASE = "base"


def collect(root: Path, config: StudyConfig) -> dict:
    """The numbers the report shows, read from the finished stages."""
    tasks = {}
    for task in config.tasks:
        models = [BASE, *config.models]
        scores = {m: read_json(root / "eval" / task / m / "summary.json")["score"] for m in models}
        knockout = {m: read_json(root / "knockout" / task / m / "knockout.json") for m in models}
        patch = {v: read_json(root / "patch" / task / v / "patching.json") for v in config.variants}
        # Without the file paths, which name this run folder: the numbers alone, comparable across runs.
        compare = {k: v for k, v in read_json(root / "compare" / task / "compare.json").items()
                   if k not in ("files", "reference")}
        heads = {m: read_json(root / "heads" / task / m / "summary.json") for m in models}
        tasks[task] = {"scores": scores, "knockout": knockout, "patch": patch, "compare": compare,
                       "probes_counted": {m: h["probes_counted"] for m, h in heads.items()},
                       "n_eval": read_json(root / "eval" / task / BASE / "summary.json")["n"]}
    return {"tasks": tasks}


def findings(numbers: dict, config: StudyConfig) -> list[str]:
    out = []
    for task, t in numbers["tasks"].items():
        s = t["scores"]
        best = max(config.variants, key=lambda v: s[v])
        verb = "beats" if s[REAL] > s[best] else ("ties" if s[REAL] == s[best] else "does not beat")
        out.append(f"{task}: the real-data model scores {s[REAL]:.2f} on the held-out real set (n={t['n_eval']}); "
                   f"it {verb} the best synthetic variant, {best} ({s[best]:.2f}); the base model scores "
                   f"{s[BASE]:.2f}.")
        sp = t["compare"].get("spearman")
        if sp:
            if sp["rho"] is None:
                out.append(f"{task}: the recall-score correlation is undefined (a constant input, n={sp['n']}).")
            else:
                strength = "significant" if sp["p"] < 0.05 else "not significant"
                out.append(f"{task}: Spearman rho between retrieval-head recall and score across the "
                           f"{sp['n']} synthetic variants is {sp['rho']:.2f} (p={sp['p']:.2g}, {strength} at 0.05).")
        knocked = _knocked_out(t)
        skipped = len(t["knockout"]) - len(knocked)
        no_heads = f" ({skipped} of {len(t['knockout'])} models skipped: no head scored)" if skipped else ""
        if knocked:
            drops = [(k["baseline"] - k["top"], k["baseline"] - k["random_mean"]) for k in knocked.values()]
            worse = sum(1 for top, rnd in drops if top > rnd)
            mean_top = statistics.fmean(d[0] for d in drops)
            mean_rnd = statistics.fmean(d[1] for d in drops)
            out.append(f"{task}: knocking out each model's top retrieval heads ({_k_range(knocked)}) lowers the "
                       f"score by {mean_top:.2f} on average over {_count(len(drops), 'model')}, against "
                       f"{mean_rnd:.2f} for as many random heads; the top heads hurt more in {worse} of "
                       f"{len(drops)}{no_heads}.")
        else:
            out.append(f"{task}: no knockout: no model has a head with a non-zero task retrieval score.")
        # An empty intersection patches nothing; it would count as "no change" and dilute the mean.
        gains = [(v, p["sets"]["intersection"]["mean"] - p["target"]) for v, p in t["patch"].items()
                 if p["sets"].get("intersection", {}).get("size", 0) > 0]
        if gains:
            mean_gain = statistics.fmean(g for _, g in gains)
            out.append(f"{task}: patching the shared retrieval heads from the real-data model into the synthetic-data "
                       f"models changes their score by {mean_gain:+.2f} on average ({_count(len(gains), 'model')}).")
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _knocked_out(t: dict) -> dict[str, dict]:
    """The models whose knockout ran (a model with no scored head has nothing to knock out)."""
    return {m: k for m, k in t["knockout"].items() if not k.get("skipped")}


def _k_range(knockouts: dict[str, dict]) -> str:
    """"K = 5" or "K = 4-8": models can have fewer heads with a non-zero score than top_k asks for."""
    ks = sorted({k["k"] for k in knockouts.values()})
    return f"K = {ks[0]}" if len(ks) == 1 else f"K = {ks[0]}-{ks[-1]}"


def _bar_scores(numbers: dict, config: StudyConfig, path: Path) -> None:
    models = [BASE, *config.models]
    tasks = list(numbers["tasks"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(models) * len(tasks) / 2), 3.8))
    width = 0.8 / len(tasks)
    for j, task in enumerate(tasks):
        ax.bar([i + j * width for i in range(len(models))], [numbers["tasks"][task]["scores"][m] for m in models],
               width, label=task)
    ax.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(models))], models, rotation=25, ha="right")
    ax.set_ylabel("score on held-out real data")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Downstream score per training variant")
    save_figure(fig, path)


def _knockout_bars(task: str, knocked: dict[str, dict], path: Path) -> None:
    models = list(knocked)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(models) + 2), 3.6))
    x = range(len(models))
    ko = [knocked[m] for m in models]
    ax.bar([i - 0.27 for i in x], [k["baseline"] for k in ko], 0.27, label="no knockout", color="0.7")
    ax.bar(list(x), [k["top"] for k in ko], 0.27, label="top-K retrieval heads", color="C3")
    ax.bar([i + 0.27 for i in x], [k["random_mean"] for k in ko], 0.27, yerr=[k["random_std"] for k in ko],
           label="K random heads (mean ± sd)", color="C0", capsize=3)
    ax.set_xticks(list(x), models, rotation=25, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.set_title(f"{task}: knockout, top-K vs random")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _patch_bars(task: str, t: dict, path: Path) -> None:
    variants = [v for v, p in t["patch"].items() if not p.get("skipped")]
    names = ["target", "intersection", "complement", "random", "source"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(variants) + 2), 3.6))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        vals = []
        for v in variants:
            p = t["patch"][v]
            vals.append(p[name] if name in ("target", "source") else p["sets"].get(name, {}).get("mean", 0.0))
        ax.bar([i + j * width for i in range(len(variants))], vals, width, label=name)
    ax.set_xticks([i + width * 2 for i in range(len(variants))], variants, rotation=20, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.set_title(f"{task}: patching real-data model heads into synthetic-data models")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def write_report(ctx: StageContext, config: StudyConfig) -> None:
    root = _run_root(ctx)
    figures = ctx.out / "figures"
    numbers = collect(root, config)
    lines = findings(numbers, config)
    _bar_scores(numbers, config, figures / "scores.png")
    page = Page("headlab study: synthetic context extension and retrieval heads")
    base = config.base_model or "the shipped tiny model (toy world)"
    page.paragraph(f"Base model: {base}. Tasks: {', '.join(config.tasks)}. Variants: real data and "
                   f"{len(config.variants)} synthetic ({', '.join(config.variants)}); each fine-tuned with the same "
                   f"budget to a {config.context_length}-token context and evaluated on held-out real data.", "lead")
    if not config.base_model:
        page.paragraph("On the toy world, 'real' data is the world's richest distribution (varied wordings, "
                       "held-out names, diverse prose); it is not natural text.", "lead")
    page.heading("Findings")
    page.bullets(lines, "finding")
    page.heading("Downstream score")
    page.figure(figures / "scores.png", "Score on the held-out real evaluation set")
    models = [BASE, *config.models]
    page.table(["model", *numbers["tasks"]], [[m, *(numbers["tasks"][t]["scores"][m] for t in numbers["tasks"])]
                                               for m in models])
    for task, t in numbers["tasks"].items():
        page.heading(f"{task}: retrieval heads")
        rows = [[r["label"], r["recall"], r["jaccard"], r["cosine"], r.get("score", "")]
                for r in t["compare"].get("vs_reference", [])]
        page.table(["variant", "recall of real heads", "Jaccard", "cosine", "score"], rows)
        scatter = root / "compare" / task / "recall_vs_score.png"
        if scatter.is_file():
            page.figure(scatter, f"{task}: recall of the real-data model's heads vs score")
        for m in models:
            page.figure(root / "heads" / task / m / "retrieval_heads.png",
                        f"{task} / {m}: task retrieval score per head ({t['probes_counted'][m]} probes counted)")
        page.heading(f"{task}: knockout and patching")
        knocked = _knocked_out(t)
        skipped = sorted(set(t["knockout"]) - set(knocked)) + sorted(v for v, p in t["patch"].items()
                                                                     if p.get("skipped"))
        if skipped:
            page.paragraph(f"Skipped for {', '.join(dict.fromkeys(skipped))}: no head has a non-zero task "
                           "retrieval score, so there is no top-K set to knock out or patch.")
        if knocked:
            _knockout_bars(task, knocked, figures / f"knockout_{task}.png")
            page.figure(figures / f"knockout_{task}.png",
                        f"{task}: top retrieval heads ({_k_range(knocked)}) vs as many random heads, knocked out")
        if any(not p.get("skipped") for p in t["patch"].values()):
            _patch_bars(task, t, figures / f"patching_{task}.png")
            page.figure(figures / f"patching_{task}.png", f"{task}: cross-model patching")
    page.heading("Needle in a haystack")
    for niah in sorted((root / "niah").iterdir()):
        if (niah / "niah.png").is_file():
            page.figure(niah / "niah.png", f"{niah.name}: accuracy by context length and needle depth")
    page.write(ctx.out / "report.html")
    atomic_write_json(ctx.out / "numbers.json", numbers)
    atomic_write_text(ctx.out / "findings.md", "".join(f"- {line}\n" for line in lines))


def _run_root(ctx: StageContext) -> Path:
    """The run folder: every dependency is `root/<stage name>`, and `eval/<task>/base` is always one."""
    for name, folder in ctx.deps.items():
        if name.startswith("eval/"):
            return folder.parents[len(Path(name).parts) - 1]
    raise RuntimeError("the report needs the evaluation stages")
