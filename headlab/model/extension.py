"""Context extension as config overrides: a longer max_position_embeddings and a RoPE change (transformers 5
keeps RoPE settings in `config.rope_parameters`). Fine-tuning computes them (`extension_overrides`) and saves
them next to an adapter (headlab.model.loading.EXTENSION_FILE); the loader re-applies them (`apply_overrides`)."""

from __future__ import annotations

import copy
import math
from typing import Any

from headlab.core.errors import HeadlabError

_NEEDS_ORIGINAL = ("yarn", "longrope", "llama3", "dynamic")  # rope types whose scaling needs the pretraining length


def _text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def current_length(config) -> int:
    n = getattr(_text_config(config), "max_position_embeddings", None)
    if n is None:
        raise HeadlabError(f"{type(config).__name__}: no max_position_embeddings, cannot extend its context")
    return int(n)


def ntk_theta(theta: float, scale: float, head_dim: int) -> float:
    """NTK-aware RoPE base for a context `scale` times longer: theta * scale^(d / (d - 2)).

    It keeps the lowest rotary frequency's wavelength growing with the context while barely moving the
    highest frequencies, which carry local order (bloc97, 2023).
    """
    return float(theta * scale ** (head_dim / (head_dim - 2)))


def extension_overrides(config, target_length: int | None, rope_theta: float | None = None,
                        rope_scaling: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config attributes to set for a context of `target_length` tokens ({} when nothing changes).

    `rope_theta` sets the RoPE base; `rope_scaling` (e.g. {"rope_type": "linear", "factor": 4}) is merged
    into rope_parameters. With neither and a longer target, the base is raised by the NTK-aware rule.
    """
    text = _text_config(config)
    original = current_length(config)
    target = target_length or original
    if target < 1:
        raise HeadlabError(f"context extension: field 'context_length' must be positive, got {target}")
    rope = copy.deepcopy(getattr(text, "rope_parameters", None))
    if rope is None:
        if target > original or rope_theta or rope_scaling:
            raise HeadlabError(f"{type(config).__name__} has no rotary position embedding: its context "
                               f"({original}) cannot be extended")
        return {}
    out: dict[str, Any] = {}
    if target != original:
        out["max_position_embeddings"] = target
    if rope_scaling:
        if "rope_type" not in rope_scaling:
            raise HeadlabError("context extension: field 'rope_scaling' needs a 'rope_type' "
                               "(linear, dynamic, yarn, llama3, longrope)")
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        known = ["default", *ROPE_INIT_FUNCTIONS]
        if rope_scaling["rope_type"] not in known:
            raise HeadlabError(f"context extension: field 'rope_scaling.rope_type' must be one of "
                               f"{', '.join(known)} (got {rope_scaling['rope_type']!r})")
        _check_rope_numbers(rope_scaling)
        rope.update(rope_scaling)
        if rope["rope_type"] in _NEEDS_ORIGINAL:
            rope.setdefault("original_max_position_embeddings", original)
    if rope_theta:
        rope["rope_theta"] = float(rope_theta)
    elif not rope_scaling and target > original:
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        rope["rope_theta"] = ntk_theta(rope.get("rope_theta", 10000.0), target / original, head_dim)
    if rope != getattr(text, "rope_parameters", None):
        out["rope_parameters"] = rope
    return out


# rope_scaling fields that are numbers; the scale factors must also be positive. Checked here because
# transformers only warns about them, then divides by a string or trains with a negative factor.
_ROPE_NUMBERS = ("factor", "attention_factor", "beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor",
                 "original_max_position_embeddings", "mscale", "mscale_all_dim")
_ROPE_POSITIVE = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _check_rope_numbers(rope_scaling: dict[str, Any]) -> None:
    for key in _ROPE_NUMBERS:
        if key not in rope_scaling:
            continue
        value = rope_scaling[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HeadlabError(f"context extension: field 'rope_scaling.{key}' must be a finite number "
                               f"(got {value!r})")
        if key in _ROPE_POSITIVE and value <= 0:
            raise HeadlabError(f"context extension: field 'rope_scaling.{key}' must be positive (got {value!r})")


def apply_overrides(config, overrides: dict[str, Any]):
    """Set the overrides on the (text) config in place and return it."""
    text = _text_config(config)
    for key, value in overrides.items():
        setattr(text, key, copy.deepcopy(value))
    return config
