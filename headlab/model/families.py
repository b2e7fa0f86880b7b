"""The model families headlab supports: one row per Hugging Face `model_type`, read by everything that needs to
know a family's attention modules (the seam, loading, fine-tuning, LoFiT) so none of them guesses.

    family = family_of(model)            # or a config; one-line HeadlabError for a family without a row
    family.out_proj, family.lora_targets  # "o_proj", ("k_proj", "o_proj", "q_proj", "v_proj")

A row lists only what headlab has checked: every family here has a tiny config in tests/tiny.py that passes the
parity tests (tests/test_architectures.py; docs/architectures.md). Adding a family is adding a row and a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headlab.core.errors import HeadlabError


@dataclass(frozen=True)
class Family:
    model_type: str  # the HF config's model_type: the table's key
    name: str  # as docs/architectures.md names it
    # q, k, v projections, or one name when the family packs them into one layer (q, then k, then v outputs).
    qkv: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    # The attention output projection: its input is z, which the seam splits into heads.
    out_proj: str = "o_proj"
    # GPT-2's Conv1D stores W as [in, out], so a packed q|k|v splits along columns rather than rows.
    conv1d: bool = False
    # Whether out_proj has a bias: True/False when the model file hard-codes it, else the config flag that adds
    # one (LoFiT's merge needs a bias to fold offsets into).
    out_bias: bool | str = "attention_bias"
    # Mistral and Qwen2 have no bias flag, but without a sliding window they compute what a Llama computes.
    merge_as_llama: bool = False
    # Implementations that compute the family exactly, the default first. sdpa can neither soft-cap logits
    # (Gemma 2; transformers 5.0 still offered it and silently skipped the cap) nor add attention sinks (gpt-oss).
    # Flash attention is left out: the test tier has no GPU to check it on.
    attention: tuple[str, ...] = ("sdpa", "eager")
    # Config fields that describe a sliding window (`sliding_window` is the size); empty: the family has none.
    window: tuple[str, ...] = ()

    @property
    def packed(self) -> bool:
        return len(self.qkv) == 1

    @property
    def projections(self) -> tuple[str, ...]:
        """Every linear layer of an attention module: q, k, v (or packed qkv) and the output projection."""
        return (*self.qkv, self.out_proj)

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """Fine-tuning's "attention projections only" LoRA targets (sorted, as PEFT reports them)."""
        return tuple(sorted(self.projections))

    @property
    def lora_qv(self) -> tuple[str, ...]:
        """The LoRA paper's query and value targets (LoFiT's LoRA baseline); a packed layer carries both."""
        return self.qkv if self.packed else (self.qkv[0], self.qkv[2])

    def is_attention(self, module: Any) -> bool:
        """Whether `module` is one of this family's attention modules: it holds all of its projections.
        By structure, not class name, so an MLP that shares a leaf name (GPT-2's c_proj) never counts."""
        children = dict(module.named_children())
        return all(name in children for name in self.projections)

    def windowed(self, config: Any) -> bool:
        """Whether `config` turns this family's sliding window on (Qwen2 also needs use_sliding_window)."""
        return (bool(self.window) and bool(getattr(config, "sliding_window", None))
                and bool(getattr(config, "use_sliding_window", True)))


_QWEN_WINDOW = ("sliding_window", "use_sliding_window", "max_window_layers", "layer_types")
_ALTERNATING = ("sliding_window", "layer_types")

# In docs/architectures.md's order. Gemma (1) is not in that page's table: LoFiT's merge tests run on it.
FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llama", "Llama"),
    Family("mistral", "Mistral", out_bias=False, merge_as_llama=True, window=("sliding_window",)),
    Family("qwen2", "Qwen2", out_bias=False, merge_as_llama=True, window=_QWEN_WINDOW),
    Family("qwen3", "Qwen3", window=_QWEN_WINDOW),
    Family("gemma", "Gemma"),
    Family("gemma2", "Gemma 2", attention=("eager",), window=_ALTERNATING),
    Family("gemma3_text", "Gemma 3 (text)", window=_ALTERNATING),
    Family("phi3", "Phi-3", qkv=("qkv_proj",), out_bias=False, window=("sliding_window",)),
    Family("olmo2", "OLMo 2"),
    Family("gpt2", "GPT-2", qkv=("c_attn",), out_proj="c_proj", conv1d=True, out_bias=True),
    Family("starcoder2", "Starcoder2", out_bias="use_bias", window=("sliding_window",)),
    Family("cohere2", "Cohere 2", window=_ALTERNATING),
    Family("gpt_oss", "gpt-oss", attention=("eager",), window=_ALTERNATING),
)}


def _config_and_label(config_or_model: Any) -> tuple[Any, str]:
    """The config, and `ClassName` for errors: the model's class when given a model (PEFT: its base's)."""
    obj = config_or_model
    if hasattr(obj, "get_base_model"):
        obj = obj.get_base_model()
    config = getattr(obj, "config", obj)
    return config, type(obj).__name__


def family_of(config_or_model: Any) -> Family:
    """The row of a model or config (by its own model_type, so a multimodal class is not its text model's)."""
    config, label = _config_and_label(config_or_model)
    kind = getattr(config, "model_type", None)
    family = FAMILIES.get(kind)
    if family is None:
        raise HeadlabError(f"unsupported architecture {kind or '?'} ({label}): headlab/model/families.py has no "
                           f"row for it (known: {', '.join(FAMILIES)})")
    return family
