"""The atlas methods added for issue #23 on the real tier: SmolLM2-135M-Instruct with SQuAD examples
(query-focused) and Paul Graham essays (duo gates), each against its plain eager reference.

Run with `pytest --run-real -m real tests/test_real_atlas.py` (.ci/run does)."""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smol(real_model_dir):
    from headlab.model.loading import load_model

    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield load_model(real_model_dir)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def eager(real_model_dir):
    from headlab.model.loading import load_model

    return load_model(real_model_dir, attn_implementation="eager")[0]


def _vectorised_reference(model, item):
    """QRHead's score per head from output_attentions of each prompt alone (eager, no cache)."""
    per_key = []
    for ids in (item.query_ids, item.null_ids):
        with torch.no_grad():
            att = model(input_ids=torch.tensor([ids]), use_cache=False, output_attentions=True).attentions
        per_key.append(torch.stack([a[0, :, item.query_start:, :item.query_start].float().mean(1) for a in att]))
    calibrated = per_key[0] - per_key[1]  # [layer, head, keys]
    total = torch.zeros(calibrated.shape[:2])
    for g in item.gold:
        doc = calibrated[:, :, slice(*item.doc_spans[g])]
        threshold = doc.mean(-1, keepdim=True) - 2 * doc.std(-1, keepdim=True)
        total += (doc * (doc > threshold)).sum(-1)
    return total


def test_query_focused_scores_on_squad_equal_the_eager_reference(smol, eager, squad_dev):
    from headlab.data.prompts import pad_id_of
    from headlab.data.squad import SquadConfig, convert_squad
    from headlab.experiments.query_focused import QueryFocusedConfig, query_focused_scores, query_inputs

    model, tokenizer = smol
    examples, _ = convert_squad(squad_dev, SquadConfig(limit=2, n_docs=4, max_tokens=600), tokenizer)
    items = query_inputs(examples, tokenizer)
    result = query_focused_scores(model, items, QueryFocusedConfig(batch_size=2), pad_id_of(tokenizer))
    for i, item in enumerate(items):
        want = _vectorised_reference(eager, item)
        got = torch.tensor([[result.scores[f"{layer}-{h}"][i] for h in range(want.shape[1])]
                            for layer in range(want.shape[0])])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
    top = max(result.mean, key=result.mean.get)
    assert result.mean[top] > 0.05  # some head reads the gold paragraph far more than the null question does


def test_duo_student_with_binary_gates_equals_eager_attention_under_a_per_head_mask(smol, eager, essays_dir):
    from headlab.experiments.duo_gates import GatedAttention
    from headlab.model.seam import Seam

    model, tokenizer = smol
    text = sorted(essays_dir.glob("*.txt"))[0].read_text(encoding="utf-8")
    ids = torch.tensor([tokenizer(text)["input_ids"][:300]])
    g = Seam.attach(model).geometry
    gates = torch.tensor([[1.0, 0.0, 1.0]] * g.n_layers)  # kv heads 0 and 2 full, kv head 1 streaming
    sink, recent = 16, 64
    with torch.no_grad(), GatedAttention(Seam.attach(model), gates, sink, recent).applied():
        got = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    n, groups = ids.shape[1], g.n_heads // g.n_kv_heads
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    causal = k <= q
    streaming = causal & ((k < sink) | (q - k < recent))
    keep = torch.stack([streaming if h // groups == 1 else causal for h in range(g.n_heads)])[None]
    mask = torch.where(keep, 0.0, torch.finfo(torch.float32).min)
    with torch.no_grad():
        want = eager(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
