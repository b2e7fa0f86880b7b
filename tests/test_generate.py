import random

import pytest
import torch
from tiny import build_model, build_tokenizer
from transformers.modeling_outputs import CausalLMOutputWithPast

from headlab.core.errors import HeadlabError
from headlab.mech.generate import greedy_decode, greedy_generate, left_pad, newline_token_ids, stop_ids


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


def _hf_greedy(model, ids, mask, stops: set[int], n: int) -> list[list[int]]:
    """transformers' own greedy search; each row's tokens up to and including its first stop token."""
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                             eos_token_id=sorted(stops), pad_token_id=0)
    rows = []
    for row in out[:, ids.shape[1]:].tolist():
        stop = next((k for k, t in enumerate(row) if t in stops), None)
        rows.append(row if stop is None else row[: stop + 1])
    return rows


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_decoder_with_callback_matches_hf_generate(arch):
    model, n = build_model(arch), 12
    prompts = _prompts(4, seed=3)
    assert len({len(p) for p in prompts}) == 4
    ids, mask = left_pad(prompts, 0)
    free = greedy_decode(model, ids, mask, [set()] * 4, n)
    # Stop tokens taken from the free run: rows stop at different steps, or never.
    stops = {free[0][2], free[1][6]}
    want = _hf_greedy(model, ids, mask, stops, n)
    assert len({len(r) for r in want}) > 1 and any(len(r) == n and r[-1] not in stops for r in want), want

    seen: list[list[int]] = [[] for _ in prompts]
    steps: list[int] = []

    def on_step(step, tokens, live):
        steps.append(step)
        assert tokens.shape == live.shape == (4,) and live.dtype == torch.bool
        for row in live.nonzero().flatten().tolist():
            seen[row].append(int(tokens[row]))

    kept = greedy_decode(model, ids, mask, [stops] * 4, n, on_step=on_step, keep_stop=True)
    assert kept == want and seen == want
    assert steps == list(range(max(len(r) for r in want)))
    cut = greedy_decode(model, ids, mask, [stops] * 4, n)
    assert cut == [r[:-1] if r[-1] in stops else r for r in want]

    # Per-row stop sets: each row as if generated alone with its own stops.
    never = min(set(range(3, 96)) - set(free[2]))  # a stop token row 2 does not generate
    per_row = [{free[0][2]}, {free[1][3]}, {never}, {free[3][0], free[3][5]}]
    got = greedy_decode(model, ids, mask, per_row, n, keep_stop=True)
    alone = [_hf_greedy(model, torch.tensor([p]), torch.ones(1, len(p), dtype=torch.long), s, n)[0]
             for p, s in zip(prompts, per_row, strict=True)]
    assert got == alone
    assert len({len(r) for r in got}) > 1 and len(got[2]) == n


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


def test_answer_helpers_use_the_one_stop_rule():
    from transformers import GenerationConfig

    from headlab.lofit.evaluate import greedy_answer
    from headlab.toy.evaluate import answer

    tok = build_tokenizer()
    newline = sorted(newline_token_ids(tok))[0]
    words = tok("Mara was born", add_special_tokens=False)["input_ids"]
    for ask in (lambda m: greedy_answer(m, tok, "Question: Where?\nAnswer:"),
                lambda m: answer(m, tok, "Mara was born in Tovesk.", "Where was Mara born?")):
        assert ask(_Scripted([*words, newline, 9])) == "Mara was born"
        scripted = _Scripted([*words, 9, newline])
        scripted.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, 9])  # the model's own EOS
        assert ask(scripted) == "Mara was born"
