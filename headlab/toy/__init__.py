"""The tiny Llama that headlab ships and uses when no `--model` is given: its recipe (pretrain, evaluate).

The checkpoint lives in headlab/assets and is found by the loader (`headlab.model.loading.default_model_dir`); the
toy world it learns from is data (`headlab.data.world`). This package imports both, never the reverse.
"""
