"""TransformerLens-style pattern scores (headlab/experiments/patterns.py): on every tiny family they equal a literal
reference built from the eager model's own `output_attentions` with python loops; they do not depend on batching
or the attention implementation; the detection patterns match hand-written matrices; bad settings are named."""

import json
import logging
import warnings

import pytest
import torch
from tiny import CONFIGS, VOCAB, build_model, build_tokenizer, same_weights

from headlab.core.errors import HeadlabError
from headlab.experiments.detect import HEATMAP_FILE, SCORES_FILE, SUMMARY_FILE
from headlab.experiments.patterns import (
    METHODS,
    PatternConfig,
    detection_pattern,
    pattern_score,
    pattern_scores,
    random_repeated_tokens,
    repeated_tokens_for,
    write_head_scores,
)
from headlab.mech.heads import load_scores

ARCHS = list(CONFIGS)
BOS, SPECIAL = 1, (0, 1, 2)  # tests/tiny.py: pad 0, bos 1, eos 2


def _tokens(n=4, length=8, seed=0):
    return random_repeated_tokens(VOCAB, n, length, seed, BOS, SPECIAL)


# --- the literal reference ------------------------------------------------------------------------------------

def _reference_pattern(method, t):
    """D with explicit loops over query i and key j."""
    n = len(t)
    d = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            if method == "previous-token":
                d[i, j] = float(j == i - 1)
            elif method == "duplicate-token":
                d[i, j] = float(j < i and t[j] == t[i])
            else:  # induction: the key after an earlier copy of t[i]
                d[i, j] = float(j >= 1 and j - 1 < i and t[j - 1] == t[i])
    return d


def _reference_scores(reference, tokens, method, exclude_bos=False, exclude_current_token=False):
    with torch.no_grad():
        attentions = reference(input_ids=tokens, output_attentions=True).attentions
    out = {}
    for layer, weights in enumerate(attentions):
        for head in range(weights.shape[1]):
            scores = []
            for s in range(tokens.shape[0]):
                p = weights[s, head].float().clone()
                if exclude_bos:
                    p[:, 0] = 0
                if exclude_current_token:
                    for i in range(p.shape[0]):
                        p[i, i] = 0
                d = _reference_pattern(method, tokens[s].tolist())
                scores.append(float((p * d).sum() / p.sum()))
            out[f"{layer}-{head}"] = scores
    return out


def _assert_same(got, want, atol=1e-5):
    assert list(got) == list(want)
    torch.testing.assert_close(torch.tensor([got[k] for k in want]), torch.tensor([want[k] for k in want]),
                               atol=atol, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_equal_the_eager_reference_on_every_family(arch):
    model = build_model(arch)  # sdpa where the family allows it
    reference = same_weights(model, arch, "eager")
    tokens = _tokens()
    for method in METHODS:
        result = pattern_scores(model, tokens, PatternConfig(method, n_sequences=4, length=8, batch_size=3))
        want = _reference_scores(reference, tokens, method)
        _assert_same(result.scores, want)
        assert result.method == method and result.n_sequences == 4 and result.unit == "query head"
        for name, values in want.items():
            assert result.mean[name] == pytest.approx(sum(values) / len(values), abs=1e-5)


@pytest.mark.parametrize("arch", ["llama", "mistral-gqa", "gemma3", "gpt-oss"])
def test_exclusions_change_the_scores_as_the_reference_says(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    tokens = _tokens(seed=3)
    for method in METHODS:
        plain = pattern_scores(model, tokens, PatternConfig(method, n_sequences=4, length=8)).scores
        for flags in [dict(exclude_bos=True), dict(exclude_current_token=True),
                      dict(exclude_bos=True, exclude_current_token=True)]:
            got = pattern_scores(model, tokens, PatternConfig(method, n_sequences=4, length=8, **flags)).scores
            _assert_same(got, _reference_scores(reference, tokens, method, **flags))
            assert max(abs(a - b) for k in got for a, b in zip(got[k], plain[k], strict=True)) > 1e-3


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2-sw"])
def test_batch_size_does_not_change_the_scores(arch):
    model = build_model(arch)
    tokens = _tokens(n=4, seed=1)
    one = pattern_scores(model, tokens, PatternConfig("induction", n_sequences=4, length=8, batch_size=1))
    four = pattern_scores(model, tokens, PatternConfig("induction", n_sequences=4, length=8, batch_size=4))
    _assert_same(one.scores, four.scores, atol=1e-6)
    assert one.mean == pytest.approx(four.mean, abs=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt-oss"])
def test_sdpa_and_eager_give_the_same_scores(arch):
    model = build_model(arch)
    eager = same_weights(model, arch, "eager")
    tokens = _tokens(seed=2)
    config = PatternConfig("previous-token", n_sequences=4, length=8)
    _assert_same(pattern_scores(model, tokens, config).scores, pattern_scores(eager, tokens, config).scores)


def test_a_mask_of_ones_is_accepted_and_padding_is_refused():
    model = build_model("llama")
    tokens = _tokens()
    config = PatternConfig("duplicate-token", n_sequences=4, length=8)
    plain = pattern_scores(model, tokens, config).scores
    assert pattern_scores(model, tokens, config, attention_mask=torch.ones_like(tokens)).scores == plain
    mask = torch.ones_like(tokens)
    mask[0, 0] = 0
    with pytest.raises(HeadlabError, match="attention_mask"):
        pattern_scores(model, tokens, config, attention_mask=mask)


# --- detection patterns and the score, by hand -----------------------------------------------------------------

def test_detection_patterns_of_a_hand_written_sequence():
    t = torch.tensor([[1, 5, 5, 6, 5]])  # bos, then 5 repeated at once and again later
    previous = [[0, 0, 0, 0, 0],
                [1, 0, 0, 0, 0],
                [0, 1, 0, 0, 0],
                [0, 0, 1, 0, 0],
                [0, 0, 0, 1, 0]]
    duplicate = [[0, 0, 0, 0, 0],
                 [0, 0, 0, 0, 0],
                 [0, 1, 0, 0, 0],  # 5 at 2 repeats 5 at 1
                 [0, 0, 0, 0, 0],
                 [0, 1, 1, 0, 0]]  # 5 at 4 repeats both
    induction = [[0, 0, 0, 0, 0],
                 [0, 0, 0, 0, 0],
                 [0, 0, 1, 0, 0],  # the token after the copy at 1 is the query itself
                 [0, 0, 0, 0, 0],
                 [0, 0, 1, 1, 0]]
    for method, want in [("previous-token", previous), ("duplicate-token", duplicate), ("induction", induction)]:
        got = detection_pattern(method, t)
        assert got.dtype == torch.float32
        assert torch.equal(got[0], torch.tensor(want, dtype=torch.float32)), method
        assert torch.equal(got[0], _reference_pattern(method, t[0].tolist())), method


def test_planted_patterns_score_as_worked_out():
    d = detection_pattern("previous-token", torch.tensor([[1, 5, 5, 6, 5]]))[0]
    perfect = d.clone()
    perfect[0, 0] = 1  # the first query can only attend to itself
    assert float(pattern_score(perfect, d)) == pytest.approx(4 / 5)
    assert float(pattern_score(perfect, d, exclude_bos=True)) == pytest.approx(1.0)
    uniform = torch.tril(torch.ones(5, 5))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    before = uniform.clone()
    assert float(pattern_score(uniform, d)) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 5)
    # Without the diagonal, row i keeps i / (i + 1) of its weight; the previous key keeps 1 / (i + 1).
    kept = sum(i / (i + 1) for i in range(5))
    assert float(pattern_score(uniform, d, exclude_current_token=True)) == pytest.approx(
        (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / kept)
    assert torch.equal(uniform, before)  # the exclusions leave the caller's weights alone


def test_random_repeated_tokens():
    tokens = random_repeated_tokens(VOCAB, 6, 10, 7, BOS, SPECIAL)
    assert tokens.shape == (6, 21) and tokens.dtype == torch.long
    assert (tokens[:, 0] == BOS).all()
    assert torch.equal(tokens[:, 1:11], tokens[:, 11:])
    body = tokens[:, 1:]
    assert not any(bool((body == s).any()) for s in SPECIAL) and bool((body < VOCAB).all())
    assert torch.equal(tokens, random_repeated_tokens(VOCAB, 6, 10, 7, BOS, SPECIAL))
    assert not torch.equal(tokens, random_repeated_tokens(VOCAB, 6, 10, 8, BOS, SPECIAL))
    with pytest.raises(HeadlabError, match="no token id"):
        random_repeated_tokens(3, 1, 4, 0, BOS, SPECIAL)


def test_razor_attentions_four_repeats_equal_the_reference():
    model = build_model("llama")
    tokens = random_repeated_tokens(VOCAB, 3, 5, 4, BOS, SPECIAL, repeats=4)
    assert tokens.shape == (3, 21) and torch.equal(tokens[:, 1:6], tokens[:, 16:21])
    config = PatternConfig("duplicate-token", n_sequences=3, length=5, repeats=4)
    got = pattern_scores(model, tokens, config).scores
    _assert_same(got, _reference_scores(same_weights(model, "llama", "eager"), tokens, "duplicate-token"))
    with pytest.raises(HeadlabError, match="field 'repeats'"):
        PatternConfig("induction", repeats=1)


def test_tokens_for_a_model_skip_its_special_ids():
    tokens = repeated_tokens_for(build_model("llama"), PatternConfig("induction", n_sequences=3, length=5),
                                 build_tokenizer())
    assert tokens.shape == (3, 11) and (tokens[:, 0] == BOS).all()
    assert bool((tokens[:, 1:] > 2).all())


# --- settings and the run folder ------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("method", "bogus"), ("method", None), ("n_sequences", 0), ("length", -1), ("length", 2.5),
    ("batch_size", 0), ("batch_size", True), ("seed", -1), ("exclude_bos", "yes"), ("exclude_current_token", 1),
])
def test_bad_settings_name_their_field(field, value):
    kwargs = {"method": "induction", field: value}
    with pytest.raises(HeadlabError) as err:
        PatternConfig(**kwargs)
    message = str(err.value)
    assert f"field '{field}'" in message and "\n" not in message


def test_settings_changed_after_construction_are_checked_at_run_time():
    config = PatternConfig("induction", n_sequences=2, length=4)
    config.batch_size = 0
    with pytest.raises(HeadlabError, match="field 'batch_size'"):
        pattern_scores(build_model("llama"), _tokens(n=2, length=4), config)


def test_write_head_scores(tmp_path):
    model = build_model("qwen2")
    result = pattern_scores(model, _tokens(), PatternConfig("induction", n_sequences=4, length=8))
    summary = write_head_scores(result, tmp_path / "run")
    scores = load_scores(tmp_path / "run" / SCORES_FILE, result.geometry)
    assert scores == result.scores and len(scores) == 3 * 4 and all(len(v) == 4 for v in scores.values())
    on_disk = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())
    assert on_disk == summary
    assert (on_disk["method"], on_disk["unit"], on_disk["n_sequences"]) == ("induction", "query head", 4)
    assert on_disk["mean_scores"] == pytest.approx({k: sum(v) / len(v) for k, v in scores.items()})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted([SCORES_FILE, SUMMARY_FILE, HEATMAP_FILE])


# --- against TransformerLens itself ---------------------------------------------------------------------------

TL_NAMES = {"previous-token": "previous_token_head", "duplicate-token": "duplicate_token_head",
            "induction": "induction_head"}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_scores_equal_transformer_lens_detect_head(arch, tmp_path):
    """TransformerLens 4 replaced HookedTransformer with TransformerBridge, which wraps the HF model itself: the
    bridge runs the same weights (eager) and TL's own detection patterns and score give the reference."""
    # Importing the bridge quiets transformers' logger and adds a warning filter for the whole process: undo both,
    # so that later tests in this process see transformers as usual.
    hf_logger = logging.getLogger("transformers")
    level = hf_logger.level
    try:
        with warnings.catch_warnings():
            pytest.importorskip("transformer_lens")
            from transformer_lens.head_detector import detect_head
            from transformer_lens.model_bridge import TransformerBridge
    finally:
        hf_logger.setLevel(level)
    from transformers import AutoTokenizer

    build_tokenizer().save_pretrained(tmp_path)  # the bridge wants a tokenizer loaded from a folder
    model = build_model(arch)
    bridge = TransformerBridge.boot_transformers(arch, hf_model=same_weights(model, arch, "eager"),
                                                 tokenizer=AutoTokenizer.from_pretrained(tmp_path), device="cpu")
    tokens = _tokens(seed=4)
    by_name = {f"seq{i}": tokens[i:i + 1] for i in range(len(tokens))}
    # Our token ids, not a round trip through text (a list is looked at before detect_head splits it).
    bridge.to_tokens = lambda seq, *args, **kwargs: (torch.cat([by_name[s] for s in seq]) if isinstance(seq, list)
                                                     else by_name[seq])
    for method in METHODS:
        for flags in [{}, dict(exclude_bos=True, exclude_current_token=True)]:
            want = detect_head(bridge, list(by_name), TL_NAMES[method], **flags)  # [layer, head], mean over seqs
            got = pattern_scores(model, tokens, PatternConfig(method, n_sequences=4, length=8, **flags)).mean
            torch.testing.assert_close(torch.tensor([[got[f"{layer}-{h}"] for h in range(4)] for layer in range(3)]),
                                       want.float(), atol=1e-5, rtol=0)


def test_razor_attention_keeps_the_top_induction_and_echo_heads():
    from headlab.experiments.patterns import razor_attention_heads, top_share

    induction = {f"0-{h}": v for h, v in enumerate([0.9, 0.8, 0.8, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])}
    echo = {f"0-{h}": v for h, v in enumerate([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7])}
    assert top_share(induction, 0.2) == {"0-0", "0-1", "0-2"}  # round(10 * 0.2) = 2, and 0-2 ties with 0-1
    assert top_share(induction, 0.04) == set()  # round(0.4) = 0 heads
    assert razor_attention_heads(induction, echo, 0.1, 0.1) == ["0-0", "0-9"]
    with pytest.raises(HeadlabError, match="ratio must be in"):
        top_share(induction, 1.5)
