"""A byte-level BPE tokenizer trained on toy-world text, wrapped as a transformers fast tokenizer."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from headlab.data.world import World
from headlab.toy.corpus import document
from headlab.toy.task_corpus import task_document

EOS = "<|endoftext|>"


def _corpus(seed: int, n_docs: int) -> Iterator[str]:
    # Both splits, so held-out names still break into learned syllable pieces rather than raw bytes.
    for split in ("train", "heldout"):
        world = World(seed, split)
        rng = random.Random(f"tokenizer-{seed}-{split}")
        for _ in range(n_docs):
            yield document(world, rng, rng.randint(2, 12))


def _task_corpus(seed: int, n_docs: int, bootstrap: PreTrainedTokenizerFast,
                 max_tokens: int) -> Iterator[str]:
    for split in ("train", "heldout"):
        rng = random.Random(f"tokenizer-tasks-{seed}-{split}")
        for _ in range(n_docs):
            yield task_document(bootstrap, rng, max_tokens, seed=seed, split=split)


def train_tokenizer(seed: int = 0, vocab_size: int = 2048, n_docs: int = 4000,
                    model_max_length: int = 256, with_tasks: bool = False) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on generated documents; EOS doubles as BOS and padding.

    `with_tasks` adds study-task prompts to the training text. Task documents are sized in tokens, so a
    first tokenizer trained without them measures their length, then the final one is trained on both.
    """
    extra: list[str] = []
    if with_tasks:
        bootstrap = train_tokenizer(seed, vocab_size, n_docs, model_max_length)
        extra = list(_task_corpus(seed, n_docs // 4, bootstrap, model_max_length))
    tok = Tokenizer(models.BPE())
    # Each newline is its own token, never merged ("\n\n" is two tokens): the answer's stop token is then
    # always the same single "\n" whether or not another question follows.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(itertools.chain(_corpus(seed, n_docs), extra), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=None, model_max_length=model_max_length)
