"""The one loader: every model, tokenizer and config headlab reads comes through here.

A model source is a local folder, a hub id, a GGUF file (`path/x.gguf`, or a folder plus `gguf_file`) or a
PEFT adapter folder (adapter_config.json names its base; extension.json, when present, holds the context
extension the adapter was trained under). `inspect(source)` reads what a command needs to check its inputs
(tokenizer, config, head geometry, positions) without any weights; `load_weights(info, ...)` then loads the
model once, in eval mode. An adapter is merged into its base on load, so every command sees one plain model,
the same one a folder saved with `headlab finetune --merge` gives.

    info = inspect("runs/ft/model")          # base config with the adapter's extension applied
    check_lengths(probes, info.max_positions)
    model = load_weights(info, device="cuda", dtype="bfloat16")
    model, tokenizer = load_model("runs/ft/model")   # both at once

Beside it: `extension.py` (context extension as config overrides, which fine-tuning saves next to an adapter as
EXTENSION_FILE and the loader re-applies) and `gguf_input.py` (GGUF files).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headlab.core.errors import HeadlabError
from headlab.core.quiet import library_bars_off, peft_wrapping
from headlab.model.extension import (  # noqa: F401  (re-exported: the loader is where callers find them)
    apply_overrides,
    current_length,
    extension_overrides,
    ntk_theta,
)
from headlab.model.geometry import HeadGeometry, head_geometry
from headlab.model.gguf_input import _gguf_dequantized, _gguf_special_tokens, _plain_model, split_gguf

ADAPTER_CONFIG = "adapter_config.json"
EXTENSION_FILE = "extension.json"  # the extension overrides, saved next to a fine-tuned adapter
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


# --------------------------------------------------------------------------------------------------------
# What a source holds, without its weights.


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """A model source read without its weights: enough to check a command's inputs before loading them.

    For an adapter, `config` is its base's config with `overrides` (the adapter's extension) applied, i.e. the
    config of the model `load_weights` builds; `base` is the base source's own ModelInfo."""

    source: str                 # as the user named it
    name: str                   # the folder or hub id its files come from (a GGUF file's folder)
    config: Any                 # transformers config of the model load_weights builds
    trust_remote_code: bool = False
    gguf_file: str | None = None
    adapter: Path | None = None  # the PEFT adapter folder, when the source is one
    base: ModelInfo | None = None
    overrides: dict = field(default_factory=dict)  # config overrides applied on top of the source's own config

    @property
    def geometry(self) -> HeadGeometry:
        return head_geometry(self.config)

    @property
    def max_positions(self) -> int | None:
        return max_positions(self.config)

    @cached_property
    def tokenizer(self):
        """Loaded on first use: commands that need only the geometry never read it."""
        if self.adapter is not None and not any((self.adapter / f).is_file() for f in _TOKENIZER_FILES):
            return self.base.tokenizer  # an adapter saved without a tokenizer uses its base's
        return _read_tokenizer(self.name, self.trust_remote_code, self.gguf_file)

    def extended(self, overrides: dict) -> ModelInfo:
        """The same source under more config overrides (a context extension to train with)."""
        if not overrides:
            return self
        config = apply_overrides(copy.deepcopy(self.config), overrides)
        return dataclasses.replace(self, config=config, overrides={**self.overrides, **overrides})


def inspect(name_or_path: str | Path, trust_remote_code: bool = False, gguf_file: str | None = None,
            weights: bool = False) -> ModelInfo:
    """Read a source's config (an adapter's: its base's, extended) without loading weights; with `weights`,
    also check that the weight files are whole (safetensors headers read, pickle refused)."""
    return _inspect(str(name_or_path), trust_remote_code, gguf_file, weights, ())


def _inspect(source: str, trust_remote_code: bool, gguf_file: str | None, weights: bool,
             chain: tuple[Path, ...]) -> ModelInfo:
    folder = Path(source).expanduser()
    if gguf_file is None and (folder / ADAPTER_CONFIG).is_file():
        return _inspect_adapter(source, folder, trust_remote_code, weights, chain)
    from transformers import AutoConfig

    name, gguf = split_gguf(source, gguf_file)
    config = _loading(name, lambda: AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **gguf),
                      weights=weights, check=not gguf)
    return ModelInfo(source, name, config, trust_remote_code, gguf.get("gguf_file"))


def _inspect_adapter(source: str, folder: Path, trust_remote_code: bool, weights: bool,
                     chain: tuple[Path, ...]) -> ModelInfo:
    from headlab.core.io import read_json
    from headlab.model.model_check import check_model_folder

    check_model_folder(folder, weights)  # adapter_model.safetensors whole; adapter_model.bin refused
    adapter = folder / ADAPTER_CONFIG
    base_name = read_json(adapter).get("base_model_name_or_path")
    if not base_name or not isinstance(base_name, str):
        raise HeadlabError(f"{adapter}: field 'base_model_name_or_path' is missing")
    chain = (*chain, folder.resolve())
    if Path(base_name).expanduser().resolve() in chain:
        raise HeadlabError(f"{adapter}: field 'base_model_name_or_path' ({base_name}) leads back to this adapter")
    base = _inspect(base_name, trust_remote_code, None, weights, chain)
    ext = folder / EXTENSION_FILE
    overrides = read_json(ext) if ext.is_file() else {}
    if not isinstance(overrides, dict):
        raise HeadlabError(f"{ext}: expected a JSON object (config overrides)")
    return ModelInfo(source, str(folder), base.config, trust_remote_code, adapter=folder, base=base).extended(
        overrides)


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, gguf_file: str | None = None):
    """The tokenizer of a local folder, hub id, GGUF file, adapter folder or tokenizer.json file, with a pad
    token (EOS when it has none)."""
    if gguf_file is None and (Path(str(name_or_path)).expanduser() / ADAPTER_CONFIG).is_file():
        return inspect(name_or_path, trust_remote_code).tokenizer
    return _read_tokenizer(name_or_path, trust_remote_code, gguf_file)


def _read_tokenizer(name_or_path: str | Path, trust_remote_code: bool, gguf_file: str | None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(str(name_or_path)).expanduser()
    if path.suffix == ".json" and path.is_file():  # a bare tokenizer, as `headlab data` takes
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
    else:
        name, gguf = split_gguf(name_or_path, gguf_file)
        tokenizer_only = (path.is_dir() and not (path / "config.json").is_file()  # a tokenizer saved on its own
                          and any((path / f).is_file() for f in _TOKENIZER_FILES))
        tokenizer = _loading(name, lambda: AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code,
                                                                         **gguf), check=not (gguf or tokenizer_only))
        if gguf:
            _gguf_special_tokens(tokenizer, name, gguf["gguf_file"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_config(name_or_path: str | Path, trust_remote_code: bool = False, gguf_file: str | None = None):
    """The transformers config alone (an adapter's: its base's with the extension applied)."""
    return inspect(name_or_path, trust_remote_code, gguf_file).config


def max_positions(config) -> int | None:
    """The model's maximum position count (max_position_embeddings; n_positions for GPT-2)."""
    return getattr(config.get_text_config(), "max_position_embeddings", None)


def default_attention(config) -> str:
    """The first implementation the family's row lists (sdpa where it computes the model, else eager); a family
    without a row gets what transformers would pick, since loading alone needs no head hooks."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from headlab.model.families import FAMILIES

    family = FAMILIES.get(getattr(config, "model_type", None))
    if family is not None:
        return family.attention[0]
    try:
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except (KeyError, ValueError):  # remote code or an unknown config: let transformers decide
        return "sdpa"
    return "sdpa" if getattr(cls, "_supports_sdpa", True) else "eager"


# --------------------------------------------------------------------------------------------------------
# Weights.


def load_model(name_or_path: str | Path, device: str = "cpu", dtype: str | torch.dtype = "float32",
               attn_implementation: str = "sdpa", trust_remote_code: bool = False, gguf_file: str | None = None,
               device_map: str | dict | None = None, max_memory: dict | None = None):
    """Load a causal LM and its tokenizer from a local folder, hub id, GGUF file or adapter folder, in eval mode.

    Returns (model, tokenizer). A path that looks local and does not exist is an error, never a hub query.
    A GGUF file (`path/to/x.gguf`, or a folder plus `gguf_file`) is dequantized into an ordinary model; an
    adapter is merged into its base, rebuilt under the adapter's context extension.
    `device_map` ("auto", or module name -> device) spreads a model too large for one device over several
    (and CPU, and disk) through accelerate's big-model loading; `device` is then unused (headlab/model/placement.py).
    """
    from headlab.model.placement import big_model_kwargs

    big_model_kwargs(device_map, max_memory)  # bad placement options fail before anything is read
    info = inspect(name_or_path, trust_remote_code, gguf_file)
    model = load_weights(info, device, dtype, attn_implementation, device_map, max_memory)
    return model, info.tokenizer


def load_weights(info: ModelInfo, device: str = "cpu", dtype: str | torch.dtype = "float32",
                 attn_implementation: str = "sdpa", device_map: str | dict | None = None,
                 max_memory: dict | None = None) -> nn.Module:
    """The model `info` describes, in eval mode (`model.train()` to train it): its config as `info.config` says,
    adapters merged. Weight files are checked (whole, no pickle) before anything loads."""
    from headlab.core.distributed import process_device
    from headlab.model.placement import big_model_kwargs

    placement = big_model_kwargs(device_map, max_memory)
    if attn_implementation == "sdpa":
        attn_implementation = default_attention(info.config)
    adapters, root = [], info
    while root.adapter is not None:
        adapters.append(root.adapter)
        root = root.base
    if adapters and placement:
        raise HeadlabError(f"{info.source}: --device-map needs a model folder; merge the adapter first "
                           "(headlab finetune --merge)")
    from headlab.model.model_check import check_model_folder

    for folder in adapters:
        check_model_folder(folder, weights=True)  # adapter_model.safetensors whole; adapter_model.bin refused
    # The root's weights under the config the source describes: an adapter's extension, or a training one.
    config = {"config": info.config} if info.overrides or info is not root else {}
    gguf = {"gguf_file": root.gguf_file} if root.gguf_file else {}
    weights = {**gguf, **_gguf_dequantized(gguf)} if gguf else _weights_kwargs()  # a GGUF file is not pickle
    model = _loading(root.name, lambda: _from_pretrained(
        root.name, dtype=_resolve_dtype(dtype), attn_implementation=attn_implementation,
        trust_remote_code=root.trust_remote_code, **config, **placement, **weights), weights=True, check=not gguf)
    if gguf:
        model = _plain_model(model, attn_implementation)
    for folder in reversed(adapters):  # innermost (trained on the root) first
        model = _merged(model, folder)
    if not placement:
        model.to(process_device(device))  # under `accelerate launch`, cuda means this process's GPU
    elif set((getattr(model, "hf_device_map", None) or {"": "disk"}).values()) == {"disk"}:
        # Nothing left to compute on; transformers 5.0 even leaves such a model undispatched, on the meta device.
        raise HeadlabError(f"{root.name}: the device map puts the whole model on disk; give the CPU or a GPU more "
                           f"memory in --max-memory")
    model.eval()
    return model


def attach_adapter(model: nn.Module, folder: str | Path) -> nn.Module:
    """`model` wrapped, unmerged, in the PEFT adapter saved in `folder` (eval mode): LoRA as a baseline whose
    adapter weights stay separate (`headlab lofit eval --lora`)."""
    from peft import PeftModel

    from headlab.model.model_check import check_model_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise HeadlabError(f"{folder}: LoRA folder not found")
    check_model_folder(folder, weights=True)  # adapter_model.bin (pickle) refused
    with peft_wrapping():
        return PeftModel.from_pretrained(model, str(folder)).eval()


def _merged(model: nn.Module, folder: Path) -> nn.Module:
    from peft import PeftModel

    with peft_wrapping():
        return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def _from_pretrained(name: str, **kwargs) -> nn.Module:
    from transformers import AutoModelForCausalLM

    with library_bars_off():  # no per-load "Loading weights" bar unless --verbose
        return AutoModelForCausalLM.from_pretrained(name, **kwargs)


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise HeadlabError(f"unknown dtype '{dtype}' (choose from {', '.join(table)})")
    return table[dtype]


def _loading(name: str, load: Callable, weights: bool = False, check: bool = True):
    """`load()`, after checking the source (local vs hub, config and safetensors whole, pickle refused), with
    transformers' errors as one line. A GGUF file carries its own config and weights: split_gguf has checked it."""
    from headlab.model.model_check import check_model_source

    if check:
        check_model_source(name, weights)
    try:
        return load()
    except _load_errors() as e:
        lines = [line.strip() for line in str(e).strip().splitlines()] or [type(e).__name__]
        # huggingface_hub's config validation says which field, then why, on a second line
        why = " ".join(lines[:2]) if type(e).__name__.startswith("StrictDataclass") else lines[0]
        raise HeadlabError(f"{name}: cannot load model ({why})") from None


def _load_errors() -> tuple[type[Exception], ...]:
    """What transformers raises for a folder it cannot use; TypeError and huggingface_hub's validation error are
    a config.json field of the wrong type (transformers 5 checks config fields strictly)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older huggingface_hub without strict configs
        return (OSError, ValueError, TypeError)
    return (OSError, ValueError, TypeError, StrictDataclassError)


def _weights_kwargs() -> dict:
    from headlab.model.model_check import pickle_allowed

    return {} if pickle_allowed() else {"use_safetensors": True}


# --------------------------------------------------------------------------------------------------------
# The model used when none is given: the tiny Llama headlab ships (headlab/assets; its recipe is headlab.toy).


def default_model_dir() -> Path:
    """Folder of the shipped checkpoint."""
    # Path(__file__) rather than importlib.resources: the folder must be a real directory for
    # from_pretrained, and setuptools installs package data as plain files next to the modules.
    return Path(__file__).resolve().parents[1] / "assets" / "tiny-llama"


def model_or_default(path: str | None) -> str:
    """`path` when given, else the shipped model's folder; a missing shipped model is a one-line error."""
    if path:
        return path
    folder = default_model_dir()
    if not (folder / "config.json").is_file():
        raise HeadlabError(f"{folder}: the shipped tiny model is missing from this installation; pass --model")
    return str(folder)
