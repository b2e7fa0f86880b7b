"""Head geometry: layers, query heads, kv heads and head size, read from a transformers config."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from headlab.core.errors import HeadlabError


@dataclass(frozen=True)
class HeadGeometry:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def n_groups(self) -> int:
        """Query heads per kv head: query head h reads kv head h // n_groups."""
        return self.n_heads // self.n_kv_heads

    @property
    def total_heads(self) -> int:
        return self.n_layers * self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    def check_head(self, layer: int, head: int, source: str = "head") -> None:
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise HeadlabError(
                f"{source}: head {layer}-{head} is out of range for a model with "
                f"{self.n_layers} layers x {self.n_heads} heads"
            )


def head_geometry(config) -> HeadGeometry:
    """Read the head geometry from a transformers config (text config for multimodal models)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    missing = [a for a in ("num_hidden_layers", "num_attention_heads", "hidden_size") if not hasattr(config, a)]
    if missing:
        raise HeadlabError(f"unsupported architecture {getattr(config, 'model_type', '?')} ({type(config).__name__}): "
                           f"its config has no {', '.join(missing)}")
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    if n_heads % n_kv:
        raise HeadlabError(f"{n_heads} query heads do not divide into {n_kv} kv heads")
    return HeadGeometry(config.num_hidden_layers, n_heads, n_kv, head_dim)
