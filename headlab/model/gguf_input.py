"""GGUF files, read by transformers' own GGUF support (the `gguf` package; pip install 'headlab[gguf]'): the
file's name, its dequantized weights as a plain model, and its special tokens as the file states them."""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from headlab.core.errors import HeadlabError


def split_gguf(name_or_path: str | Path, gguf_file: str | None = None) -> tuple[str, dict]:
    """(folder or hub id, {"gguf_file": name} or {}): a path ending in .gguf names its folder and file."""
    name = str(name_or_path)
    if gguf_file is None and name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise HeadlabError(f"{name}: GGUF file not found")
        name, gguf_file = str(path.parent), path.name
    if gguf_file is None:
        return name, {}
    local = Path(gguf_file) if Path(gguf_file).is_absolute() else Path(name).expanduser() / gguf_file
    if Path(name).expanduser().is_dir() and not local.is_file():
        raise HeadlabError(f"{local}: GGUF file not found")
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it; its own error names no install command)
    except ImportError:
        raise HeadlabError(f"{local}: reading GGUF needs the `gguf` package (pip install 'headlab[gguf]')") from None
    return name, {"gguf_file": str(gguf_file)}


def _gguf_special_tokens(tokenizer, folder: str, gguf_file: str) -> None:
    """BOS and EOS as the file names them, and BOS prepended exactly when it says so (`add_bos_token`; llama.cpp's
    default for a byte-level BPE vocabulary is no). transformers before about 5.13 swaps the two and reads such a
    vocabulary as a Llama tokenizer that always prepends BOS, which would shift every position."""
    from gguf import GGUFReader

    path = Path(gguf_file) if Path(gguf_file).is_absolute() else Path(folder).expanduser() / gguf_file
    if not path.is_file():  # a hub file: transformers' own reading stands
        return
    fields = GGUFReader(str(path)).fields
    vocab = fields["tokenizer.ggml.tokens"].contents() if "tokenizer.ggml.tokens" in fields else []
    for role in ("bos", "eos"):
        key = f"tokenizer.ggml.{role}_token_id"
        if key in fields and int(fields[key].contents()) < len(vocab):
            setattr(tokenizer, f"{role}_token", vocab[int(fields[key].contents())])
    if "tokenizer.ggml.add_bos_token" in fields:
        add_bos = bool(fields["tokenizer.ggml.add_bos_token"].contents())
    else:
        add_bos = "tokenizer.ggml.model" in fields and fields["tokenizer.ggml.model"].contents() != "gpt2"
    if getattr(tokenizer, "add_bos_token", add_bos) != add_bos:
        tokenizer.add_bos_token = add_bos


def _gguf_dequantized(gguf: dict) -> dict:
    """Ask for dense weights (transformers >= 5.24 otherwise keeps GGUF blocks, or warns that it cannot)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)} if gguf else {}


def _plain_model(model: nn.Module, attn_implementation: str) -> nn.Module:
    """The same weights in a model without GGUF's quantizer attached: one that save_pretrained accepts (a
    fine-tuned or merged model is saved), rebuilt from its config and state dict."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype,
                                             attn_implementation=attn_implementation)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain
