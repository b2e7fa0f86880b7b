"""Patching parity: all heads from a source reproduce it; same-input patching is a no-op; lockstep generation."""

import pytest
import torch
from tiny import attention_tuned, build_model, build_tokenizer, padded_batch

from headlab.core.errors import HeadlabError
from headlab.mech.generate import greedy_generate
from headlab.mech.interventions import patch_from_input, patch_from_model
from headlab.model.seam import Seam

ARCHS = ["llama", "mistral-gqa", "gpt2"]
ALL = [f"{layer}-{h}" for layer in range(3) for h in range(4)]


def _logits(model, ids, mask, pos):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def _z_per_layer(model, run):
    """z of every layer at the last forward of `run` (the target runs after its lockstep source)."""
    seen = {}
    seam = Seam.attach(model)
    hooks = [seam.z_hook(layer, lambda z, layer=layer: seen.__setitem__(layer, z.clone())) for layer in range(3)]
    for h in hooks:
        h.__enter__()
    try:
        run()
    finally:
        for h in reversed(hooks):
            h.__exit__(None, None, None)
    return seen


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_every_head_reproduces_the_source(arch):
    target = build_model(arch)
    source = attention_tuned(target, arch)
    ids, mask, pos = padded_batch()
    want = _logits(source, ids, mask, pos)
    base = _logits(target, ids, mask, pos)
    with patch_from_model(target, source, ALL):
        got = _logits(target, ids, mask, pos)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (base - want).abs().max() > 1e-2
    torch.testing.assert_close(_logits(target, ids, mask, pos), base)  # undone on exit


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lockstep_generation_with_cache_follows_the_source(arch):
    target = build_model(arch)
    source = attention_tuned(target, arch)
    tok = build_tokenizer()
    prompts = [[5, 9, 40, 33, 12, 7, 80], [11, 4, 60, 21]]
    want = greedy_generate(source, tok, prompts, max_new_tokens=8, batch_size=2, stop_at_newline=False)
    assert want != greedy_generate(target, tok, prompts, max_new_tokens=8, batch_size=2, stop_at_newline=False)
    with patch_from_model(target, source, ALL):
        got = greedy_generate(target, tok, prompts, max_new_tokens=8, batch_size=2, stop_at_newline=False)
        # model.generate drives the same hook: its own cache and inputs, same lockstep source.
        ids = torch.tensor([prompts[0]])
        hf = target.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:].tolist()
    assert got == want
    assert hf == want[0][:8]


def test_partial_patch_writes_the_source_z_of_a_different_model():
    target, source = build_model("mistral-gqa", seed=0), build_model("mistral-gqa", seed=1)
    ids, mask, pos = padded_batch()
    heads = ["0-1", "2-3", "2-0"]
    src = _z_per_layer(source, lambda: _logits(source, ids, mask, pos))
    plain = _z_per_layer(target, lambda: _logits(target, ids, mask, pos))
    with patch_from_model(target, source, heads):
        got = _z_per_layer(target, lambda: _logits(target, ids, mask, pos))
    torch.testing.assert_close(got[0][:, :, 1], src[0][:, :, 1])
    torch.testing.assert_close(got[2][:, :, [0, 3]], src[2][:, :, [0, 3]])
    torch.testing.assert_close(got[0][:, :, [0, 2, 3]], plain[0][:, :, [0, 2, 3]])  # before any patched effect


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_from_the_same_input_changes_nothing(arch):
    model = build_model(arch)
    tok = build_tokenizer()
    ids, mask, pos = padded_batch()
    base = _logits(model, ids, mask, pos)
    with patch_from_input(model, ALL, ids, mask):
        got = _logits(model, ids, mask, pos)
    torch.testing.assert_close(got, base, atol=1e-6, rtol=1e-6)
    prompts = [ids[0].tolist(), ids[1, 5:].tolist()]
    want = greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=2, stop_at_newline=False)
    with patch_from_input(model, ALL, ids, mask):  # the same left-padded batch greedy_generate builds
        got_gen = greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=2, stop_at_newline=False)
    assert got_gen == want


def test_cross_input_patch_writes_the_other_inputs_z():
    model = build_model("llama")
    ids, mask, pos = padded_batch()
    other, _, _ = padded_batch(seed=9)
    src = _z_per_layer(model, lambda: _logits(model, other, mask, pos))
    with patch_from_input(model, ["1-0", "1-2"], other, mask):
        got = _z_per_layer(model, lambda: _logits(model, ids, mask, pos))
    torch.testing.assert_close(got[1][:, :, [0, 2]], src[1][:, :, [0, 2]])
    assert not torch.allclose(got[1][:, :, 1], src[1][:, :, 1])


def test_patch_composes_and_undoes_on_error():
    target = build_model("llama")
    source = attention_tuned(target, "llama")
    ids, mask, pos = padded_batch()
    base = _logits(target, ids, mask, pos)
    with patch_from_model(target, source, ALL[:6]), patch_from_model(target, source, ALL[6:]):
        nested = _logits(target, ids, mask, pos)
    torch.testing.assert_close(nested, _logits(source, ids, mask, pos), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="boom"), patch_from_model(target, source, ALL):
        raise ValueError("boom")
    torch.testing.assert_close(_logits(target, ids, mask, pos), base)
    assert not target._forward_pre_hooks and all(h is None for h in Seam.attach(target)._z_handles)


def test_bad_input():
    llama, gqa = build_model("llama"), build_model("mistral-gqa")
    ids, mask, pos = padded_batch()
    with pytest.raises(HeadlabError, match="geometry"), patch_from_model(llama, gqa, ["0-0"]):
        pass
    with pytest.raises(HeadlabError, match="does not match"), patch_from_input(llama, ["0-0"], ids[:1], mask[:1]):
        _logits(llama, ids, mask, pos)
    with pytest.raises(HeadlabError, match="out of range"), patch_from_model(llama, llama, ["0-9"]):
        pass
