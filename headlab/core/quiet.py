"""Library chatter off by default: a user sees headlab's own progress bars and results, nothing they cannot act on.

transformers draws a "Loading weights" bar per model load and warns when a tokenizer sees text longer than its
nominal length (headlab checks lengths itself, against the model's positions); those stay off unless --verbose.
The loader turns the per-load bar off around every load itself (`library_bars_off`), so library use and study
workers that never called `quiet_libraries` stay quiet too.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_verbose = False


def quiet_libraries(verbose: bool = False) -> None:
    """Silence library logging and progress bars (errors still show), or leave them all on with `verbose`."""
    global _verbose
    _verbose = verbose
    if verbose:
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # fork warnings from the tokenizers thread pool
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # Deprecations inside transformers/peft/torch that headlab's own calls do not trigger (e.g. the Trainer's own
    # gradient-checkpointing alias): nothing a headlab user can change.
    for module in ("transformers", "peft", "torch", "accelerate"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


@contextmanager
def library_bars_off() -> Iterator[None]:
    """transformers' progress bars off while the block runs (a model load), unless the user asked for --verbose."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if _verbose or not was_on:
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Quiet while PEFT wraps a model: it reads transformers' deprecated `is_gradient_checkpointing` (a
    FutureWarning from 5.x that nothing a headlab user does can change) and transformers draws its bars."""
    with warnings.catch_warnings(), library_bars_off():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
