"""Tiny random models and a tokenizer built from configs, for tests (no downloads)."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
              num_attention_heads=4, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)

CONFIGS = {
    "llama": lambda: (LlamaForCausalLM, LlamaConfig(**COMMON, num_key_value_heads=4)),
    "mistral-gqa": lambda: (MistralForCausalLM, MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=None)),
    "qwen2": lambda: (Qwen2ForCausalLM, Qwen2Config(**COMMON, num_key_value_heads=2)),
    "gpt2": lambda: (GPT2LMHeadModel, GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4,
                                                 n_positions=512, bos_token_id=1, eos_token_id=2)),
}


def build_model(arch: str, attn: str = "sdpa", seed: int = 0, peak: float = 4.0):
    """A random tiny model with peaked attention (scaled query/key weights) so that ties are rare."""
    cls, config = CONFIGS[arch]()
    torch.manual_seed(seed)
    model = cls._from_config(copy.deepcopy(config), attn_implementation=attn).eval()
    with torch.no_grad():
        for module in model.modules():
            for name in ("q_proj", "k_proj"):
                if hasattr(module, name):
                    getattr(module, name).weight.mul_(peak)
            if hasattr(module, "c_attn"):  # GPT-2 packs q, k, v along the output dim of c_attn
                d = module.c_attn.weight.shape[0]
                module.c_attn.weight[:, : 2 * d].mul_(peak)
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
