"""Run a model-written Python program in an isolated subprocess ("plan then solve").

The child is a fresh interpreter in isolated mode (`-I`), with no environment, running `jail.py`: by default
("os") the program runs behind the operating system's isolation (namespaces, an empty read-only root, no
capabilities, Landlock, seccomp, rlimits; the list is in jail.py). Where the machine offers no namespaces,
`isolation_problem()` says why, and plan mode is refused unless the user asks for "guard" (`--unsafe-exec`):
rlimits and an in-process audit hook, a guard against accidents that a program written to escape can switch off.
A wall-clock timeout catches programs that sleep.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

JAIL = Path(__file__).with_name("jail.py")
ISOLATIONS = ("os", "guard")


@dataclass
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 1 << 20
    max_output_chars: int = 2000
    isolation: str = "os"  # "os": the operating system's isolation; "guard": the in-process hook only


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
    if limits.isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {limits.isolation!r}")
    with tempfile.TemporaryDirectory(prefix="headlab-sandbox-") as cwd:
        with open(os.path.join(cwd, "prog.py"), "w", encoding="utf-8") as f:
            f.write(source)
        os.mkdir(os.path.join(cwd, "root"))  # the mount point of the program's root ("os")
        try:
            argv = [sys.executable, "-I", str(JAIL), limits.isolation, str(limits.cpu_seconds),
                    str(limits.memory_bytes), str(limits.file_bytes)]
            done = subprocess.run(argv, cwd=cwd, env={}, capture_output=True, text=True, errors="replace",
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


@cache
def isolation_problem() -> str | None:
    """None where programs can run under the operating system's isolation here, else why not (one line)."""
    if sys.platform != "linux":
        return f"namespaces are Linux's, this is {sys.platform}"
    got = run_program("print(6 * 7)\n", SandboxLimits(cpu_seconds=10, wall_seconds=60.0))
    if got.status == "ok" and got.stdout.strip() == "42":
        return None
    return got.error or f"a test program ended {got.status}"


def solve(response: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run the program a plan-mode response wrote."""
    source = program_of(response)
    if source is None:
        return SandboxResult("no_program", "", "no fenced code block in the response")
    return run_program(source, limits)
