"""The tiny Llama that headlab ships and uses when no `--model` is given, and its recipe (pretrain, evaluate).

The toy world it learns from is data (`headlab.data.world`); this package imports it, never the reverse.
"""

from __future__ import annotations

from pathlib import Path


def default_model_dir() -> Path:
    """Folder of the shipped checkpoint (loads with `AutoModelForCausalLM.from_pretrained`)."""
    # Path(__file__) rather than importlib.resources: the folder must be a real directory for
    # from_pretrained, and setuptools installs package data as plain files next to the modules.
    return Path(__file__).resolve().parent.parent / "assets" / "tiny-llama"


def model_or_default(path: str | None) -> str:
    """`path` when given, else the shipped model's folder; a missing shipped model is a one-line error."""
    if path:
        return path
    from headlab.errors import HeadlabError

    folder = default_model_dir()
    if not (folder / "config.json").is_file():
        raise HeadlabError(f"{folder}: the shipped tiny model is missing from this installation; pass --model")
    return str(folder)
