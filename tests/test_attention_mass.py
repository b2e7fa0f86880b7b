"""Attention-mass retrieval score (docs/definitions.md#attention-mass) against its definition applied literally:
no KV cache, eager attention, output_attentions, loops over heads and keys; on every tiny family."""

import pytest
import torch
from test_detect import _Tok, echo_probes, token_probes
from tiny import CONFIGS, build_model, same_weights

from headlab.core.errors import HeadlabError
from headlab.experiments.attention_mass import MassConfig, attention_mass_heads, needle_mass

ARCHS = list(CONFIGS)


def reference_mass(model, probe, max_new_tokens, stops, top_k=True):
    """(response, scores [layer, head], near_tie [layer, head]): near_tie marks heads whose n-th and (n+1)-th
    most attended keys differ by less than float noise (relative 1e-4) at some step while weighing enough to
    matter, where the cached fast path may rank the two the other way."""
    ids, response = list(probe.input_ids), []
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    span = probe.needle_end - probe.needle_start
    total = torch.zeros(n_layers, n_heads)
    near_tie = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model(torch.tensor([ids]), output_attentions=True)
            token = int(out.logits[0, -1].argmax())
            for layer, attn in enumerate(out.attentions):
                for head in range(n_heads):
                    row = attn[0, head, -1].tolist()
                    ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))  # ties to the lower position
                    keys = ranked[:span] if top_k else range(len(row))
                    if top_k and len(row) > span:
                        a, b = row[ranked[span - 1]], row[ranked[span]]
                        near_tie[layer, head] |= b > 1e-5 and 0 < a - b < 1e-4 * a  # exact ties: both take the lower
                    total[layer, head] += sum(row[i] for i in keys
                                              if probe.needle_start <= i < probe.needle_end) / span
            response.append(token)
            ids.append(token)
            if token in stops:
                break
    return response, total / len(response), near_tie


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_equal_the_no_cache_reference(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    probes = token_probes(2) + echo_probes(model, 1)
    result = attention_mass_heads(model, _Tok(), probes, MassConfig(max_new_tokens=6, keep_failed=True,
                                                                    batch_size=3, progress=False))
    for probe, outcome in zip(probes, result.outcomes, strict=True):
        response, want, near_tie = reference_mass(reference, probe, 6, {2})
        assert outcome.response_ids == response
        torch.testing.assert_close(outcome.scores[~near_tie], want[~near_tie], atol=1e-5, rtol=1e-4)
        assert near_tie.float().mean() < 0.25  # ties are the exception, not what the comparison rests on
    assert float(result.outcomes[-1].scores.max()) > 0


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_span_mode_and_batch_size(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    probes = token_probes(3, seed=4)
    runs = [attention_mass_heads(model, _Tok(), probes, MassConfig(max_new_tokens=4, keep_failed=True, keys="span",
                                                                   batch_size=b, progress=False)) for b in (1, 3)]
    for a, b in zip(runs[0].outcomes, runs[1].outcomes, strict=True):
        torch.testing.assert_close(a.scores, b.scores, atol=1e-6, rtol=1e-5)
    _, want, _ = reference_mass(reference, probes[0], 4, {2}, top_k=False)
    torch.testing.assert_close(runs[0].outcomes[0].scores, want, atol=1e-5, rtol=1e-4)
    top = attention_mass_heads(model, _Tok(), probes[:1], MassConfig(max_new_tokens=4, keep_failed=True,
                                                                     progress=False))
    assert bool((top.outcomes[0].scores <= runs[0].outcomes[0].scores + 1e-6).all())  # top-k keeps a subset


def test_top_k_counts_only_the_needle_length_most_attended_keys():
    weights = torch.tensor([[[0.1, 0.4, 0.3, 0.2]]])  # one row, one head, four keys
    lo, hi = torch.tensor([1]), torch.tensor([3])  # needle = keys 1, 2; the two most attended: 1 and 2
    assert float(needle_mass(weights, torch.arange(4), lo, hi, top_k=True)) == pytest.approx(0.7)
    weights = torch.tensor([[[0.5, 0.4, 0.05, 0.05]]])  # top two: 0 and 1; only key 1 in the needle
    assert float(needle_mass(weights, torch.arange(4), lo, hi, top_k=True)) == pytest.approx(0.4)
    assert float(needle_mass(weights, torch.arange(4), lo, hi, top_k=False)) == pytest.approx(0.45)


def test_unknown_key_choice_is_one_line():
    with pytest.raises(HeadlabError, match=r"^keys: expected one of top-k, span, got 'all'$"):
        MassConfig(keys="all")
