"""Input checks every command shares, applied once at the root instead of in each command.

- `number_check(type, name)`: the check the CLI floor (headlab/core/cli_floor.py) puts on every number option by its
  name (`--batch-size` >= 1 wherever it appears, every float finite); with `check_device` and `check_out`, a new
  command gets them by naming its fields like the others.
- `read_text`: the one text reader; a file that is not UTF-8 is named with the offending byte.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError

# ---- text -----------------------------------------------------------------------------------------------


def decode_utf8(data: bytes, path: str | Path, line: int | None = None, offset: int = 0) -> str:
    """bytes -> str, or a located error naming the first byte (counted from 0 in the file) that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"{path}:{line}" if line is not None else str(path)
        raise HeadlabError(f"{where}: not UTF-8 text (byte {offset + e.start})") from None


def read_text(path: str | Path) -> str:
    """The whole file as text; missing file or non-UTF-8 bytes raise a one-line HeadlabError."""
    path = Path(path)
    if not path.is_file():
        raise HeadlabError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise HeadlabError(f"{path}: cannot read ({e.strerror})") from None
    return decode_utf8(data, path)


# ---- output locations -----------------------------------------------------------------------------------


def check_out(path: str | Path, kind: str = "folder", option: str = "--out") -> Path:
    """Refuse an output location that cannot be written before any work is done.

    `kind` is "folder" (the command writes several files into it) or "file"; `option` names it to the user."""
    path = Path(path).expanduser()
    if kind == "folder" and path.is_symlink():  # dangling, to a folder or to a file: writes would leave the folder
        raise HeadlabError(f"{path}: is a symbolic link ({option} names the output folder; give the real folder "
                           "or a new path)")
    if path.exists():
        if kind == "folder" and not path.is_dir():
            raise HeadlabError(f"{path}: exists and is not a folder ({option} names the output folder)")
        if kind == "file" and path.is_dir():
            raise HeadlabError(f"{path}: is a folder ({option} names the output file)")
    folder = path if kind == "folder" and path.is_dir() else path.parent
    while not folder.exists():  # the first existing ancestor is where the folders will be created
        folder = folder.parent
    if not folder.is_dir():
        raise HeadlabError(f"{path}: cannot be created ({folder} is a file)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HeadlabError(f"{path}: cannot write there ({folder} is not writable)")
    return path


# ---- numbers and devices --------------------------------------------------------------------------------


def check_device(name: str) -> str:
    """A torch device string that exists on this machine (cuda without a GPU is refused here, not mid-run)."""
    if name == "cpu":
        return name
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise HeadlabError(f"unknown device {name!r} (cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HeadlabError(f"device {name!r}: no CUDA GPU is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise HeadlabError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise HeadlabError(f"device {name!r}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise HeadlabError(f"unsupported device {name!r} (cpu, cuda, cuda:N, mps)")
    return name


def finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise HeadlabError(f"{field} must be a finite number (got {value})")
    return value


# option name -> (lowest allowed, highest allowed, whether the highest is excluded); None: no bound.
BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    **{name: (1, None, False) for name in (
        "batch_size", "max_new_tokens", "limit", "lora_rank", "rank", "n", "needles", "seeds", "k", "top_k",
        "depth_bins", "steps", "save_steps", "save_total_limit", "logging_steps", "grad_accum", "length",
        "context_length", "lengths", "show", "max_support", "pool_size", "probes", "resamples", "num_cpus",
        "cpus_per_stage", "sequences")},
    **{name: (0, None, False) for name in (
        "seed", "warmup_steps", "warmup", "doc_sentences", "max_docs", "curve", "weight_decay", "l1",
        "max_filler", "threads", "answer_weight")},
    **{name: (0, 1, False) for name in ("depth", "depths", "fraction", "task_share", "induction_ratio",
                                        "echo_ratio")},
    "lora_dropout": (0, 1, True),
    "repeats": (2, None, False),  # pattern scores: r appears at least twice
}
POSITIVE = {"lr", "epochs", "lora_alpha", "rope_theta", "beta", "tolerance"}  # > 0


def number_check(inner: Callable[[str], Any], dest: str) -> Callable[[str], Any]:
    """Text -> int/float, refused when not ASCII digits, not finite, or outside the bounds of option `dest`."""
    # Messages leave out the option: the parser puts "argument --batch-size: " in front.
    def convert(text: str) -> Any:
        if not text.isascii():  # int() and float() accept any script's digits; a typo should not pass
            raise HeadlabError(f"must be written in ASCII digits (got {text!r})")
        try:
            value = inner(text)
        except ValueError:
            raise HeadlabError(f"must be {'an integer' if inner is int else 'a number'} (got {text!r})") from None
        if isinstance(value, float):
            if not math.isfinite(value):
                raise HeadlabError(f"must be a finite number (got {text})")
        if dest in POSITIVE and value <= 0:
            raise HeadlabError(f"must be > 0 (got {text})")
        low, high, open_high = BOUNDS.get(dest, (None, None, False))
        if low is not None and value < low:
            raise HeadlabError(f"must be >= {low} (got {text})")
        if high is not None and (value > high or open_high and value == high):
            raise HeadlabError(f"must be in [{low}, {high}{')' if open_high else ']'} (got {text})")
        return value

    return convert
