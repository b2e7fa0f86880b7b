"""Query-focused retrieval scores (QRHead) against a literal reference: each prompt alone, no cache, eager
attention, output_attentions=True, loops over heads, rows, documents and tokens."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tiny import CONFIGS, VOCAB, build_model, same_weights

from headlab.core.errors import HeadlabError
from headlab.experiments.query_focused import (
    QueryFocusedConfig,
    QueryInput,
    document_score,
    query_focused_scores,
    query_input,
)

ASSETS = Path(__file__).resolve().parents[1] / "headlab" / "assets" / "tiny-llama"


def _items(n=3, seed=0):
    """Random token inputs: a shared prefix holding the documents, then a real and a null query of
    different lengths, so that a batch is left-padded."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        prefix_len = 20 + 3 * i
        prefix = torch.randint(3, VOCAB, (prefix_len,), generator=g).tolist()
        real = torch.randint(3, VOCAB, (4 + i,), generator=g).tolist()
        null = torch.randint(3, VOCAB, (2,), generator=g).tolist()
        docs = [(1, 6), (6, 12), (12, 13), (13, prefix_len)]  # one document of a single token
        gold = [[1], [0, 2], [3, 1]][i % 3]
        items.append(QueryInput(f"e{i}", prefix + real, prefix + null, prefix_len, docs, gold))
    return items


def _reference(model, items, outlier_std=2.0):
    per_example = []
    for item in items:
        attentions = []
        for ids in (item.query_ids, item.null_ids):
            with torch.no_grad():
                out = model(input_ids=torch.tensor([ids]), use_cache=False, output_attentions=True)
            attentions.append(out.attentions)
        scores = {}
        for layer in range(len(attentions[0])):
            for head in range(attentions[0][layer].shape[1]):
                mean_weight = []
                for att, ids in zip(attentions, (item.query_ids, item.null_ids), strict=True):
                    w = att[layer][0, head].float()
                    rows = range(item.query_start, len(ids))
                    mean_weight.append([sum(float(w[r, k]) for r in rows) / len(rows)
                                        for k in range(item.query_start)])
                calibrated = [a - b for a, b in zip(*mean_weight, strict=True)]
                total = 0.0
                for doc in item.gold:
                    lo, hi = item.doc_spans[doc]
                    tokens = calibrated[lo:hi]
                    if len(tokens) == 1:
                        total += tokens[0]
                        continue
                    mean = sum(tokens) / len(tokens)
                    std = (sum((t - mean) ** 2 for t in tokens) / (len(tokens) - 1)) ** 0.5
                    total += sum(t for t in tokens if t > mean - outlier_std * std)
                scores[f"{layer}-{head}"] = total
        per_example.append(scores)
    return {name: [s[name] for s in per_example] for name in per_example[0]}


def _assert_same(got, want, atol=1e-5):
    assert list(got) == list(want)
    torch.testing.assert_close(torch.tensor([got[k] for k in want]), torch.tensor([want[k] for k in want]),
                               atol=atol, rtol=0)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_scores_equal_the_eager_reference_on_every_family(arch):
    model = build_model(arch)  # sdpa where the family allows it
    items = _items()
    result = query_focused_scores(model, items, QueryFocusedConfig(batch_size=2))
    _assert_same(result.scores, _reference(same_weights(model, arch, "eager"), items))
    assert result.unit == "query head" and result.example_ids == ["e0", "e1", "e2"]
    assert max(abs(v) for values in result.scores.values() for v in values) > 1e-3  # not all zero


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2-sw", "gemma3"])
def test_batch_size_and_attention_implementation_do_not_change_the_scores(arch):
    model = build_model(arch)
    items = _items(n=4, seed=3)
    one = query_focused_scores(model, items, QueryFocusedConfig(batch_size=1)).scores
    four = query_focused_scores(model, items, QueryFocusedConfig(batch_size=4)).scores
    eager = query_focused_scores(same_weights(model, arch, "eager"), items, QueryFocusedConfig(batch_size=3)).scores
    _assert_same(one, four, atol=1e-6)
    _assert_same(one, eager, atol=1e-5)


def test_the_outlier_rule_drops_tokens_below_mean_minus_k_std():
    scores = torch.tensor([[1.0, 1.0, 1.0, -5.0], [0.5, 0.5, 0.5, 0.5]])  # [head, tokens]
    # head 0: mean -0.5, std 3, threshold -6.5 at k=2: nothing dropped; at k=0.1 the -5 goes.
    # head 1: every token equals the threshold, and only tokens above it count (the original's strict rule)
    assert document_score(scores).tolist() == pytest.approx([-2.0, 0.0])
    assert document_score(scores, 0.1).tolist() == pytest.approx([3.0, 0.0])
    assert document_score(torch.tensor([[0.25]])).tolist() == [0.25]  # one token: kept


def test_a_null_prompt_equal_to_the_real_one_calibrates_every_head_to_zero():
    model = build_model("llama")
    same = [replace(i, null_ids=list(i.query_ids)) for i in _items(n=2, seed=4)]
    mean = query_focused_scores(model, same).mean
    assert len(mean) == 3 * 4 and max(abs(v) for v in mean.values()) < 1e-6


@pytest.mark.parametrize("change, message", [
    (dict(null_ids=[5] * 30), "differ before the query span"),
    (dict(gold=[]), "at least one gold document"),
    (dict(doc_spans=[(1, 40)]), "must lie before the query span"),
    (dict(gold=[7]), "gold document index out of range"),
])
def test_bad_inputs_are_one_line(change, message):
    item = replace(_items(n=1)[0], **change)
    with pytest.raises(HeadlabError, match=message):
        query_focused_scores(build_model("llama"), [item])


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("null_query", " "), ("outlier_std", -1)])
def test_bad_settings_name_their_field(field, value):
    with pytest.raises(HeadlabError, match=f"field '{field}'"):
        QueryFocusedConfig(**{field: value})


def _example():
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.model.loading import load_tokenizer

    tokenizer = load_tokenizer(ASSETS)
    config = GenConfig("mdqa", "templated", "diverse", n=1, length=300, seed=2)
    return generate_examples(config, tokenizer)[0], tokenizer


def test_inputs_from_a_task_example_locate_documents_and_question():
    example, tokenizer = _example()
    item = query_input(example, tokenizer)
    item.check()
    for doc, (lo, hi) in zip(example.documents, item.doc_spans, strict=True):
        text = tokenizer.decode(item.query_ids[lo:hi])
        assert doc.text.strip()[-20:] in text and f"[{doc.id}]" in text
    assert example.question in tokenizer.decode(item.query_ids[item.query_start:])
    assert "N/A" in tokenizer.decode(item.null_ids[item.query_start:])
    assert example.question not in tokenizer.decode(item.null_ids)
    assert [example.documents[g].id for g in item.gold] == example.gold_doc_ids


def test_an_example_without_gold_documents_is_refused():
    example, tokenizer = _example()
    with pytest.raises(HeadlabError, match=f"example {example.id}: field 'gold_doc_ids' is empty"):
        query_input(replace(example, gold_doc_ids=[]), tokenizer)
    with pytest.raises(HeadlabError, match="field 'documents' is empty"):
        query_input(replace(example, documents=[]), tokenizer)
