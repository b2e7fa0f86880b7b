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
from study_fake import fake_run

from headlab.study.config import StudyConfig
from headlab.study.pipeline import StageContext
from headlab.study.report import write_report

WIDTH, HEIGHT = 1280, 2400
TITLE = "headlab study: synthetic context extension and retrieval heads"
C0_BLUE = np.array([0x1F, 0x77, 0xB4]) / 255  # matplotlib's default first colour: the score bars
C3_RED = np.array([0xD6, 0x27, 0x28]) / 255  # the recall-vs-score scatter and the knockout bars


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


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
    write_report(StageContext(out=out, work=tmp_path / "work", deps=fake_run(tmp_path / "run", config), inputs={}),
                 config)
    url = (out / "report.html").as_uri()
    # base + real + 3 variants heads maps; scores, scatter, knockout bars and curve, patching bars and curve,
    # NIAH by length; 2 NIAH maps.
    expected_imgs = 5 + 7 + 2

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
