"""Atomic writes and line-checked JSONL reads: a result is either whole on disk or absent."""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError, where

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | Path, expect: type | None = None) -> Any:
    """The JSON document in `path`; with `expect` (dict or list), anything else is a one-line error."""
    from headlab.core.inputs import read_text

    path = Path(path)
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise HeadlabError(f"{where(path, e.lineno)}: invalid JSON ({e.msg})") from None
    except RecursionError:  # [[[[... nested deeper than the parser's stack
        raise HeadlabError(f"{path}: invalid JSON (nested too deeply)") from None
    if expect is not None and not isinstance(value, expect):
        kind = {dict: "a JSON object", list: "a JSON list of records"}.get(expect, expect.__name__)
        raise HeadlabError(f"{path}: expected {kind}")
    return value


def read_document(path: str | Path, what: str = "") -> Any:
    """A JSON (`.json`) or YAML (anything else) document, parsed; a syntax error or nesting deeper than the
    parser's stack is one line naming the file (and line where the parser knows it). `what` names the
    document in the message ("spec")."""
    import yaml

    from headlab.core.inputs import read_text

    path = Path(path)
    text = read_text(path)
    label = f"cannot parse {what}".rstrip()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise HeadlabError(f"{where(path, e.lineno)}: {label} ({e.msg})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise HeadlabError(f"{where(path, line)}: {label} ({getattr(e, 'problem', None) or 'invalid YAML'})") \
            from None
    except RecursionError:  # [[[[... nested deeper than the parser's stack
        raise HeadlabError(f"{path}: {label} (nested too deeply)") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line raises naming file and line.

    A `.gz` file is read through gzip (the lost-in-the-middle release ships .jsonl.gz)."""
    path = Path(path)
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found")
    from headlab.core.inputs import decode_utf8

    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    with opener(path, "rb") as f:
        for lineno, data in enumerate(_lines(f, path), start=1):
            raw = decode_utf8(data, path, lineno, offset)  # the byte counted from the file's start
            offset += len(data)
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise HeadlabError(f"{where(path, lineno)}: invalid JSON ({e.msg})") from None
            except RecursionError:
                raise HeadlabError(f"{where(path, lineno)}: invalid JSON (nested too deeply)") from None
            if not isinstance(obj, dict):
                raise HeadlabError(f"{where(path, lineno)}: expected a JSON object")
            yield lineno, obj


def _lines(f, path: Path) -> Iterator[bytes]:
    try:
        yield from f
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz
        raise HeadlabError(f"{path}: cannot read ({e})") from None


def require(obj: dict, field: str, kind: type | tuple[type, ...], path: str | Path, lineno: int | None,
            check: Callable[[Any], bool] | None = None) -> Any:
    """Return obj[field], raising a located error if it is missing or of the wrong type."""
    if field not in obj:
        raise HeadlabError(f"{where(path, lineno, field)} is missing")
    value = obj[field]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (
        kind if isinstance(kind, tuple) else (kind,)
    ):
        raise HeadlabError(f"{where(path, lineno, field)} has the wrong type ({type(value).__name__})")
    if check is not None and not check(value):
        raise HeadlabError(f"{where(path, lineno, field)} has an invalid value")
    return value


LOCK_RECORD = 128  # bytes of the holder line; written in place, so a lock file is never truncated


@contextlib.contextmanager
def folder_lock(lock: Path, folder: Path, remove: bool = False) -> Iterator[None]:
    """Hold the OS lock on `lock` for the duration; a second holder gets one line naming the first.

    flock is released by the kernel when the holding process dies, however it dies, so a lock left by a
    killed run is simply taken over; the pid and host written inside are only for the message. The file is
    opened without following a symbolic link and never truncated, so a planted link cannot make headlab
    write anywhere else. With `remove` the lock file is deleted before it is released; a process that
    opened it meanwhile then sees it no longer at its path and gives up, as if it were held.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked rather than not at all
        yield
        return
    fd = open_lock_file(lock)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(lock, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                raise BlockingIOError  # removed (or replaced) by the holder that just finished
        except (BlockingIOError, FileNotFoundError):
            holder = os.pread(fd, LOCK_RECORD, 0).decode("utf-8", "replace").strip() or "unknown process"
            raise HeadlabError(f"{folder}: run folder in use by {holder}; wait for it to finish or choose "
                               "another --out") from None
        line = f"pid {os.getpid()} on {socket.gethostname()}"[:LOCK_RECORD - 1]
        os.pwrite(fd, line.ljust(LOCK_RECORD - 1).encode() + b"\n", 0)
        try:
            yield
        finally:
            if remove:
                Path(lock).unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_lock_file(path: Path) -> int:
    """A descriptor on the lock file, created if absent; anything but a plain file of its own (a symbolic
    link, a hard link to a file elsewhere, a folder, a device) is one line, nothing touched."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        why = "is a symbolic link" if path.is_symlink() else f"cannot be opened ({e.strerror})"
        raise HeadlabError(f"{path}: lock file {why}; remove it and run again") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise HeadlabError(f"{path}: lock file is not a plain file of this folder (a link or special file); "
                           "remove it and run again")
    return fd


@contextlib.contextmanager
def staged_folder(final: str | Path) -> Iterator[Path]:
    """Yield a sibling scratch folder to write a command's outputs into; on success they appear in `final`
    together, on failure (or a kill) `final` is as it was.

    A new `final` appears by one rename. An existing one gets each file replaced by a rename (milliseconds),
    so a kill while figures are drawn can no longer leave new scores beside an old summary. One command at a
    time writes a folder (a lock beside it, as the study's, removed when done); holding it, any other scratch
    folder of `final` belongs to a process that died (killed mid-run), and is removed."""
    from headlab.core.distributed import is_main
    from headlab.core.inputs import check_out

    final = check_out(final)  # a link (dangling, to a folder or a file) or a file is refused here
    final.parent.mkdir(parents=True, exist_ok=True)
    # Under a launcher only the main process writes and owns the folder; the others write nothing.
    owns = is_main()
    with folder_lock(final.with_name(f".{final.name}.lock"), final, remove=True) if owns \
            else contextlib.nullcontext():
        for stale in final.parent.glob(f".{glob.escape(final.name)}.partial-*") if owns else ():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        stage = final.with_name(f".{final.name}.partial-{os.getpid()}")
        try:
            yield stage
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if not stage.exists():  # the command wrote nothing
            return
        if not final.exists():
            stage.rename(final)
            return
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                target = final / path.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        shutil.rmtree(stage, ignore_errors=True)
