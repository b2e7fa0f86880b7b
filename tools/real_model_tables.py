"""The tables of docs/real_model.md, printed as markdown from the folders `headlab detect` and `headlab knockout`
wrote (see the commands there).

    python tools/real_model_tables.py --detect runs/smollm2/detect --knockout runs/smollm2/knockout
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from scipy.stats import binomtest

PROBE_ID = re.compile(r"needle(\d+)-len(\d+)-depth([\d.]+)")


def wilson(successes: int, n: int) -> str:
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return f"{successes / n:.2f} [{ci.low:.2f}, {ci.high:.2f}]"


def detect_tables(folder: Path, top: int = 10) -> None:
    summary = json.loads((folder / "summary.json").read_text())
    means = summary["mean_scores"]
    g = summary["geometry"]
    total = g["n_layers"] * g["n_heads"]
    strong = [h for h, s in means.items() if s >= 0.1]
    print(f"probes: {summary['probes_given']} given, {summary['probes_counted']} counted; heads with mean >= 0.1: "
          f"{len(strong)} of {total} ({100 * len(strong) / total:.1f}%)\n")
    print("| rank | head | mean score |\n|---:|:---:|---:|")
    for rank, (head, score) in enumerate(sorted(means.items(), key=lambda kv: -kv[1])[:top], 1):
        print(f"| {rank} | {head} | {score:.3f} |")
    # NIAH accuracy: a probe succeeds when the response recalls >= half of the needle's words (detect's filter).
    cells: dict[tuple[int, float], list[int]] = {}
    for p in summary["probes"]:
        _, length, depth = PROBE_ID.fullmatch(p["id"]).groups()
        cells.setdefault((int(length), float(depth)), []).append(int(p["recall"] >= 0.5))
    lengths, depths = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    print("\n| length | " + " | ".join(f"depth {d:g}" for d in depths) + " | all |")
    print("|---:|" + "---:|" * (len(depths) + 1))
    for length in lengths:
        row = [cells.get((length, d), []) for d in depths]
        flat = [x for r in row for x in r]
        print(f"| {length} | " + " | ".join(f"{sum(r)}/{len(r)}" for r in row) + f" | {wilson(sum(flat), len(flat))} |")
    print("\nrecall of the needle's words per probe: "
          + ", ".join(f"{p['id']} {p['recall']:.2f}" for p in summary["probes"]))


def knockout_table(folder: Path) -> None:
    result = json.loads((folder / "knockout.json").read_text())
    n = result["n_items"]
    rnd = result["random"]
    pooled = round(sum(rnd) * n)
    print(f"\nknockout ({json.loads((folder / 'config.json').read_text())['mode']}), n = {n} probes, "
          f"{len(rnd)} random seeds; accuracy [95% Wilson interval]\n")
    print("| heads knocked out | NIAH accuracy |\n|---|---:|")
    print(f"| none | {wilson(round(result['baseline'] * n), n)} |")
    print(f"| top {result['k']} ({', '.join(result['top_heads'])}) | {wilson(round(result['top'] * n), n)} |")
    print(f"| {result['k']} random, per seed | {', '.join(f'{r:.2f}' for r in rnd)} |")
    print(f"| {result['k']} random, mean ± sd over seeds | {statistics.fmean(rnd):.2f} ± "
          f"{statistics.stdev(rnd) if len(rnd) > 1 else 0.0:.2f} |")
    print(f"| {result['k']} random, pooled ({len(rnd)} x {n} runs) | {wilson(pooled, n * len(rnd))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detect", type=Path, help="a `headlab detect` output folder")
    parser.add_argument("--knockout", type=Path, help="a `headlab knockout` output folder")
    args = parser.parse_args()
    if args.detect:
        detect_tables(args.detect)
    if args.knockout:
        knockout_table(args.knockout)


if __name__ == "__main__":
    main()
