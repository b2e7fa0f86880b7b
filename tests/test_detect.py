import pytest
import torch
from tiny import CONFIGS, build_model, build_tokenizer

from headlab.data.probes import Probe
from headlab.experiments.detect import DetectConfig, detect_retrieval_heads, unigram_recall, words


def token_probes(n=5, seed=0):
    """Random prompts whose needle covers most of the vocabulary, so random models copy now and then."""
    g = torch.Generator().manual_seed(seed)
    probes = []
    for i in range(n):
        length = 40 + 9 * i  # unequal lengths exercise padding
        ids = torch.randint(3, 96, (length,), generator=g).tolist()
        start = 5 + 3 * i
        end = start + 30
        probes.append(Probe(f"p{i}", ids, start, end))
    return probes


def echo_probes(model, n=5, seed=0):
    """Random prompts followed by the model's own greedy continuation, which is the needle: decoding
    from there tends to repeat it, so even random models make copies to compare."""
    probes = token_probes(n, seed)
    first = detect_retrieval_heads(model, _Tok(), probes, DetectConfig(max_new_tokens=12, keep_failed=True,
                                                                       progress=False))
    return [Probe(p.id, p.input_ids + o.response_ids, len(p.input_ids), len(p.input_ids) + len(o.response_ids))
            for p, o in zip(probes, first.outcomes, strict=True)]


def reference_scores(model, probe, max_new_tokens, stops):
    """docs/definitions.md#retrieval-score applied literally: full eager forward each step, output_attentions,
    loop over heads."""
    ids, response = list(probe.input_ids), []
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    copies = torch.zeros(n_layers, n_heads, device="cpu")  # where detection returns its scores
    with torch.no_grad():
        for _ in range(max_new_tokens):
            out = model(torch.tensor([ids]), output_attentions=True)
            token = int(out.logits[0, -1].argmax())
            for layer, attn in enumerate(out.attentions):
                for head in range(n_heads):
                    i = int(attn[0, head, -1].argmax())  # first maximum: ties go to the lowest index
                    if probe.needle_start <= i < probe.needle_end and probe.input_ids[i] == token:
                        copies[layer, head] += 1
            response.append(token)
            ids.append(token)
            if token in stops:
                break
    return response, copies / (probe.needle_end - probe.needle_start)


class _Tok:
    """The detector needs only decode, pad and eos from a tokenizer for token probes."""
    pad_token_id, eos_token_id = 0, 2

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


# The fast path against the no-cache reference, one probe at a time, on every tiny family (these four
# included): tests/test_architectures.py::test_detect_scores_equal_the_no_cache_reference.


@pytest.mark.parametrize("arch", ["llama", "mistral-gqa", "gpt2"])
def test_batch_size_and_attention_implementation_do_not_change_scores(arch):
    probes = token_probes(n=2, seed=3) + echo_probes(build_model(arch), n=2, seed=3)
    runs = []
    for attn, batch_size in [("sdpa", 1), ("sdpa", 4), ("eager", 4)]:
        model = build_model(arch, attn=attn)
        config = DetectConfig(max_new_tokens=8, batch_size=batch_size, keep_failed=True, progress=False)
        runs.append(detect_retrieval_heads(model, _Tok(), probes, config))
    first = runs[0]
    assert sum(sum(v) for v in first.retrieval_scores().values()) > 0
    for other in runs[1:]:
        assert other.retrieval_scores() == first.retrieval_scores()
        assert [o.response_ids for o in other.outcomes] == [o.response_ids for o in first.outcomes]


def test_success_filter_counts_only_recalled_needles():
    model = build_model("llama")
    probes = token_probes(n=4)
    kept = detect_retrieval_heads(model, _Tok(), probes, DetectConfig(max_new_tokens=8, keep_failed=True,
                                                                       progress=False))
    filtered = detect_retrieval_heads(model, _Tok(), probes, DetectConfig(max_new_tokens=8, progress=False))
    # A random model does not reproduce half of a 30-token needle in 8 tokens: nothing counts.
    assert all(o.recall < 0.5 for o in filtered.outcomes)
    assert not any(o.counted for o in filtered.outcomes)
    assert all(v == [] for v in filtered.retrieval_scores().values())
    assert all(len(v) == 4 for v in kept.retrieval_scores().values())
    # Asking a finished detection to count failed probes gives exactly what keep_failed gives from the start.
    recounted = filtered.recounted(kept.config)
    assert recounted.retrieval_scores() == kept.retrieval_scores()
    assert recounted.summary() == kept.summary()
    assert not any(o.counted for o in filtered.outcomes)  # the original result is left as it was
    # A one-token needle that the model does generate is recalled in full and counts.
    echo = echo_probes(model, n=2)
    seen = detect_retrieval_heads(model, _Tok(), echo, DetectConfig(max_new_tokens=8, keep_failed=True,
                                                                     progress=False))
    p, first = next((p, o.response_ids[0]) for p, o in zip(echo, seen.outcomes, strict=True)
                    if o.response_ids[0] in p.input_ids)
    j = p.input_ids.index(first)
    hit = Probe("hit", p.input_ids, j, j + 1)
    out = detect_retrieval_heads(model, _Tok(), [hit], DetectConfig(max_new_tokens=8, progress=False))
    assert out.outcomes[0].recall == 1.0 and out.outcomes[0].counted
    assert all(len(v) == 1 for v in out.retrieval_scores().values())


def test_stop_token_ends_generation_after_it_is_scored():
    model = build_model("llama")
    probe = token_probes(n=1)[0]
    free = detect_retrieval_heads(model, _Tok(), [probe], DetectConfig(max_new_tokens=10, keep_failed=True,
                                                                        progress=False))
    tokens = free.outcomes[0].response_ids
    stop = tokens[3]
    first = tokens.index(stop)

    class StopTok(_Tok):
        eos_token_id = stop

    model.generation_config.eos_token_id = stop
    out = detect_retrieval_heads(model, StopTok(), [probe], DetectConfig(max_new_tokens=10, keep_failed=True,
                                                                          progress=False))
    assert out.outcomes[0].response_ids == tokens[: first + 1]


def test_text_probes_stop_at_newline_tokens():
    from headlab.mech.generate import stop_ids

    tok = build_tokenizer()
    model = build_model("llama")
    stops = stop_ids(model, tok, stop_at_newline=True)
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert set(newline) <= stops and 2 in stops
    assert tok("Mara", add_special_tokens=False)["input_ids"][0] not in stops
    assert stop_ids(model, tok, stop_at_newline=False) == {2}


def test_unigram_recall_is_rouge1_recall():
    assert unigram_recall(words("Mara was born in Tovesk."), words(" mara was BORN in tovesk")) == 1.0
    assert unigram_recall(words("a b c d"), words("a a b")) == 0.5  # clipped counts
    assert unigram_recall([], [1]) == 0.0


def test_geometry_of_tiny_configs_is_what_tests_assume():
    assert {"llama", "mistral-gqa", "qwen2", "gpt2"} <= set(CONFIGS)
