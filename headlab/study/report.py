"""The study's report: figures (PNG), one self-contained HTML page, the findings in plain words, numbers.json
and the long-format table of every score (scores.csv, scores.jsonl).

Every number carries its n and 95% interval (study/evidence.py). Every sentence of the findings is built
from a paired comparison and says no more than its interval: a difference is a win or a loss only when the
interval excludes 0 and the permutation p is below 0.05 (headlab.core.stats.difference_sentence).
"""

from __future__ import annotations

from pathlib import Path

from headlab.core.html import Page
from headlab.core.io import atomic_write_json, atomic_write_text
from headlab.core.plots import plt, save_figure
from headlab.core.stats import Difference, Estimate, difference_sentence, format_p
from headlab.study.config import REAL, StudyConfig
from headlab.study.evidence import Evidence, interval_errors, write_table
from headlab.study.layout import BASE
from headlab.study.pipeline import StageContext

__all__ = ["collect", "findings", "write_report"]


def collect(root: Path, config: StudyConfig) -> dict:
    """The numbers the report shows, read from the finished stages (with intervals)."""
    return Evidence(root, config).numbers


# ---- words -------------------------------------------------------------------------------------------------

def _e(d: dict) -> Estimate:
    return Estimate(d["value"], d["low"], d["high"], d["n"])


def _d(d: dict) -> Difference:
    return Difference(_e(d), d["p"], d["mean_a"], d["mean_b"])


def ci(d: dict, digits: int = 2, signed: bool = False) -> str:
    """"0.25 [0.18, 0.33]"."""
    return _e(d).text(digits, signed)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _knocked_out(t: dict) -> dict[str, dict]:
    """The models whose knockout ran (a model with no scored head has nothing to knock out)."""
    return {m: k for m, k in t["knockout"].items() if not k.get("skipped")}


def _k_range(knockouts: dict[str, dict]) -> str:
    """"K = 5" or "K = 4-8": models can have fewer heads with a non-zero score than top_k asks for."""
    ks = sorted({k["k"] for k in knockouts.values()})
    return f"K = {ks[0]}" if len(ks) == 1 else f"K = {ks[0]}-{ks[-1]}"


def _verdict_groups(diffs: dict[str, dict]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"higher": [], "lower": [], "indistinguishable": []}
    for name, d in diffs.items():
        groups[d["verdict"]].append(name)
    return groups


def findings(numbers: dict, config: StudyConfig) -> list[str]:
    out = []
    for task, t in numbers["tasks"].items():
        s, n = t["scores"], t["n_eval"]
        seeds = config.finetune_seeds
        spread = [(m, v["seed_spread"]) for m, v in s.items() if v.get("seed_spread") is not None]
        seed_note = ""
        if spread:
            widest = max(spread, key=lambda x: x[1])
            seed_note = (f"; across its {seeds} fine-tune seeds a model's score moves by up to {widest[1]:.2f} "
                         f"({widest[0]})")
        over = f"; fine-tuned scores are the mean over {seeds} seeds" if seeds > 1 else ""
        out.append(f"{task}: on {n} held-out real examples the real-data model scores {ci(s[REAL])} and the base "
                   f"model {ci(s[BASE])} (95% intervals{over}){seed_note}.")
        ext = _verdict_groups(t["vs_base"])
        out.append(f"{task}, extension: {len(ext['higher'])} of {len(t['vs_base'])} fine-tuned models beat the "
                   f"base model with an interval that excludes 0"
                   + (f"; indistinguishable from it: {', '.join(ext['indistinguishable'])}"
                      if ext["indistinguishable"] else "")
                   + (f"; below it: {', '.join(ext['lower'])}" if ext["lower"] else "") + ".")
        parts = [difference_sentence(REAL, v, _d(d)) for v, d in t["vs_real"].items()]
        out.append(f"{task}, real vs synthetic (paired on the same {n} examples): " + "; ".join(parts) + ".")
        sp = t["compare"].get("spearman")
        if sp:
            if sp["rho"] is None:
                out.append(f"{task}: the recall-score correlation is undefined (a constant input or under 3 points, "
                           f"n={sp['n']} variants).")
            else:
                spans = sp["low"] is None or sp["low"] <= 0 <= sp["high"]
                interval = "no interval" if sp["low"] is None else f"[{sp['low']:+.2f}, {sp['high']:+.2f}]"
                out.append(f"{task}: Spearman rho between retrieval-head recall and score across the {sp['n']} "
                           f"synthetic variants is {sp['rho']:+.2f} {interval} (bootstrap over variants, "
                           f"{format_p(sp['p'])}); "
                           + ("the interval spans 0: no evidence of a correlation at this n." if spans else
                              "the interval excludes 0."))
        few = {m: (f"0 of {p['given']}, ranked over all of them" if p["fallback"]
                   else f"{p['counted']} of {p['given']}")
               for m, p in t["probes"].items() if p["fallback"] or p["counted"] < t["probes_wanted"]}
        if few:
            out.append(f"{task}: retrieval heads are ranked from {t['probes_wanted']} counted (answered) probes "
                       f"where a model answers that many; fewer counted for "
                       + "; ".join(f"{m} ({c})" for m, c in few.items()) + ".")
        knocked = _knocked_out(t)
        skipped = len(t["knockout"]) - len(knocked)
        if knocked:
            g = _verdict_groups({m: k["top_vs_random"] for m, k in knocked.items()})
            # "lower" = top-K knockout scores below random: the top heads matter more.
            detail = "; ".join(f"{m} {ci(k['top_vs_random'], signed=True)} ({format_p(k['top_vs_random']['p'])})"
                               for m, k in knocked.items())
            first = next(iter(knocked.values()))
            out.append(f"{task}, knockout ({_k_range(knocked)}, {first['seeds']} random sets, "
                       f"paired on {first['n']} examples): the top retrieval heads lower the score more than as "
                       f"many random heads in {len(g['lower'])} of {len(knocked)} models, less in {len(g['higher'])}, "
                       f"indistinguishably in {len(g['indistinguishable'])} (top minus random: {detail})"
                       + (f"; {skipped} of {len(t['knockout'])} models skipped: no head scored" if skipped else "")
                       + ".")
        else:
            out.append(f"{task}: no knockout: no model has a head with a non-zero task retrieval score.")
        # An empty intersection patches nothing; it is left out rather than counted as "no change".
        patched = {v: p["sets"]["intersection"]["vs_target"] for v, p in t["patch"].items()
                   if not p.get("skipped") and p["sets"].get("intersection", {}).get("size", 0) > 0}
        if patched:
            parts = [difference_sentence(f"patched {v}", "unpatched", _d(d), higher="scores above",
                                         lower="scores below", same="is indistinguishable from")
                     for v, d in patched.items()]
            out.append(f"{task}, patching the shared retrieval heads from the real-data model into "
                       f"{_count(len(patched), 'synthetic-data model')}: " + "; ".join(parts) + ".")
    return out


# ---- figures -----------------------------------------------------------------------------------------------

def _bar_scores(numbers: dict, config: StudyConfig, path: Path) -> None:
    models = [BASE, *config.models]
    tasks = list(numbers["tasks"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(models) * len(tasks) / 2), 3.8))
    width = 0.8 / len(tasks)
    for j, task in enumerate(tasks):
        ests = [numbers["tasks"][task]["scores"][m] for m in models]
        xs = [i + j * width for i in range(len(models))]
        ax.bar(xs, [e["value"] for e in ests], width, yerr=interval_errors(ests), capsize=2, label=task,
               color=f"C{j}")
        for x, e in zip(xs, ests, strict=True):  # each fine-tune seed's own score
            if len(e.get("seeds", [])) > 1:
                ax.scatter([x + width * 0.25] * len(e["seeds"]), [s["value"] for s in e["seeds"]], s=8, color="k",
                           zorder=3)
    ax.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(models))], models, rotation=25, ha="right")
    ax.set_ylabel("score on held-out real data")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    n = next(iter(numbers["tasks"].values()))["n_eval"]
    ax.set_title(f"Downstream score (95% CI, n={n}; dots: fine-tune seeds)", fontsize=10)
    save_figure(fig, path)


def _knockout_bars(task: str, knocked: dict[str, dict], path: Path) -> None:
    models = list(knocked)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(models) + 2), 3.6))
    x = range(len(models))
    for off, key, label, color in ((-0.27, "baseline", "no knockout", "0.6"),
                                   (0.0, "top", "top-K retrieval heads", "C3"),
                                   (0.27, "random", "K random heads (mean of sets)", "C0")):
        ests = [knocked[m][key] for m in models]
        ax.bar([i + off for i in x], [e["value"] for e in ests], 0.27, yerr=interval_errors(ests), capsize=2,
               label=label, color=color)
    ax.set_xticks(list(x), models, rotation=25, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score (95% CI)")
    ax.set_title(f"{task}: knockout, top-K vs random (n={next(iter(knocked.values()))['n']})", fontsize=10)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _curve_section(page, results: dict, path: Path, title: str, xlabel: str, top_label: str, base_key: str,
                   caption: str) -> None:
    """The curve figure of the models (or variants) measured at more than one K; `title` may hold {n}."""
    with_curves = {name: r for name, r in results.items() if len(r["curve"]) > 1}
    if with_curves:
        _curve_panels(title.format(n=first_n(with_curves)), with_curves, path, xlabel, top_label, base_key)
        page.figure(path, caption)


def _curve_panels(title: str, panels: dict[str, dict], path: Path, xlabel: str, top_label: str,
                  baseline_key: str) -> None:
    """One small plot per model: score vs K for the top heads and for random heads, 95% bands (Wu et al.)."""
    names = list(panels)
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    size = (4.8, 3.4) if len(names) == 1 else (3.1 * cols, 2.6 * rows)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names, strict=False):
        p = panels[name]
        base = p[baseline_key]
        ks = [0] + [c["k"] for c in p["curve"]]
        for key, color, marker, label in (("top", "C3", "o", top_label), ("random", "C0", "s", "random heads")):
            ests = [base] + [c[key] for c in p["curve"]]
            ax.plot(ks, [e["value"] for e in ests], marker=marker, ms=3, color=color, label=label)
            ax.fill_between(ks, [e["low"] if e["low"] is not None else e["value"] for e in ests],
                            [e["high"] if e["high"] is not None else e["value"] for e in ests], color=color,
                            alpha=0.18, lw=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(ks, [str(k) for k in ks], fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=8)
    fig.suptitle(title, fontsize=10, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save_figure(fig, path)


def _patch_bars(task: str, t: dict, path: Path) -> None:
    variants = [v for v, p in t["patch"].items() if not p.get("skipped")]
    measured = {name for v in variants for name in t["patch"][v]["sets"]}
    names = ["target", *(n for n in ("intersection", "complement", "random", "source") if n in measured),
             "source model"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(variants) + 2), 3.6))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ests = []
        for v in variants:
            p = t["patch"][v]
            if name in ("target", "source model"):
                ests.append(p["target" if name == "target" else "source"])
            else:
                ests.append(p["sets"].get(name, {}).get("score", {"value": 0.0, "low": None, "high": None}))
        ax.bar([i + j * width for i in range(len(variants))], [e["value"] for e in ests], width,
               yerr=interval_errors(ests), capsize=2, label="unpatched" if name == "target" else name)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(variants))], variants, rotation=20,
                  ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score (95% CI)")
    ax.set_title(f"{task}: heads patched from the real-data model (n={t['n_eval']})", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)


def _recall_scatter(task: str, t: dict, path: Path) -> None:
    rows = t["compare"]["vs_reference"]
    ests = [t["scores"][r["label"]] for r in rows]
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    ax.errorbar([r["recall"] for r in rows], [e["value"] for e in ests], yerr=interval_errors(ests), fmt="o",
                color="C3", capsize=3)
    for r, e in zip(rows, ests, strict=True):
        ax.annotate(r["label"], (r["recall"], e["value"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    sp = t["compare"]["spearman"]
    rho = "undefined" if sp["rho"] is None else (
        f"{sp['rho']:+.2f}" + ("" if sp["low"] is None else f" [{sp['low']:+.2f}, {sp['high']:+.2f}]"))
    ax.set_xlabel("recall of the real-data model's retrieval heads")
    ax.set_ylabel("score (95% CI)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_title(f"{task}: Spearman rho {rho}, n={sp['n']}", fontsize=9)
    save_figure(fig, path)


def _niah_lines(niah: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for j, (label, v) in enumerate(niah.items()):
        lengths = list(v["by_length"])
        ests = [v["by_length"][n] for n in lengths]
        ax.errorbar([int(n) for n in lengths], [e["value"] for e in ests], yerr=interval_errors(ests), marker="o",
                    capsize=3, label=f"{label} (n={ests[0]['n']} per length)", color=f"C{j}")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needles found (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Needle in a haystack by length", fontsize=10)
    save_figure(fig, path)


# ---- the page ----------------------------------------------------------------------------------------------

def first_n(panels: dict[str, dict]) -> int:
    return next(iter(panels.values()))["n"]


MARK = {"lower": "below", "higher": "above", "indistinguishable": "same"}


def _row_diff(d: dict) -> list[str]:
    return [ci(d, signed=True), format_p(d["p"]).removeprefix("p="), d["verdict"]]


def write_report(ctx: StageContext, config: StudyConfig) -> None:
    root = _run_root(ctx)
    figures = ctx.out / "figures"
    evidence = Evidence(root, config)
    numbers = evidence.numbers
    lines = findings(numbers, config)
    _bar_scores(numbers, config, figures / "scores.png")
    page = Page("headlab study: synthetic context extension and retrieval heads")
    base = config.base_model or "the shipped tiny model (toy world)"
    page.paragraph(f"Base model: {base}. Tasks: {', '.join(config.tasks)}. Variants: real data and "
                   f"{len(config.variants)} synthetic ({', '.join(config.variants)}); each fine-tuned with the same "
                   f"budget to a {config.context_length}-token context ({_count(config.finetune_seeds, 'seed')} "
                   f"each) and evaluated on held-out real data.", "lead")
    if not config.base_model:
        page.paragraph("On the toy world, 'real' data is the world's richest distribution (varied wordings, "
                       "held-out names, diverse prose); it is not natural text.", "lead")
    page.paragraph(f"Every number is a mean over examples with its 95% interval ({numbers['method']}). A "
                   "difference is called a win or a loss only when its interval excludes 0 and p < 0.05; "
                   "p-values are per comparison, not corrected for the number of comparisons on this page. "
                   "Every score behind the page is in scores.csv / scores.jsonl next to it.", "lead")
    page.heading("Findings")
    page.bullets(lines, "finding")
    page.heading("Downstream score")
    page.figure(figures / "scores.png", "Score on the held-out real evaluation set, 95% intervals")
    models = [BASE, *config.models]
    for task, t in numbers["tasks"].items():
        page.heading(f"{task}: scores (n={t['n_eval']})", 3)
        page.table(["model", "score [95% CI]", "per seed", "minus base", "p", "verdict", "real minus this", "p",
                    "verdict"],
                   [[m, ci(t["scores"][m]),
                     ", ".join(f"{s['value']:.2f}" for s in t["scores"][m]["seeds"]) if m != BASE else "",
                     *(_row_diff(t["vs_base"][m]) if m in t["vs_base"] else ["", "", ""]),
                     *(_row_diff(t["vs_real"][m]) if m in t["vs_real"] else ["", "", ""])] for m in models])
    for task, t in numbers["tasks"].items():
        page.heading(f"{task}: retrieval heads")
        page.paragraph("Probes counted (answered right) per model: " + ", ".join(
            f"{m} {p['counted']} of {p['given']}" + (" (none answered: ranked over all)" if p["fallback"] else "")
            for m, p in t["probes"].items()) + f"; detection stops at {t['probes_wanted']} counted.")
        rows = [[r["label"], r["recall"], r["jaccard"], r["cosine"], ci(t["scores"][r["label"]])]
                for r in t["compare"].get("vs_reference", [])]
        page.table(["variant", "recall of real heads", "Jaccard", "cosine", "score [95% CI]"], rows)
        if t["compare"].get("spearman"):
            _recall_scatter(task, t, figures / f"recall_{task}.png")
            page.figure(figures / f"recall_{task}.png", f"{task}: recall of the real-data model's heads vs score")
        for m in models:
            p = t["probes"][m]
            page.figure(root / "heads" / task / m / "retrieval_heads.png",
                        f"{task} / {m}: task retrieval score per head ({p['counted']} probes counted)")
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
            page.table(["model", "K", "no knockout", "top-K", "random", "top - random", "p", "verdict",
                        "vs each random set"],
                       [[m, k["k"], ci(k["baseline"]), ci(k["top"]), ci(k["random"]), *_row_diff(k["top_vs_random"]),
                         " ".join(MARK[d["verdict"]] for d in k["top_vs_random_each"])] for m, k in knocked.items()])
            _curve_section(page, knocked, figures / f"knockout_curve_{task}.png",
                           f"{task}: knockout, top-K vs random K (95% bands, n={{n}})", "K heads knocked out",
                           "top-K retrieval heads", "baseline", f"{task}: score as heads are knocked out")
        patched = {v: p for v, p in t["patch"].items() if not p.get("skipped")}
        if patched:
            _patch_bars(task, t, figures / f"patching_{task}.png")
            page.figure(figures / f"patching_{task}.png", f"{task}: cross-model patching")
            page.table(["variant", "K", "unpatched", "set", "heads", "patched", "minus unpatched", "p", "verdict"],
                       [[v, p["k"], ci(p["target"]), name, st["size"], ci(st["score"]), *_row_diff(st["vs_target"])]
                        for v, p in patched.items() for name, st in p["sets"].items()])
            _curve_section(page, patched, figures / f"patching_curve_{task}.png",
                           f"{task}: patching the real-data model's top K vs random K (n={{n}})", "K heads patched",
                           "top-K of the real-data model", "target", f"{task}: score as heads are patched in")
    page.heading("Needle in a haystack")
    if numbers["niah"]:
        _niah_lines(numbers["niah"], figures / "niah.png")
        page.figure(figures / "niah.png", "Needles found by context length, 95% intervals")
    for niah in sorted((root / "niah").iterdir()):
        if (niah / "niah.png").is_file():
            page.figure(niah / "niah.png", f"{niah.name}: accuracy by context length and needle depth "
                                           f"({config.niah_per_cell} needles per cell)")
    page.write(ctx.out / "report.html")
    atomic_write_json(ctx.out / "numbers.json", numbers)
    atomic_write_text(ctx.out / "findings.md", "".join(f"- {line}\n" for line in lines))
    write_table(evidence.rows, ctx.out)


def _run_root(ctx: StageContext) -> Path:
    """The run folder: every dependency is `root/<stage name>`, and `eval/<task>/base` is always one."""
    for name, folder in ctx.deps.items():
        if name.startswith("eval/"):
            return folder.parents[len(Path(name).parts) - 1]
    raise RuntimeError("the report needs the evaluation stages")
