"""A command prints headlab's own bar and results; library bars and warnings only with --verbose."""

import json
import subprocess
import sys


def _detect(tiny_model_dir, tmp_path, *extra):
    probes = tmp_path / "p.jsonl"
    probes.write_text(json.dumps({"input_ids": list(range(3, 60)), "needle_start": 10, "needle_end": 30}) + "\n")
    cmd = [sys.executable, "-m", "headlab.cli", *extra, "detect", "--model", str(tiny_model_dir), "--probes",
           str(probes), "--out", str(tmp_path / "out"), "--max-new-tokens", "4", "--keep-failed"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "", "PYTHONWARNINGS": "default"})
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_default_run_shows_only_headlab_progress(tiny_model_dir, tmp_path):
    err = _detect(tiny_model_dir, tmp_path)
    pieces = [p.strip() for line in err.splitlines() for p in line.split("\r") if p.strip()]
    assert pieces and all(p.startswith("detect:") for p in pieces), err


def test_verbose_run_shows_library_loading_bar(tiny_model_dir, tmp_path):
    assert "Loading weights" in _detect(tiny_model_dir, tmp_path, "--verbose")
