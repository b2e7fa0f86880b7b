"""Library chatter off by default: a user sees headlab's own progress bars and results, nothing they cannot act on.

transformers draws a "Loading weights" bar per model load and warns when a tokenizer sees text longer than its
nominal length (headlab checks lengths itself, against the model's positions); those stay off unless --verbose.
"""

from __future__ import annotations

import os
import warnings


def quiet_libraries(verbose: bool = False) -> None:
    """Silence library logging and progress bars (errors still show), or leave them all on with `verbose`."""
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
