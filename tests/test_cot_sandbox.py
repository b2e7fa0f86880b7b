"""The plan-then-solve sandbox: programs run, but no network, no endless loops, no writes outside its folder.

The guard's refusals are checked in both isolations; the escapes a program written to get out would try
(tests/test_cot_sandbox_escapes.py) only under the operating system's isolation, which is what holds them."""

from dataclasses import replace

import pytest

from headlab.cot.sandbox import SandboxLimits, isolation_problem, program_of, run_program, solve

BOTH = [pytest.param("os", marks=pytest.mark.skipif(isolation_problem() is not None,
                                                    reason=f"no OS isolation here: {isolation_problem()}")),
        "guard"]
FAST = SandboxLimits(cpu_seconds=1, wall_seconds=20.0)


def test_program_runs_and_prints():
    got = solve("Plan: add them.\n```python\na = 80\nb = 29\nprint(a + b)\n```\nThat prints the sum.")
    assert (got.status, got.stdout.strip()) == ("ok", "109")
    assert program_of("no code here") is None
    assert solve("no code here").status == "no_program"
    assert run_program("raise ValueError('nope')").status == "error"


@pytest.mark.parametrize("isolation", BOTH)
def test_network_is_refused(listener, isolation):
    port, hits = listener
    limits = SandboxLimits(isolation=isolation)
    got = run_program(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\nprint('connected')",
                      limits)
    assert got.status == "blocked" and "connected" not in got.stdout and "socket" in got.error
    got = run_program(f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')", limits)
    assert got.status == "blocked"
    assert not hits


@pytest.mark.parametrize("isolation", BOTH)
def test_processes_and_limit_changes_are_refused(isolation):
    limits = SandboxLimits(isolation=isolation)
    assert run_program("import os\nos.system('echo hi')", limits).status == "blocked"
    assert run_program("import subprocess\nsubprocess.run(['true'])", limits).status == "blocked"
    assert run_program("import os\nos.kill(1, 9)", limits).status == "blocked"
    assert run_program("import ctypes\nctypes.CDLL(None).getpid()", limits).status == "blocked"
    got = run_program("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (99, 99))", limits)
    assert got.status == "blocked"


@pytest.mark.parametrize("isolation", BOTH)
def test_long_loop_and_sleep_are_stopped(isolation):
    got = run_program("while True:\n    pass\n", replace(FAST, isolation=isolation))
    assert got.status == "timeout"
    sleeper = SandboxLimits(cpu_seconds=1, wall_seconds=2.0, isolation=isolation)
    assert run_program("import time\ntime.sleep(3600)", sleeper).status == "timeout"


@pytest.mark.parametrize("isolation", BOTH)
def test_memory_and_files_are_limited(isolation):
    got = run_program("x = bytearray(20 << 30)\nprint('allocated')",
                      SandboxLimits(memory_bytes=512 << 20, isolation=isolation))
    assert got.status == "error" and "MemoryError" in got.error
    got = run_program("fs = [open('prog.py') for _ in range(10_000)]", SandboxLimits(isolation=isolation))
    assert got.status == "error" and "Too many open files" in got.error


@pytest.mark.parametrize("isolation", BOTH)
def test_no_writes_outside_its_folder(tmp_path, isolation):
    limits = SandboxLimits(isolation=isolation)
    target = tmp_path / "outside.txt"
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    for src in (f"open({str(target)!r}, 'w').write('x')",
                f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
                f"import os\nos.remove({str(keep)!r})",
                f"import shutil\nshutil.copy('prog.py', {str(target)!r})",
                f"import os\nos.rename('prog.py', {str(target)!r})"):
        got = run_program(src, limits)
        assert got.status == "blocked", (src, got)
    assert not target.exists() and keep.read_text() == "keep"
    # Its own folder is writable, threads and numpy work.
    got = run_program("import os, threading\nopen('a.txt', 'w').write('ok')\nos.mkdir('d')\n"
                      "t = threading.Thread(target=lambda: print(open('a.txt').read()))\nt.start(); t.join()\n"
                      "import numpy\nprint(int(numpy.arange(5).sum()))", limits)
    assert (got.status, got.stdout.split()) == ("ok", ["ok", "10"])


def test_a_folder_outside_is_readable_only_without_isolation(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    got = run_program(f"print(open({str(keep)!r}).read())", SandboxLimits(isolation="guard"))
    assert (got.status, got.stdout.strip()) == ("ok", "keep")
    if isolation_problem() is None:
        got = run_program(f"print(open({str(keep)!r}).read())")
        assert got.status == "error" and "No such file" in got.error and "keep" not in got.stdout


def test_an_unknown_isolation_is_refused():
    with pytest.raises(ValueError, match="isolation"):
        run_program("print(1)", SandboxLimits(isolation="none"))


