"""The plan-then-solve sandbox: programs run, but no network, no endless loops, no writes outside its folder."""

import socket
import threading

import pytest

from headlab.cot.sandbox import SandboxLimits, program_of, run_program, solve

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=20.0)


def test_program_runs_and_prints():
    got = solve("Plan: add them.\n```python\na = 80\nb = 29\nprint(a + b)\n```\nThat prints the sum.")
    assert (got.status, got.stdout.strip()) == ("ok", "109")
    assert program_of("no code here") is None
    assert solve("no code here").status == "no_program"
    assert run_program("raise ValueError('nope')").status == "error"


@pytest.fixture
def listener():
    """A local TCP server that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    hits = []

    def accept():
        try:
            hits.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    server.close()
    thread.join(5)


def test_network_is_refused(listener):
    port, hits = listener
    got = run_program(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\nprint('connected')")
    assert got.status == "blocked" and "connected" not in got.stdout and "socket" in got.error
    got = run_program(f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')")
    assert got.status == "blocked"
    assert not hits


def test_processes_and_limit_changes_are_refused():
    assert run_program("import os\nos.system('echo hi')").status == "blocked"
    assert run_program("import subprocess\nsubprocess.run(['true'])").status == "blocked"
    assert run_program("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (99, 99))").status == "blocked"


def test_long_loop_is_stopped():
    got = run_program("while True:\n    pass\n", FAST)
    assert got.status == "timeout"
    sleeper = SandboxLimits(cpu_seconds=1, wall_seconds=2.0)
    assert run_program("import time\ntime.sleep(60)", sleeper).status == "timeout"


def test_memory_is_limited():
    got = run_program("x = bytearray(8 << 30)\nprint('allocated')", SandboxLimits(memory_bytes=512 << 20))
    assert got.status == "error" and "MemoryError" in got.error


def test_no_writes_outside_its_folder(tmp_path):
    target = tmp_path / "outside.txt"
    keep = tmp_path / "keep.txt"
    keep.write_text("keep")
    for src in (f"open({str(target)!r}, 'w').write('x')",
                f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
                f"import os\nos.remove({str(keep)!r})",
                f"import shutil\nshutil.copy('prog.py', {str(target)!r})",
                f"import os\nos.rename('prog.py', {str(target)!r})"):
        got = run_program(src)
        assert got.status == "blocked", (src, got)
    assert not target.exists() and keep.read_text() == "keep"
    # Its own folder is writable, and reading is allowed.
    got = run_program(f"open('a.txt', 'w').write('ok')\nprint(open('a.txt').read(), open({str(keep)!r}).read())")
    assert (got.status, got.stdout.split()) == ("ok", ["ok", "keep"])
