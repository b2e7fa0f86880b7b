"""Run a model-written Python program in a restricted subprocess ("plan then solve").

The child is a fresh interpreter in isolated mode (`-I`: no user site, no PYTHON* variables, no cwd on the
path) started in a new empty temp folder, with rlimits (set by its prelude) on CPU time, address space, file
size and open files, and an audit hook (installed before the program is compiled) that refuses sockets,
subprocesses, ctypes, and any write, removal or rename outside the temp folder. A wall-clock timeout
catches programs that sleep.

This is a guard against the accidents of model-written arithmetic, not a security boundary against code
written to escape it: run untrusted models' programs in a container as well.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# The child's first code: it sets the limits (argv: CPU seconds, address-space bytes, file-size bytes), reads the
# program from prog.py in its cwd, locks the process down with the audit hook, and only then compiles the program.
PRELUDE = r'''
import os, resource, sys
CPU, MEMORY, FILE_SIZE = (int(a) for a in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CPU, (CPU, CPU + 1))
resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE, FILE_SIZE))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
ROOT = os.path.realpath(os.getcwd())
SOURCE = open("prog.py", encoding="utf-8").read()
for _name in ("numpy", "sympy"):  # they load C libraries through ctypes, which the hook refuses: import first
    if _name in SOURCE:
        try:
            __import__(_name)
        except ImportError:
            pass
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "pty.", "ctypes.", "winreg.", "webbrowser.", "urllib.Request",
           "resource.setrlimit", "resource.prlimit")  # root could raise its own hard limits
PATH_EVENTS = {"os.remove": 1, "os.rename": 2, "os.rmdir": 1, "os.mkdir": 1, "os.symlink": 2, "os.link": 2,
               "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1,
               "shutil.copyfile": 2, "shutil.move": 2, "os.chdir": 1}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _inside(path):
    if isinstance(path, int):
        return True
    full = os.path.realpath(os.fsdecode(path))
    return full == ROOT or full.startswith(ROOT + os.sep)

def _guard(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed (no network, no processes)")
    if event == "open":
        path, mode, flags = args
        writes = (mode is not None and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS)
        if writes and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the sandbox folder is not allowed")
    elif event in PATH_EVENTS:
        for path in args[:PATH_EVENTS[event]]:
            if path is not None and not _inside(path):
                raise PermissionError(f"sandbox: {event} on {path!r} outside the sandbox folder is not allowed")

sys.addaudithook(_guard)
code = compile(SOURCE, "program.py", "exec")
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20
    max_output_chars: int = 2000


@dataclass
class SandboxResult:
    status: str  # "ok", "error" (exception or non-zero exit), "timeout", "blocked", "no_program"
    stdout: str
    error: str = ""

    def to_dict(self) -> dict:
        return {"status": self.status, "stdout": self.stdout, "error": self.error}


CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def program_of(response: str) -> str | None:
    """The first fenced code block of a response (an unclosed fence runs to the end), else None."""
    m = CODE_BLOCK.search(response)
    return m.group(1).strip() + "\n" if m and m.group(1).strip() else None


def run_program(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `source` under the sandbox; its stdout (trimmed) and how it ended."""
    limits = limits or SandboxLimits()
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="headlab-sandbox-") as cwd:
        with open(os.path.join(cwd, "prog.py"), "w", encoding="utf-8") as f:
            f.write(source)
        try:
            argv = [sys.executable, "-I", "-c", PRELUDE, str(limits.cpu_seconds), str(limits.memory_bytes),
                    str(limits.file_bytes)]
            done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, errors="replace",
                                  timeout=limits.wall_seconds, stdin=subprocess.DEVNULL, start_new_session=True)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return SandboxResult("timeout", out[:limits.max_output_chars], f"wall time over {limits.wall_seconds}s")
    stdout = done.stdout[:limits.max_output_chars]
    if done.returncode == 0:
        return SandboxResult("ok", stdout)
    last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1][:300]
    if done.returncode in (-9, -24) or "SIGXCPU" in last:  # RLIMIT_CPU: SIGXCPU, then SIGKILL at the hard limit
        return SandboxResult("timeout", stdout, f"CPU time over {limits.cpu_seconds}s")
    if "sandbox:" in last:
        return SandboxResult("blocked", stdout, last)
    return SandboxResult("error", stdout, last)


def solve(response: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run the program a plan-mode response wrote."""
    source = program_of(response)
    if source is None:
        return SandboxResult("no_program", "", "no fenced code block in the response")
    return run_program(source, limits)
