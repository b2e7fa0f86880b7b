"""`headlab cot report DIR`: accuracy direct vs CoT with 95% bootstrap intervals, per dataset and category.

Reads `<DIR>/examples.jsonl` and writes summary.json (every number), report.md (the tables), cot_gain.png (CoT
minus direct per dataset, grouped by category, as the paper's figure) and report.html (tables and figure in one
self-contained page). A category pools its datasets' items. Intervals and differences are the study's
(headlab.core.stats): differences are paired over items, and one is called only when its interval excludes
zero and its sign-flip permutation p is below 0.05, else "indistinguishable". The "=" split compares items
whose question or CoT response contains "=" with the rest (the paper's MMLU finding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json, atomic_write_text, iter_jsonl, read_json
from headlab.core.stats import RESAMPLES, mean_interval, paired_difference

METHOD = "percentile"  # as the study's: an interval per dataset, category, split and mode

CATEGORY_ORDER = ("math", "symbolic", "commonsense", "knowledge")
COLORS = {"math": "#3b73b9", "symbolic": "#7a4fb3", "commonsense": "#2e9d62", "knowledge": "#d08a2c"}


def load_records(folder: str | Path) -> tuple[list[dict], list[str]]:
    """The per-item records of a run and the modes it ran."""
    path = Path(folder) / "examples.jsonl"
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found (run `headlab cot run` into {folder} first)")
    records = [obj for _, obj in iter_jsonl(path)]
    if not records:
        raise HeadlabError(f"{path}: no items")
    modes = [m for m in ("direct", "cot", "plan") if m in records[0]]
    for lineno, rec in enumerate(records, start=1):
        for field in ("dataset", "category", *modes):
            if field not in rec:
                raise HeadlabError(f"{path}:{lineno}: field '{field}' is missing")
    return records, modes


def has_eq(rec: dict) -> bool:
    return bool(rec.get("eq_question")) or "=" in rec.get("cot", {}).get("response", "")


def group_stats(records: list[dict], modes: list[str], resamples: int = RESAMPLES) -> dict:
    """n, and per mode accuracy with its interval, extraction rate and mean tokens; paired differences."""
    out: dict = {"n": len(records)}
    correct = {}
    for mode in modes:
        c = np.array([float(r[mode]["correct"]) for r in records])
        correct[mode] = c
        tokens = [r[mode]["tokens"] for r in records if r[mode].get("tokens") is not None]
        e = mean_interval(c, n_resamples=resamples, method=METHOD)
        out[mode] = {"accuracy": e.value, "ci": [e.low, e.high],
                     "extracted": float(np.mean([r[mode]["status"] in ("ok", "fallback") for r in records])),
                     "tokens_mean": float(np.mean(tokens)) if tokens else None}
    for other in ("cot", "plan"):
        if other in modes and "direct" in modes:
            d = paired_difference(correct[other], correct["direct"], n_resamples=resamples, method=METHOD)
            words = {"higher": f"{'CoT' if other == 'cot' else 'plan'} better", "lower": "direct better"}
            out[f"{other}_minus_direct"] = {"diff": d.diff.value, "ci": [d.diff.low, d.diff.high], "p": d.p,
                                            "verdict": words.get(d.verdict(), "indistinguishable")}
    return out


def _category_key(category: str) -> tuple:
    return (CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER), category)


def summarize(records: list[dict], modes: list[str], resamples: int = RESAMPLES) -> dict:
    datasets: dict[str, list[dict]] = {}
    categories: dict[str, list[dict]] = {}
    for r in records:
        datasets.setdefault(r["dataset"], []).append(r)
        categories.setdefault(r["category"], []).append(r)
    ds_rows = sorted(({"dataset": d, "category": rs[0]["category"], **group_stats(rs, modes, resamples)}
                      for d, rs in datasets.items()), key=lambda row: (_category_key(row["category"]), row["dataset"]))
    cat_rows = [{"category": c, "datasets": len({r["dataset"] for r in categories[c]}),
                 **group_stats(categories[c], modes, resamples)} for c in sorted(categories, key=_category_key)]
    summary = {"modes": modes, "items": len(records), "resamples": resamples, "datasets": ds_rows,
               "categories": cat_rows, "all": group_stats(records, modes, resamples)}
    if "cot" in modes and "direct" in modes:
        split = {}
        for label, keep in (("with =", True), ("without =", False)):
            part = [r for r in records if has_eq(r) == keep]
            split[label] = group_stats(part, modes, resamples) if part else {"n": 0}
        summary["eq_split"] = split
    return summary


def _ci(stat: dict, sign: str = "") -> str:
    """"0.62 [0.48, 0.75]"; one item has no interval: the value alone."""
    lo, hi = stat["ci"]
    f = f"{{:{sign}.2f}}".format
    value = f(stat.get("accuracy", stat.get("diff")))
    return value if lo is None else f"{value} [{f(lo)}, {f(hi)}]"


def _signed(stat: dict) -> str:
    return _ci(stat, "+")


def _tokens(stat: dict) -> str:
    return "n/a" if stat["tokens_mean"] is None else f"{stat['tokens_mean']:.0f}"


def table(rows: list[dict], modes: list[str], label: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a results table (accuracy [95% CI], paired differences, tokens per answer)."""
    header = [label, "n"] + [f"{m} acc [95% CI]" for m in modes]
    header += [f"{o} − direct [95% CI]" for o in ("cot", "plan") if o in modes and "direct" in modes]
    header += ["verdict"] if "cot" in modes and "direct" in modes else []
    header += [f"{m} tokens" for m in modes] + [f"{m} extracted" for m in modes]
    body = []
    for row in rows:
        cells = [str(row[label]), str(row["n"])] + [_ci(row[m]) for m in modes]
        cells += [_signed(row[f"{o}_minus_direct"]) for o in ("cot", "plan") if f"{o}_minus_direct" in row]
        cells += [row["cot_minus_direct"]["verdict"]] if "cot_minus_direct" in row else []
        cells += [_tokens(row[m]) for m in modes] + [f"{row[m]['extracted']:.0%}" for m in modes]
        body.append(cells)
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def gain_figure(rows: list[dict], path: str | Path, title: str) -> None:
    """CoT minus direct accuracy per dataset with its paired 95% interval, bars coloured and grouped by category."""
    from headlab.core.plots import plt, save_figure

    rows = [r for r in rows if "cot_minus_direct" in r]
    diffs = np.array([r["cot_minus_direct"]["diff"] for r in rows])
    # A one-item dataset has no interval: no error bar.
    los, his = (np.array([r["cot_minus_direct"]["ci"][i] for r in rows], dtype=float) for i in (0, 1))
    los, his = np.where(np.isnan(los), diffs, los), np.where(np.isnan(his), diffs, his)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(rows) + 2), 4.2))
    x = np.arange(len(rows))
    colors = [COLORS.get(r["category"], "#888888") for r in rows]
    ax.bar(x, 100 * diffs, color=colors, yerr=100 * np.vstack([diffs - los, his - diffs]), capsize=3,
           error_kw={"elinewidth": 1})
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([r["dataset"] for r in rows], rotation=55, ha="right", fontsize=8)
    ax.set_ylabel("CoT − direct accuracy (points)")
    ax.set_title(title)
    seen = {}
    for r, c in zip(rows, colors, strict=True):
        seen.setdefault(r["category"], c)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in seen.values()], labels=list(seen),
              fontsize=8, loc="best")
    save_figure(fig, path)


def write_report(folder: str | Path, resamples: int = RESAMPLES) -> dict:
    """Compute the summary and write summary.json, report.md, cot_gain.png and report.html into `folder`."""
    from headlab.core.html import Page

    if not isinstance(resamples, int) or resamples < 1:  # an empty bootstrap has no interval to report
        raise HeadlabError(f"cot report: field 'resamples' must be >= 1 (got {resamples!r})")
    folder = Path(folder)
    records, modes = load_records(folder)
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    summary = summarize(records, modes, resamples)
    model = config.get("model") or "?"
    caps = ", ".join(f"{m} ≤ {config[f'{m}_max_new_tokens']} tokens" for m in modes
                     if f"{m}_max_new_tokens" in config)
    lead = (f"model {model}; {len(records)} items; greedy decoding; {caps}; "
            f"{config.get('shots', 0)}-shot; 95% percentile bootstrap intervals ({resamples} resamples), "
            "differences paired over items and called only when the interval excludes 0 and the sign-flip "
            "permutation p < 0.05.")
    if config.get("plan_isolation"):
        lead += (" Plan programs ran under the operating system's isolation." if config["plan_isolation"] == "os"
                 else " Plan programs ran under the in-process guard only (--unsafe-exec), not isolated.")
    tables = [("Per dataset", table(summary["datasets"], modes, "dataset")),
              ("Per category (items pooled)", table(summary["categories"], modes, "category")),
              ("All items", table([{"all": "all", **summary["all"]}], modes, "all"))]
    if "eq_split" in summary:
        split_rows = [{"items": k, **v} for k, v in summary["eq_split"].items() if v["n"]]
        tables.append(('The "=" split: question or CoT response contains "="', table(split_rows, modes, "items")))
    png = folder / "cot_gain.png"
    if any("cot_minus_direct" in r for r in summary["datasets"]):
        gain_figure(summary["datasets"], png, f"CoT − direct, {Path(str(model)).name}")
    md = [f"# CoT vs direct\n\n{lead}\n"]
    page = Page(f"CoT vs direct: {Path(str(model)).name}")
    page.paragraph(lead, "lead")
    for title, (header, body) in tables:
        md.append(f"\n## {title}\n\n" + markdown(header, body))
        page.heading(title)
        page.table(header, body)
        if title == "Per dataset" and png.is_file():
            page.figure(png, "CoT minus direct accuracy per dataset, 95% paired bootstrap interval, "
                             "coloured by category")
    page.paragraph("Per-item responses, extracted answers and correctness: examples.jsonl in this folder.")
    atomic_write_json(folder / "summary.json", summary)
    atomic_write_text(folder / "report.md", "".join(md))
    page.write(folder / "report.html")
    return summary


def print_summary(summary: dict) -> None:
    modes = summary["modes"]
    header, body = table(summary["datasets"], modes, "dataset")
    keep = [i for i, h in enumerate(header) if "extracted" not in h and "tokens" not in h]
    print(markdown([header[i] for i in keep], [[r[i] for i in keep] for r in body]), end="")
