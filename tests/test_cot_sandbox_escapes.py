"""Programs written to escape the plan-mode sandbox, each of which got out when the sandbox was an in-process hook
(issue #21). Each first switches the audit hook off, as such a program can, so what holds is the operating
system's isolation; the control in each test shows the same program gets out under the guard alone."""

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import replace

import pytest

from headlab.cot.sandbox import SandboxLimits, isolation_problem, run_program

pytestmark = pytest.mark.skipif(isolation_problem() is not None,
                                reason=f"no OS isolation on this machine: {isolation_problem()}")

# What a hostile program does first: empty the guard's tables and make every path look inside its folder.
HOOK_OFF = """import os, os.path, sys
sys.stdout.reconfigure(line_buffering=True)  # what it printed survives a kill at the CPU limit
main = sys.modules['__main__']
main.BLOCKED, main.PATH_EVENTS, main.WRITE_FLAGS = ('no-such-event',), {}, 0
os.path.realpath = lambda path, **kw: os.getcwd()
def attempt(what, action):
    try:
        action()
        print(what, 'got out')
    except Exception as e:
        print(what, 'refused', type(e).__name__)
"""
ISOLATED = SandboxLimits(cpu_seconds=5, wall_seconds=30.0)
GUARD_ONLY = replace(ISOLATED, isolation="guard")


def escape(body: str, limits: SandboxLimits = ISOLATED):
    got = run_program(HOOK_OFF + body, limits)
    assert got.status == "ok", got  # the program ran to its end: every attempt was answered, none killed it
    return got.stdout


def test_the_hook_off_switch_works_under_the_guard_alone(tmp_path):
    out = escape(f"attempt('write', lambda: open({str(tmp_path / 'pwned')!r}, 'w').write('x'))", GUARD_ONLY)
    assert "write got out" in out and (tmp_path / "pwned").exists()


def test_no_secret_outside_is_readable(tmp_path, monkeypatch):
    key = tmp_path / ".ssh" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("PRIVATE-KEY-MATERIAL")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-of-the-parent")
    paths = ["/etc/passwd", "/etc/shadow", str(key), f"/proc/{os.getpid()}/environ", "/proc/self/environ",
             os.path.expanduser("~/.bash_history")]
    body = "".join(f"attempt('read {p}', lambda: print(open({p!r}).read()))\n" for p in paths)
    out = escape(body + "print('ENV', dict(os.environ))\n")
    assert out.count("refused") == len(paths) and "got out" not in out
    assert "PRIVATE-KEY" not in out and "sk-secret" not in out and "root:" not in out
    assert "PRIVATE-KEY" in escape(f"print(open({str(key)!r}).read())", GUARD_ONLY)  # the control


def test_no_write_delete_or_chmod_outside_its_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    victim.chmod(0o600)
    stdlib_file = os.__file__
    before = os.stat(stdlib_file)
    body = f"""
d = {str(tmp_path)!r}
attempt('open dir_fd', lambda: os.open('victim.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=os.open(d, os.O_RDONLY)))
attempt('unlink dir_fd', lambda: os.unlink('victim.txt', dir_fd=os.open(d, os.O_RDONLY)))
attempt('chmod fd', lambda: os.chmod(os.open({str(victim)!r}, os.O_RDONLY), 0o777))
attempt('append stdlib', lambda: open({stdlib_file!r}, 'a').write('#'))
attempt('chmod stdlib', lambda: os.chmod({stdlib_file!r}, 0o777))
attempt('unlink stdlib', lambda: os.unlink({stdlib_file!r}))
attempt('write root', lambda: open('/planted', 'w').write('x'))
attempt('symlink out', lambda: os.symlink('/', 'up') or open('up/planted', 'w'))
"""
    out = escape(body)
    assert out.count("refused") == 8 and "got out" not in out, out
    assert victim.read_text() == "keep" and victim.stat().st_mode & 0o777 == 0o600
    after = os.stat(stdlib_file)
    assert (after.st_mode, after.st_size, after.st_mtime_ns) == (before.st_mode, before.st_size, before.st_mtime_ns)
    out = escape(f"attempt('unlink', lambda: os.unlink('victim.txt', dir_fd=os.open({str(tmp_path)!r}, 0)))",
                 GUARD_ONLY)
    assert "unlink got out" in out and not victim.exists()  # the control


def test_no_network_with_the_hook_off(listener):
    port, hits = listener
    connect = f"import socket\nattempt('connect', lambda: socket.create_connection(('127.0.0.1', {port}), 2))\n"
    assert "connect refused" in escape(connect) and not hits
    assert "connect got out" in escape(connect, GUARD_ONLY)  # the control


def test_no_process_starts_or_outlives_it():
    marker = f"headlab-escape-{uuid.uuid4().hex}"
    body = f"""
import _posixsubprocess, subprocess
attempt('fork', lambda: os.fork() or os._exit(0))
attempt('exec', lambda: os.execv('/bin/sleep', ['/bin/sleep', '30', {marker!r}]))
attempt('posix_spawn', lambda: os.posix_spawn('/bin/sleep', ['/bin/sleep', '30', {marker!r}], {{}}))
attempt('popen', lambda: subprocess.Popen(['/bin/sleep', '30', {marker!r}], start_new_session=True))
print('system returned', os.system('sleep 30 {marker} &'))
"""
    out = escape(body)
    assert out.count("refused") == 4 and "got out" not in out and "system returned 0" not in out, out
    assert not _processes_with(marker)


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_no_signal_reaches_a_process_outside():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        body = f"""
import signal
attempt('kill', lambda: os.kill({victim.pid}, signal.SIGKILL))
attempt('pidfd', lambda: signal.pidfd_send_signal(os.pidfd_open({victim.pid}), signal.SIGKILL))
attempt('pidfd parent', lambda: signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL))
attempt('kill all', lambda: os.kill(-1, signal.SIGKILL))
print('still here')
"""
        out = escape(body)
        assert "still here" in out and victim.poll() is None
        assert run_program(HOOK_OFF + f"os.kill({victim.pid}, {int(signal.SIGKILL)})", GUARD_ONLY).status == "ok"
        assert victim.wait(10) == -signal.SIGKILL  # the control
    finally:
        victim.kill()
        victim.wait()


def test_limits_cannot_be_raised_nor_namespaces_or_mounts_made():
    body = """
import ctypes, resource
libc = ctypes.CDLL(None, use_errno=True)
attempt('raise cpu', lambda: resource.setrlimit(resource.RLIMIT_CPU, (3600, 3600)))
for what, result in (('unshare', libc.unshare(0x10000000 | 0x00020000)),
                     ('mount', libc.mount(b'none', b'/sandbox', b'tmpfs', 0, None)),
                     ('chroot', libc.chroot(b'/sandbox'))):
    print(what, 'refused' if result == -1 else 'got out')
while True:
    pass
"""
    got = run_program(HOOK_OFF + body, replace(ISOLATED, cpu_seconds=1))
    assert got.status == "timeout" and got.stdout.count("refused") == 4 and "got out" not in got.stdout, got
