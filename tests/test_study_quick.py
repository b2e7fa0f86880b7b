"""The quick study end to end on the shipped tiny model, with a real interruption (slow: minutes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headlab.model.loading import default_model_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (default_model_dir() / "config.json").is_file(), reason="no shipped model")]

CMD = [sys.executable, "-m", "headlab.cli", "study", "--preset", "quick", "--no-progress", "--out"]


def _run(out: Path) -> None:
    subprocess.run(CMD + [str(out)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_quick_study_survives_a_kill_and_matches_an_uninterrupted_run(tmp_path):
    _run(tmp_path / "clean")
    report = tmp_path / "clean" / "report"
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and "Findings" in html
    assert (report / "figures" / "scores.png").is_file()

    killed = tmp_path / "killed"
    proc = subprocess.Popen(CMD + [str(killed)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill in the middle of the first fine-tune, after its first checkpoint if it writes one.
    deadline = time.time() + 600
    while not list((killed / ".work").glob("models/mdqa/*/seed*/run/config.json")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "report").exists()
    _run(killed)
    clean = json.loads((report / "numbers.json").read_text())
    again = json.loads((killed / "report" / "numbers.json").read_text())
    assert again == clean
    status = subprocess.run(CMD + [str(killed)], check=True, capture_output=True, text=True)
    assert "0 stages run" in status.stdout
