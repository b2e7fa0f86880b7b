"""Benchmark: the quick study run sequentially against the same study on a local Ray instance.

Each run is a fresh `headlab study --preset quick` in its own folder (a subprocess, as a user runs it); the
script prints both wall times, their ratio, and whether the two `report/numbers.json` are identical (they must
be: the executor changes where stages run, never what they compute).

    python bench/study_parallel.py [--num-cpus 2] [--keep DIR]

On a 2-core machine expect a ratio near 1: the stages compete for the same two cores and every Ray worker
pays its own imports. On a machine with many cores or GPUs independent stages (the variants' fine-tunes,
evaluations and detections) overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_study(out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "headlab.cli", "study", "--preset", "quick", "--no-progress", "--out", str(out),
           *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    parser.add_argument("--keep", help="write the two run folders here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep or tmp)
        sequential = run_study(base / "sequential", [])
        ray = run_study(base / "ray", ["--executor", "ray", "--num-cpus", str(args.num_cpus)])
        numbers = [json.loads((base / name / "report" / "numbers.json").read_text()) for name in ("sequential", "ray")]
        same = numbers[0] == numbers[1]
    print(f"quick study, {os.cpu_count()} cores: sequential {sequential:.1f} s, Ray ({args.num_cpus} CPUs) "
          f"{ray:.1f} s, speed-up {sequential / ray:.2f}x; numbers.json identical: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
