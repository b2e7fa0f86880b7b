"""What a model name is, and whether a model folder is whole, before anything is loaded from it.

- A name that looks like a path (starts with `.`, `/` or `~`, contains a backslash, has more or fewer than
  one `/`, or whose first part is an existing folder, like `runs/model`) is a local folder and never sent
  to the hub; if it is missing, that is one line, not a minute of network retries.
- A hub id is used online; with the hub unreachable it is used from the local cache (offline mode, no
  retries), or refused in one line when it is not cached.
- A local folder needs a config.json holding a JSON object and weights in safetensors whose headers read
  (a truncated download is one line). Pickle weights (pytorch_model.bin, adapter_model.bin, *.pt) can run
  code when loaded: they are refused unless the user opts in (`--allow-pickle`, or HEADLAB_ALLOW_PICKLE=1).
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from headlab.core.errors import HeadlabError
from headlab.core.io import read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_allowed = False


def allow_pickle(on: bool = True) -> None:
    global _allowed
    _allowed = on


def pickle_allowed() -> bool:
    return _allowed or os.environ.get("HEADLAB_ALLOW_PICKLE", "") not in ("", "0")


def looks_local(name: str) -> bool:
    if name.startswith((".", "/", "~", os.sep)) or "\\" in name or name.count("/") != 1:
        return True
    return Path(name).expanduser().exists() or Path(name.split("/")[0]).expanduser().is_dir()


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """One TCP connection attempt to the hub (3 s), instead of huggingface_hub's minute of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=3).close()
    except OSError:
        return False
    return True


def check_model_source(name: str, weights: bool = False) -> None:
    """Raise a one-line HeadlabError unless `name` can be loaded; with `weights`, check the weights too."""
    path = Path(name).expanduser()
    if path.is_dir():
        check_model_folder(path, weights)
        return
    if looks_local(name):
        raise HeadlabError(f"{name}: model folder not found")
    if hub_reachable():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        constants.HF_HUB_OFFLINE = True  # use the cached copy without asking the hub, and without retries
        return
    raise HeadlabError(f"{name}: not a local folder, and the hub cannot be reached and holds no cached copy "
                       "(a local path needs ./ in front)")


def check_model_folder(path: Path, weights: bool = True) -> None:
    """config.json (or adapter_config.json) valid; with `weights`, safetensors present and readable."""
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        read_json(adapter, expect=dict)
        if weights:
            _check_weights(path, "adapter_model")
        return
    config = path / "config.json"
    if not config.is_file():
        raise HeadlabError(f"{path}: not a model folder (no config.json)")
    _check_sizes(config, read_json(config, expect=dict))
    if weights:
        _check_weights(path, "model")


# Sizes every causal LM config states; transformers from 5.x on validates their types, older 5.0 does not and
# fails later with a message that names no field.
_SIZES = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim",
          "intermediate_size", "vocab_size", "max_position_embeddings")


def _check_sizes(path: Path, config: dict) -> None:
    for section in (config, config.get("text_config")):
        if not isinstance(section, dict):
            continue
        for key in _SIZES:
            value = section.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise HeadlabError(f"{path}: field '{key}' must be a positive integer (got {value!r})")


def _check_weights(path: Path, stem: str) -> None:
    from safetensors import SafetensorError, safe_open

    index = path / f"{stem}.safetensors.index.json"
    files = sorted(path.glob("*.safetensors"))
    if index.is_file():
        shards = sorted(set(read_json(index, expect=dict).get("weight_map", {}).values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise HeadlabError(f"{index}: shard {missing[0]} is missing")
    if not files:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
        if not pickles:
            raise HeadlabError(f"{path}: no weights ({stem}.safetensors) in the folder")
        if not pickle_allowed():
            raise HeadlabError(f"{path / pickles[0]}: pickle weights are refused (loading them can run code); "
                               "convert them to safetensors, or pass --allow-pickle if you trust the file")
        return
    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise HeadlabError(f"{file}: truncated or corrupt safetensors ({str(e).splitlines()[0]})") from None


def check_lora_rank(rank: int, config, field: str) -> None:
    """A LoRA rank above the model's hidden size adds nothing a full update lacks, and a typo such as 100000000
    would ask for gigabytes per adapted matrix: refused in one line before the adapters are built."""
    hidden = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "hidden_size", None)
    if isinstance(hidden, int) and rank > hidden:
        raise HeadlabError(f"field '{field}' must be at most the model's hidden size {hidden} (got {rank})")
