import random

import pytest
import torch
from tiny import build_model, build_tokenizer
from transformers.modeling_outputs import CausalLMOutputWithPast

from headlab.errors import HeadlabError
from headlab.generate import greedy_generate, newline_token_ids, stop_ids


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 96) for _ in range(rng.randint(3, 40))] for _ in range(n)]


def _reference(model, prompt: list[int], n: int, stops: set[int]) -> list[int]:
    """One prompt alone, no padding, no cache: the plain definition of greedy decoding."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if t in stops:
                break
            out.append(t)
            ids.append(t)
    return out


@pytest.mark.parametrize("arch", ["llama", "mistral-gqa", "gpt2"])
def test_matches_unbatched_reference(arch):
    model, tok = build_model(arch), build_tokenizer()
    prompts = _prompts(5)
    got = greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=3, stop_at_newline=False)
    stops = stop_ids(model, tok, stop_at_newline=False)
    assert got == [_reference(model, p, 8, stops) for p in prompts]


def test_independent_of_batch_size():
    model, tok = build_model("qwen2"), build_tokenizer()
    prompts = _prompts(7, seed=1)
    runs = [greedy_generate(model, tok, prompts, max_new_tokens=10, batch_size=b) for b in (1, 2, 7)]
    assert runs[0] == runs[1] == runs[2]
    assert any(len(r) > 0 for r in runs[0])


class _Scripted(torch.nn.Module):
    """Predicts script[k] at decoding step k for every row, whatever the input."""

    def __init__(self, script: list[int]):
        super().__init__()
        self.script, self.step = script, 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def forward(self, input_ids, **kwargs):
        logits = torch.zeros(input_ids.shape[0], 1, 96)
        logits[:, -1, self.script[min(self.step, len(self.script) - 1)]] = 1.0
        self.step += 1
        return CausalLMOutputWithPast(logits=logits)


def test_stops_at_newline_and_excludes_stop():
    tok = build_tokenizer()
    newline = sorted(newline_token_ids(tok))
    assert newline, "the test tokenizer must have a newline token"
    out = greedy_generate(_Scripted([7, 8, newline[0], 9]), tok, _prompts(3), max_new_tokens=6, batch_size=3)
    assert out == [[7, 8]] * 3
    out = greedy_generate(_Scripted([7, 8, newline[0], 9]), tok, _prompts(3), max_new_tokens=6, batch_size=3,
                          stop_at_newline=False)
    assert out == [[7, 8, newline[0], 9, 9, 9]] * 3
    out = greedy_generate(_Scripted([7, tok.eos_token_id]), tok, _prompts(2), max_new_tokens=6, batch_size=2,
                          stop_at_newline=False)
    assert out == [[7]] * 2


def test_bad_arguments():
    model, tok = build_model("llama"), build_tokenizer()
    with pytest.raises(HeadlabError, match="batch_size"):
        greedy_generate(model, tok, [[5]], batch_size=0)
    with pytest.raises(HeadlabError, match="prompt 1 is empty"):
        greedy_generate(model, tok, [[5], []])
