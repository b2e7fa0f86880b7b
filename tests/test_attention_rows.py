"""The seam's attention observer: the weights it recomputes from one call's query and keys equal the model's own
eager attention weights (`output_attentions=True`, no cache), on every family, with left padding, sliding
windows, soft-capping and sinks, and at cached decoding steps where a sliding cache keeps only its last keys."""

import contextlib

import pytest
import torch
from tiny import CONFIGS, build_model, padded_batch, same_weights
from transformers import DynamicCache

from headlab.model.seam import Seam, cache_kwargs, output_cache

ARCHS = list(CONFIGS)
PAD = 5


def _reference_weights(reference, ids, mask, pos):
    with torch.no_grad():
        out = reference(input_ids=ids, attention_mask=mask, position_ids=pos, output_attentions=True)
    return [a.float() for a in out.attentions]  # per layer [batch, head, q, k]


@pytest.mark.parametrize("arch", ARCHS)
def test_every_row_of_a_padded_prompt_equals_eager_attention(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    ids, mask, pos = padded_batch(pad=PAD)
    seen = {}
    with torch.no_grad(), Seam.attach(model).observe_attention(lambda layer, call: seen.setdefault(
            layer, (call.probabilities(), call.first_key))):
        model(input_ids=ids, attention_mask=mask, position_ids=pos)
    want = _reference_weights(reference, ids, mask, pos)
    for layer, (got, first) in seen.items():
        assert first == 0
        torch.testing.assert_close(got[0], want[layer][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got[1, :, PAD:], want[layer][1, :, PAD:], atol=1e-5, rtol=1e-4)
    assert sorted(seen) == list(range(3))


@pytest.mark.parametrize("arch", ARCHS)
def test_last_row_at_cached_steps_maps_to_absolute_positions(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    ids, mask, pos = padded_batch(pad=PAD, n=20)
    steps = torch.randint(3, 90, (2, 6), generator=torch.Generator().manual_seed(3))
    seam = Seam.attach(model)
    cache, rows = DynamicCache(config=model.config), []

    def keep_last_row(layer, call):
        full = torch.zeros(*call.query.shape[:2], call.first_key + call.n_key)
        full[..., call.key_positions()] = call.probabilities([-1])[:, :, 0]
        rows.append((layer, full))

    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **cache_kwargs(model, cache))
        cache = output_cache(out)
        seq, m = ids, mask
        for t in range(steps.shape[1]):
            token = steps[:, t:t + 1]
            seq, m = torch.cat([seq, token], 1), torch.cat([m, torch.ones_like(token)], 1)
            p = (m.cumsum(-1) - 1).clamp(min=0)[:, -1:]
            rows.clear()
            with seam.observe_attention(keep_last_row):
                out = model(input_ids=token, attention_mask=m, position_ids=p, use_cache=True,
                            **cache_kwargs(model, cache))
            cache = output_cache(out)
            want = _reference_weights(reference, seq, m, (m.cumsum(-1) - 1).clamp(min=0))
            for layer, got in rows:
                torch.testing.assert_close(got, want[layer][:, :, -1], atol=1e-5, rtol=1e-4)
            assert len(rows) == 3


def test_sink_weights_leave_rows_short_of_one():
    model = build_model("gpt-oss")
    ids, mask, pos = padded_batch(pad=0)
    sums = []
    with torch.no_grad(), Seam.attach(model).observe_attention(
            lambda layer, call: sums.append(call.probabilities([-1]).sum(-1))):
        model(input_ids=ids, attention_mask=mask, position_ids=pos)
    assert all(bool((s < 1 - 1e-4).all()) for s in sums)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_the_output_of_every_key_equals_the_models_own_z(arch):
    """AttentionCall.output() with no restriction is the attention output the model computed (z), on a
    left-padded batch; restricted to no key at all, it is zero."""
    model = build_model(arch)
    seam = Seam.attach(model)
    ids, mask, positions = padded_batch()
    outputs, zs = {}, {}

    def observe(layer, call):
        outputs[layer] = call.output()
        assert call.output(torch.zeros(call.n_query, call.n_key, dtype=torch.bool)).abs().max() == 0

    def keep_z(layer):
        def hook(z):
            zs[layer] = z.clone()

        return hook

    with torch.no_grad(), seam.observe_attention(observe), contextlib.ExitStack() as stack:
        for layer in range(seam.geometry.n_layers):
            stack.enter_context(seam.z_hook(layer, keep_z(layer)))
        model(input_ids=ids, attention_mask=mask, position_ids=positions)
    for layer in range(seam.geometry.n_layers):
        real = mask.bool()  # pad rows: the model's kernels differ on rows that see no key
        torch.testing.assert_close(outputs[layer][real], zs[layer][real], atol=1e-5, rtol=1e-4)
