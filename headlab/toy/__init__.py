"""The tiny Llama that headlab ships and uses when no `--model` is given: its recipe (pretrain, evaluate).

The checkpoint lives in headlab/assets and is found by the loader (`headlab.loading.default_model_dir`, re-exported
here); the toy world it learns from is data (`headlab.data.world`). This package imports both, never the reverse.
"""

from headlab.loading import default_model_dir, model_or_default

__all__ = ["default_model_dir", "model_or_default"]
