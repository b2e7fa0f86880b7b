import pytest
import torch
from tiny import build_model, build_tokenizer

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning thread pools make
# the suite many times slower (measured: 100 s -> 7 s for test_detect.py under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama with a byte-level BPE tokenizer: a model folder as a user would pass it."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_model("llama").save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path
