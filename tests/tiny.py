"""Tiny random models and a tokenizer built from configs, for tests (no downloads)."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Cohere2Config,
    Cohere2ForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GptOssConfig,
    GptOssForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
)

from headlab.model.families import family_of
from headlab.model.geometry import head_geometry
from headlab.model.loading import default_attention

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
              num_attention_heads=4, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)

WINDOW = 8  # sliding-window configs: prompts in tests are several windows long
ALTERNATING = ["sliding_attention", "full_attention", "sliding_attention"]
GEMMA = dict(COMMON, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW, layer_types=ALTERNATING)

CONFIGS = {
    "llama": lambda: (LlamaForCausalLM, LlamaConfig(**COMMON, num_key_value_heads=4)),
    "mistral-gqa": lambda: (MistralForCausalLM, MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=None)),
    "qwen2": lambda: (Qwen2ForCausalLM, Qwen2Config(**COMMON, num_key_value_heads=2)),
    "gpt2": lambda: (GPT2LMHeadModel, GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4,
                                                 n_positions=512, bos_token_id=1, eos_token_id=2)),
    # Families with sliding-window layers (every layer, or alternating with full ones), q/k norms, soft-capping,
    # a packed qkv projection: the architecture parity tests (tests/test_architectures.py) run on all of them.
    "mistral-sw": lambda: (MistralForCausalLM, MistralConfig(**COMMON, num_key_value_heads=2,
                                                             sliding_window=WINDOW)),
    "qwen2-sw": lambda: (Qwen2ForCausalLM, Qwen2Config(**COMMON, num_key_value_heads=2, use_sliding_window=True,
                                                       sliding_window=WINDOW, max_window_layers=1)),
    "qwen3": lambda: (Qwen3ForCausalLM, Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=16)),
    "gemma": lambda: (GemmaForCausalLM, GemmaConfig(**COMMON, num_key_value_heads=2, head_dim=16)),
    "gemma2": lambda: (Gemma2ForCausalLM, Gemma2Config(**GEMMA, num_key_value_heads=2)),
    "gemma3": lambda: (Gemma3ForCausalLM, Gemma3TextConfig(**GEMMA, num_key_value_heads=2)),
    "phi3": lambda: (Phi3ForCausalLM, Phi3Config(**COMMON, num_key_value_heads=2, sliding_window=WINDOW)),
    "olmo2": lambda: (Olmo2ForCausalLM, Olmo2Config(**COMMON, num_key_value_heads=4)),
    "starcoder2": lambda: (Starcoder2ForCausalLM, Starcoder2Config(**COMMON, num_key_value_heads=2,
                                                                   sliding_window=WINDOW)),
    "cohere2": lambda: (Cohere2ForCausalLM, Cohere2Config(**COMMON, num_key_value_heads=2, sliding_window=WINDOW,
                                                          layer_types=ALTERNATING)),
    "gpt-oss": lambda: (GptOssForCausalLM, GptOssConfig(**COMMON, num_key_value_heads=2, head_dim=16,
                                                         sliding_window=WINDOW, layer_types=ALTERNATING,
                                                         num_local_experts=4, num_experts_per_tok=2,
                                                         rope_parameters={"rope_type": "default",
                                                                          "rope_theta": 150000.0})),
}
# Configs with at least one sliding-window layer, as their family's row reads the config.
SLIDING = [arch for arch, make in CONFIGS.items() if family_of(make()[1]).windowed(make()[1])]


def build_model(arch: str, attn: str = "sdpa", seed: int = 0, peak: float = 4.0):
    """A random tiny model with peaked attention (scaled query/key weights) so that ties are rare."""
    cls, config = CONFIGS[arch]()
    if attn == "sdpa":  # eager where sdpa cannot compute the model (Gemma 2 soft-caps attention logits)
        attn = default_attention(config)
    torch.manual_seed(seed)
    model = cls._from_config(copy.deepcopy(config), attn_implementation=attn).eval()
    family, g = family_of(config), head_geometry(config)
    n_qk = (g.n_heads + g.n_kv_heads) * g.head_dim  # query and key rows of a packed q|k|v projection
    with torch.no_grad():
        for module in filter(family.is_attention, model.modules()):
            if family.packed:  # GPT-2's Conv1D keeps outputs as columns, Phi-3's Linear as rows
                weight = getattr(module, family.qkv[0]).weight
                (weight[:, :n_qk] if family.conv1d else weight[:n_qk]).mul_(peak)
            else:
                for name in family.qkv[:2]:
                    getattr(module, name).weight.mul_(peak)
            for name in ("q_norm", "k_norm"):  # a norm after the projection undoes its scale: scale the norm
                norm = getattr(module, name, None)
                if norm is not None and "Gemma" in type(norm).__name__:  # Gemma norms multiply by (1 + weight)
                    norm.weight.add_(peak - 1)
                elif norm is not None:
                    norm.weight.mul_(peak)
    return model


def same_weights(model, arch: str, attn: str):
    """A copy of `model` with another attention implementation (its own config object)."""
    other = build_model(arch, attn=attn)
    other.load_state_dict(model.state_dict())
    return other


CORPUS = [
    "Mara Quill was born in Tovesk. The grass is green. The sky is blue.",
    "Bob Stone works at Halden Mills. The river runs north past the old bridge.",
    "Question: Where was Mara Quill born?\nAnswer: Mara Quill was born in Tovesk.\n",
] * 20


@lru_cache(maxsize=1)
def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of exactly VOCAB entries trained on a few sentences.

    Cached: BPE training may break ties differently from one call to the next, and every test of a process
    must see the same tokenizer. Text outside CORPUS's characters is dropped, so tests use CORPUS words."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:60], show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def padded_batch(seed: int = 1, pad: int = 5, n: int = 24):
    """Two random rows of `n` tokens, the second left-padded by `pad`: (ids, mask, position ids)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, n), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def attention_tuned(model, arch: str, seed: int = 5):
    """A copy whose attention inputs (q, k, v) differ: z differs, everything after z is shared."""
    source = build_model(arch)
    source.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    qkv = family_of(model).qkv
    with torch.no_grad():
        for name, p in source.named_parameters():
            if any(f".{k}." in name for k in qkv):
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return source


def write_task_file(path, tokenizer_dir, n: int, length: int, seed: int):
    """`n` small symbolic MDQA examples (repetitive haystack, at most one sentence per document) as a task JSONL
    written with the tokenizer of `tokenizer_dir`: the training or evaluation file of CLI tests."""
    from headlab.data.example import save_examples
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.model.loading import load_tokenizer

    save_examples(generate_examples(GenConfig("mdqa", "symbolic", "repetitive", n=n, length=length, seed=seed,
                                              doc_sentences=(0, 1)), load_tokenizer(tokenizer_dir)), path)
    return path
