"""The study report renders in headless Chromium: a screenshot with the embedded plots visible, and a DOM check.

The report is built by headlab's own `write_report` from minimal stage outputs (the files the report reads, with
figures drawn by headlab's plotting code), so this takes seconds instead of the minutes a real study run needs.
Skipped when no Chromium is installed (`.ci/run` installs Debian's `chromium` in CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from headlab.compare import plot_recall_vs_score, recall_score_correlation
from headlab.io import atomic_write_json
from headlab.niah_sweep import niah_heatmap
from headlab.plots import head_heatmap
from headlab.study.config import REAL, StudyConfig
from headlab.study.pipeline import StageContext
from headlab.study.report import BASE, write_report

WIDTH, HEIGHT = 1280, 2400
TITLE = "headlab study: synthetic context extension and retrieval heads"
C0_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's default first colour: the score bars
C3_RED = np.array([0xD6, 0x27, 0x28]) / 255  # the recall-vs-score scatter and the knockout bars


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _fake_run(root: Path, config: StudyConfig) -> dict[str, Path]:
    """Write what `collect` and `write_report` read from a finished run; returns the report's deps."""
    rng = np.random.default_rng(0)
    task = config.tasks[0]
    models = [BASE, *config.models]
    deps = {}
    for i, m in enumerate(models):
        deps[f"eval/{task}/{m}"] = root / "eval" / task / m
        atomic_write_json(root / "eval" / task / m / "summary.json", {"score": 0.2 + 0.15 * i, "n": 16})
        atomic_write_json(root / "knockout" / task / m / "knockout.json",
                          {"k": 4, "baseline": 0.8, "top": 0.3, "random_mean": 0.7, "random_std": 0.05})
        atomic_write_json(root / "heads" / task / m / "summary.json", {"probes_counted": 8})
        head_heatmap(rng.random((4, 8)), root / "heads" / task / m / "retrieval_heads.png")
    for v in config.variants:
        atomic_write_json(root / "patch" / task / v / "patching.json", {
            "target": 0.4, "source": 0.8,
            "sets": {s: {"mean": 0.5} for s in ("intersection", "complement", "random")}})
    rows = [{"label": v, "recall": 0.25 * (i + 1), "jaccard": 0.2, "cosine": 0.9, "score": 0.3 + 0.2 * i}
            for i, v in enumerate(config.variants)]
    compare = {"vs_reference": rows, "files": [], "reference": "x",
               "spearman": recall_score_correlation([r["recall"] for r in rows], [r["score"] for r in rows])}
    atomic_write_json(root / "compare" / task / "compare.json", compare)
    plot_recall_vs_score(compare, root / "compare" / task / "recall_vs_score.png")
    for label in (BASE, f"{task}-{REAL}"):
        niah_heatmap({"lengths": [256, 512], "depths": [0.0, 1.0], "scores": [[1.0, 0.5], [0.5, 0.0]], "mean": 0.5},
                     root / "niah" / label / "niah.png")
    return deps


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root; a private profile keeps runs independent of each other and of ~/.config.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
             "--force-device-scale-factor=1", f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def _count_near(pixels: np.ndarray, colour: np.ndarray, tol: float = 8 / 255) -> int:
    return int(np.all(np.abs(pixels - colour) <= tol, axis=-1).sum())


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium or chromium-browser on PATH (Debian: apt-get install chromium)")
    config = StudyConfig(tasks=["mdqa"], variants=["symbolic-diverse", "templated-repetitive", "real-repetitive"])
    out = tmp_path / "report"
    write_report(StageContext(out=out, work=tmp_path / "work", deps=_fake_run(tmp_path / "run", config), inputs={}),
                 config)
    url = (out / "report.html").as_uri()
    # base + real + 3 variants heads maps, scores, scatter, knockout, patching, 2 NIAH maps.
    expected_imgs = 5 + 4 + 2

    dom = _chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', dom)) == expected_imgs
    assert len(re.findall(r"<img\b", dom)) == expected_imgs
    assert f"<title>{TITLE}</title>" in dom and f"<h1>{TITLE}</h1>" in dom
    for heading in ("Findings", "Downstream score", "mdqa: retrieval heads", "Needle in a haystack"):
        assert f"<h2>{heading}</h2>" in dom

    shot = tmp_path / "shot.png"
    _chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", url)
    pixels = matplotlib.image.imread(shot)[..., :3]  # floats in 0..1; drop alpha
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    assert (pixels.min(axis=-1) < 0.9).mean() > 0.05, "the page looks blank"
    # Saturated pixels (channels far apart) come from the figures and the findings' border; the exact matplotlib
    # colours come only from the decoded plots: a broken image would show none of them.
    assert (np.ptp(pixels, axis=-1) > 0.3).mean() > 0.02
    # Measured: about 73,000 blue pixels (five bars) and 270 red ones (three points) in the first 2400 px.
    assert _count_near(pixels, C0_BLUE) > 20_000, "no score bars (matplotlib blue) visible"
    assert _count_near(pixels, C3_RED) > 100, "no scatter points (matplotlib red) visible"
