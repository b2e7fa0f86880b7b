"""Test helper: train a small GPT-2-style byte-level BPE tokenizer on text, in memory.

Nothing is downloaded: the tokenizer is learned from the strings given, wrapped as a fast Hugging Face
tokenizer so it offers offsets mapping like any real checkpoint's tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int = 600,
                         chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 pre-tokenisation) with an `<|endoftext|>` token serving as BOS/EOS.

    `chat_template` (Jinja) is attached when given, to exercise the chat-template prompt path.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast
