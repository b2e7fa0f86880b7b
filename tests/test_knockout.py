"""Knockout parity with plain references: weight-edited model copies (zeroed query rows / output columns)."""

import pytest
import torch
from tiny import build_model, build_tokenizer, padded_batch, same_weights

from headlab.core.errors import HeadlabError
from headlab.mech.generate import greedy_generate
from headlab.mech.interventions import head_means, knockout
from headlab.model.seam import Seam, cache_kwargs, output_cache

ARCHS = ["llama", "mistral-gqa", "gpt2"]
HEADS = ["0-1", "1-2", "1-3", "2-0"]
D = 16


def _edited(model, arch, heads, what):
    """A plain reference: an eager copy whose query rows ("query") or output columns ("out") are zero."""
    ref = same_weights(model, arch, "eager")
    with torch.no_grad():
        for name in heads:
            layer, h = map(int, name.split("-"))
            cols = slice(h * D, (h + 1) * D)
            attn = ref.transformer.h[layer].attn if arch == "gpt2" else ref.model.layers[layer].self_attn
            if what == "out" and arch == "gpt2":
                attn.c_proj.weight[cols, :] = 0  # Conv1D stores (in, out)
            elif what == "out":
                attn.o_proj.weight[:, cols] = 0
            elif arch == "gpt2":  # q is the first third of c_attn's outputs
                attn.c_attn.weight[:, cols] = 0
                attn.c_attn.bias[cols] = 0
            else:
                attn.q_proj.weight[cols] = 0
                if attn.q_proj.bias is not None:
                    attn.q_proj.bias[cols] = 0
    return ref


def _logits(model, ids, mask, pos):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def _decode_reference(bare, edited, ids, mask, pos):
    """Decode mode by definition: prefix through the bare model into a cache, last position through the edit."""
    with torch.no_grad():
        cache = bare(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                     use_cache=True)
        return edited(input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:],
                      use_cache=True, **cache_kwargs(edited, output_cache(cache))).logits[:, -1]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode,what", [("zero", "out"), ("uniform", "query")])
@pytest.mark.parametrize("where", ["all", "decode"])
def test_knockout_matches_an_edited_copy(arch, mode, what, where):
    """`all`: every position equals a copy with the heads edited out; `decode`: only the last position does,
    the prompt's are untouched."""
    model = build_model(arch)
    ids, mask, pos = padded_batch()
    base = _logits(model, ids, mask, pos)
    with knockout(model, HEADS, mode=mode, where=where):
        got = _logits(model, ids, mask, pos)
    edited = _edited(model, arch, HEADS, what)
    if where == "all":
        expected = _logits(edited, ids, mask, pos)
        torch.testing.assert_close(got[1, 5:], expected[1, 5:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=1e-5)
        assert (got - base).abs().max() > 1e-2
        torch.testing.assert_close(_logits(model, ids, mask, pos), base)  # undone on exit
    else:
        torch.testing.assert_close(got[:, :-1], base[:, :-1])
        expected = _decode_reference(model, edited, ids, mask, pos)
        torch.testing.assert_close(got[:, -1], expected, atol=1e-5, rtol=1e-5)
        assert (got[:, -1] - base[:, -1]).abs().max() > 1e-2


def test_uniform_gqa_zeroes_the_query_head_not_its_kv_group():
    model = build_model("mistral-gqa")  # heads 2 and 3 share kv head 1
    ids, mask, pos = padded_batch()
    seen = []
    with knockout(model, ["1-2"], mode="uniform", where="all"), Seam.attach(model).z_hook(1, seen.append):
        _logits(model, ids, mask, pos)
    z = seen[0]  # (B, T, H, d)
    ref = []
    with Seam.attach(model).z_hook(1, ref.append):
        _logits(model, ids, mask, pos)
    torch.testing.assert_close(z[:, :, 3], ref[0][:, :, 3])  # the group partner is untouched
    # Uniform attention returns the running mean of the visible values: for row 0, position 0 sees one key,
    # so its output equals the head's value there, which the same head computes in any attention pattern.
    torch.testing.assert_close(z[0, 0, 2], ref[0][0, 0, 2])
    assert not torch.allclose(z[:, 5:, 2], ref[0][:, 5:, 2])


@pytest.mark.parametrize("arch", ["llama", "mistral-gqa"])
def test_generation_with_cache_and_batch_matches_reference(arch):
    model = build_model(arch)
    edited = _edited(model, arch, HEADS, "query")
    ids, mask, pos = padded_batch(pad=7)
    prompts = [ids[row, mask[row].bool()].tolist() for row in range(2)]
    with knockout(model, HEADS, mode="uniform", where="decode"):  # one batch of two, left-padded
        got = greedy_generate(model, build_tokenizer(), prompts, max_new_tokens=6, batch_size=2,
                              stop_at_newline=False)
    for row in range(2):  # each row alone, unpadded: prefix bare, every generating position edited
        r_ids = torch.tensor([prompts[row]])
        r_mask = torch.ones_like(r_ids)
        r_pos = torch.arange(r_ids.shape[1])[None]
        out = []
        with torch.no_grad():
            cache = output_cache(model(input_ids=r_ids[:, :-1], use_cache=True))
            step, p = r_ids[:, -1:], r_pos[:, -1:]
            for _ in range(6):
                logits = edited(input_ids=step, attention_mask=r_mask, position_ids=p,
                                use_cache=True, **cache_kwargs(edited, cache)).logits
                t = int(logits[0, -1].argmax())
                if t == 2:  # EOS
                    break
                out.append(t)
                step, p = torch.tensor([[t]]), p + 1
                r_mask = torch.cat([r_mask, torch.ones_like(r_mask[:, :1])], 1)
        assert got[row] == out


def test_mean_mode_writes_the_reference_means():
    model = build_model("llama")
    ids, mask, pos = padded_batch()
    means = head_means(model, [(ids, mask)])
    # Plain reference: mean of z over unpadded positions.
    seen = []
    with Seam.attach(model).z_hook(2, lambda z: seen.append(z.clone())):
        _logits(model, ids, mask, pos)
    real = seen[0][mask.bool()]  # (N, H, d)
    torch.testing.assert_close(means[2], real.mean(0), atol=1e-5, rtol=1e-5)
    seen.clear()
    with knockout(model, ["2-1"], mode="mean", where="all", means=means), Seam.attach(model).z_hook(
            2, lambda z: seen.append(z.clone())):
        _logits(model, ids, mask, pos)
    assert torch.allclose(seen[0][:, :, 1], means[2, 1].expand(2, 24, D))
    assert not torch.allclose(seen[0][:, :, 0], means[2, 0].expand(2, 24, D))


def test_knockouts_compose_and_undo_on_error():
    model = build_model("gpt2")
    ids, mask, pos = padded_batch()
    base = _logits(model, ids, mask, pos)
    with knockout(model, HEADS[:2], mode="zero", where="all"), knockout(model, HEADS[2:], mode="zero", where="all"):
        nested = _logits(model, ids, mask, pos)
    with knockout(model, HEADS, mode="zero", where="all"):
        together = _logits(model, ids, mask, pos)
    torch.testing.assert_close(nested, together)
    with pytest.raises(ValueError, match="boom"), knockout(model, HEADS, mode="uniform", where="all"):
        raise ValueError("boom")
    torch.testing.assert_close(_logits(model, ids, mask, pos), base)
    seam = Seam.attach(model)
    assert all(h is None for h in seam._z_handles) and not any(seam._query_hooks)


def test_bad_input():
    model = build_model("llama")
    with pytest.raises(HeadlabError, match="mode"), knockout(model, HEADS, mode="zap"):
        pass
    with pytest.raises(HeadlabError, match="where"), knockout(model, HEADS, where="prefill"):
        pass
    with pytest.raises(HeadlabError, match="out of range"), knockout(model, ["3-0"]):
        pass
    with pytest.raises(HeadlabError, match="LAYER-HEAD"), knockout(model, ["x"]):
        pass
    with pytest.raises(HeadlabError, match="means of shape"), knockout(model, HEADS, mode="mean"):
        pass
