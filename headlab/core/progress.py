"""Progress for long work: a tqdm bar on a terminal; in a redirected log, plain lines instead of escape sequences.

A log gets a line when work finishes at most every LOG_INTERVAL seconds (a run on a real model takes hours:
a line per probe would bury the log), and always a last line with the total and the time taken.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LOG_INTERVAL = 10.0


class LogProgress:
    """The part of tqdm's interface headlab uses (update, set_postfix(_str), close, n, iteration, `with`), as log
    lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, disable: bool = False):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.closed = initial, "", False
        self.start = self.last = time.monotonic()

    def _line(self, final: bool = False) -> None:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        tail = f", done in {time.monotonic() - self.start:.1f} s" if final else ""
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {count} {self.unit}{extra}{tail}", file=sys.stderr, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= LOG_INTERVAL:
            self.last = now
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self.closed and not self.disable and self.n:
            self._line(final=True)
        self.closed = True

    def __enter__(self) -> LogProgress:  # `with progress_bar(...) as bar:` as with tqdm
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()


def progress_bar(iterable: Iterable | None = None, **kwargs: Any):
    """tqdm where stderr is a terminal, else LogProgress; takes tqdm's iterable, total, desc, unit, initial,
    disable (other tqdm options apply to the bar only)."""
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    keep = {k: kwargs[k] for k in ("total", "desc", "unit", "initial", "disable") if k in kwargs}
    return LogProgress(iterable, **keep)
