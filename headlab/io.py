"""Atomic writes and line-checked JSONL reads: a result is either whole on disk or absent."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from headlab.errors import HeadlabError, where

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
    from headlab.inputs import read_text

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


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line raises naming file and line.

    A `.gz` file is read through gzip (the lost-in-the-middle release ships .jsonl.gz)."""
    path = Path(path)
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found")
    from headlab.inputs import decode_utf8

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


@contextlib.contextmanager
def staged_folder(final: str | Path) -> Iterator[Path]:
    """Yield a sibling scratch folder to write a command's outputs into; on success they appear in `final`
    together, on failure (or a kill) `final` is as it was.

    A new `final` appears by one rename. An existing one gets each file replaced by a rename (milliseconds),
    so a kill while figures are drawn can no longer leave new scores beside an old summary."""
    final = Path(final)
    stage = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
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
