"""The quick study through a local Ray instance (2 CPUs): the numbers of the sequential run, also after the
driver is killed mid-run and the command re-run (slow: minutes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headlab.model.loading import default_model_dir

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.extended,
              pytest.mark.skipif(not (default_model_dir() / "config.json").is_file(), reason="no shipped model")]

ROOT = Path(__file__).resolve().parents[1]
CMD = [sys.executable, "-m", "headlab.cli", "study", "--preset", "quick", "--no-progress", "--out"]
RAY = ["--executor", "ray", "--num-cpus", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(out: Path, extra: list[str]) -> str:
    return subprocess.run(CMD + [str(out), *extra], check=True, env=ENV, cwd=ROOT, capture_output=True,
                          text=True).stdout


def _stat(pid: int) -> list[str] | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of the processes started under `pid` (Linux /proc): the Ray instance of a driver."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            fields = _stat(child)
            if fields:
                found.append((child, fields[19]))
                todo.append(child)
    return found


def _end(processes: list[tuple[int, str]]) -> None:
    """SIGKILL each process that is still the one recorded (same pid and start time: never a reused pid)."""
    for pid, started in processes:
        fields = _stat(pid)
        if fields and fields[19] == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _numbers(out: Path) -> dict:
    return json.loads((out / "report" / "numbers.json").read_text())


def test_quick_study_on_ray_matches_the_sequential_run_also_after_a_killed_driver(tmp_path):
    _run(tmp_path / "sequential", [])
    reference = _numbers(tmp_path / "sequential")

    _run(tmp_path / "ray", RAY)
    assert _numbers(tmp_path / "ray") == reference

    killed = tmp_path / "killed"
    proc = subprocess.Popen(CMD + [str(killed), *RAY], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # Kill the driver while fine-tunes run as Ray tasks (after one has started writing its run folder).
    deadline = time.time() + 600
    while not list((killed / ".work").glob("models/mdqa/*/seed*/run/config.json")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(3)
    ray_processes = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        assert not (killed / "report").exists()
        # Re-run at once: tasks of the killed driver may still be running for a few seconds (stage locks).
        out = _run(killed, RAY)
        assert "already done" in out
        assert _numbers(killed) == reference
        assert "0 stages run" in _run(killed, RAY)
    finally:
        _end(ray_processes)  # Ray's agents outlive a SIGKILLed driver; they are this test's to end
