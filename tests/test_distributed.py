"""Data parallelism: `accelerate launch --cpu --num_processes 2` gives the files of a one-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from headlab.cli import main
from headlab.core import distributed
from headlab.model.loading import default_model_dir

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (default_model_dir() / "config.json").is_file(), reason="no shipped model")


def _free_port() -> int:
    # Other test runs may share the machine: never rely on accelerate's fixed default port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _launch(args: list[str]) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2`: torchrun underneath, gloo without GPUs (accelerate's
    `--cpu` flag runs a single process)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "headlab.cli", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1, done.stdout  # only the main process prints and writes
    return done


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.suffix in (".json", ".jsonl")}


def test_no_launcher_means_no_sharding(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.is_main() and distributed.process_device("cuda") == "cuda"
    assert distributed.map_items(lambda xs: [x * 2 for x in xs], [1, 2, 3]) == [2, 4, 6]


def test_detect_on_two_processes_writes_what_one_process_writes(tmp_path):
    # The default toy probes of the shipped model: 24 probes, some counted and some not, odd batch split.
    args = ["detect", "--max-new-tokens", "12", "--batch-size", "5", "--top-k", "5"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    done = _launch(args + ["--out", str(tmp_path / "two")])
    assert "12/12" in done.stderr and "24/24" not in done.stderr  # each process decoded half of the probes
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert set(one) == {"retrieval_scores.json", "summary.json"} and two == one
    summary = json.loads(one["summary.json"])
    assert summary["probes_given"] == 24 and 0 < summary["probes_counted"]
    assert (tmp_path / "two" / "retrieval_heads.png").is_file()


def test_evaluate_on_two_processes_writes_what_one_process_writes(tmp_path):
    data = tmp_path / "eval.jsonl"
    assert main(["data", "make", "--task", "mdqa", "--n", "5", "--length", "200", "--out", str(data)]) == 0
    args = ["evaluate", "--data", str(data), "--max-new-tokens", "8", "--batch-size", "2"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    _launch(args + ["--out", str(tmp_path / "two")])
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert set(one) == {"config.json", "predictions.jsonl", "summary.json"} and two == one
    assert len(one["predictions.jsonl"].splitlines()) == 5


@pytest.mark.slow
def test_knockout_on_two_processes_writes_what_one_process_writes(tmp_path):
    # Every head set is scored over both processes' items: the scores, curve and controls must not change.
    assert main(["detect", "--max-new-tokens", "8", "--out", str(tmp_path / "heads")]) == 0
    args = ["knockout", "--heads", str(tmp_path / "heads"), "--limit", "7", "--k", "2", "--seeds", "2",
            "--mode", "mean", "--max-new-tokens", "8", "--batch-size", "3"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    _launch(args + ["--out", str(tmp_path / "two")])
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert set(one) == {"config.json", "knockout.json"} and two == one


@pytest.mark.slow
def test_niah_on_two_processes_writes_what_one_process_writes(tmp_path):
    args = ["niah", "--lengths", "128", "192", "--depths", "0.0", "1.0", "--needles", "2", "--max-new-tokens", "8",
            "--batch-size", "3"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    _launch(args + ["--out", str(tmp_path / "two")])
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert {"niah.json", "niah_predictions.jsonl"} <= set(one) and two == one
    assert len(one["niah_predictions.jsonl"].splitlines()) == 2 * 2 * 2


@pytest.mark.slow
def test_patch_on_two_processes_writes_what_one_process_writes(tmp_path):
    # Target and source are the shipped model with one head knocked out by patching from itself: every head
    # set's score must come out the same whatever process scored which example.
    model = str(default_model_dir())
    assert main(["detect", "--max-new-tokens", "8", "--out", str(tmp_path / "heads")]) == 0
    data = tmp_path / "eval.jsonl"
    assert main(["data", "make", "--task", "mdqa", "--n", "5", "--length", "200", "--out", str(data)]) == 0
    heads = str(tmp_path / "heads")
    args = ["patch", "--source", model, "--target", model, "--heads", heads, heads, "--data", str(data),
            "--k", "2", "--max-new-tokens", "8", "--batch-size", "2"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    _launch(args + ["--out", str(tmp_path / "two")])
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert "patching.json" in one and two == one


@pytest.mark.slow
def test_lofit_eval_on_two_processes_writes_what_one_process_writes(tmp_path):
    data = tmp_path / "completions.jsonl"
    rows = [{"prompt": f"Question: What is {a} plus {b}?\nAnswer:", "completion": f" {a + b}"}
            for a in range(3) for b in range(3)]  # 9 items: an odd split over two processes
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["lofit", "eval", "--data", str(data), "--max-new-tokens", "4"]
    assert main(args + ["--out", str(tmp_path / "one.json")]) == 0
    _launch(args + ["--out", str(tmp_path / "two.json")])
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["n"] == 9 and json.loads((tmp_path / "two.json").read_text()) == one
