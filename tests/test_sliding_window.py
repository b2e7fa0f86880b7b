"""Sliding-window layers: their KV cache keeps only the last WINDOW keys, yet every top-1 the seam reports is an
absolute sequence position, and knockout and patching behave as on a model without a cache.

Prompts are 5-9 windows long. References use no cache at all (the whole sequence recomputed every step)."""

import pytest
import torch
from arch_reference import check_uniform_knockout_all_positions, no_cache_greedy, sliding_layers, zero_queries
from test_detect import _Tok, echo_probes, reference_scores, token_probes
from tiny import SLIDING, WINDOW, attention_tuned, build_model, build_tokenizer, padded_batch, same_weights
from transformers import StaticCache

from headlab.core.errors import HeadlabError
from headlab.data.probes import Probe
from headlab.experiments.detect import DetectConfig, detect_retrieval_heads
from headlab.mech.generate import greedy_generate
from headlab.mech.interventions import knockout, patch_from_model
from headlab.model.seam import Seam, cache_kwargs, last_query_top1, output_cache

ALL = [f"{layer}-{h}" for layer in range(3) for h in range(4)]


def test_every_sliding_config_slides():
    for arch in SLIDING:
        model = build_model(arch)
        assert sliding_layers(model), arch
    assert sliding_layers(build_model("gemma3")) == [0, 2]  # alternating with a full layer
    assert sliding_layers(build_model("qwen2-sw")) == [1, 2]


def _full_mask_positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("arch", SLIDING)
def test_top1_is_an_absolute_position_at_every_cached_step(arch):
    """A cached decode (the sliding caches truncated) against the eager attention weights of a no-cache forward
    over the whole sequence, step by step, on a left-padded batch."""
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    seam = Seam.attach(model)
    ids, mask, pos = padded_batch(n=5 * WINDOW, pad=7)
    fed = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(4))
    got = []
    with torch.no_grad(), seam.capture_top1() as rec:
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        got.append(rec.pop())
        step_mask = mask
        for t in range(fed.shape[1]):
            step_mask = torch.cat([step_mask, torch.ones_like(mask[:, :1])], 1)
            out = model(input_ids=fed[:, t:t + 1], attention_mask=step_mask,
                        position_ids=_full_mask_positions(step_mask)[:, -1:], use_cache=True,
                        **cache_kwargs(model, output_cache(out)))
            got.append(rec.pop())
    sliding = sliding_layers(model)
    for step, top1 in enumerate(got):
        seq = torch.cat([ids, fed[:, :step]], 1)
        full = torch.cat([mask, torch.ones_like(fed[:, :step])], 1)
        with torch.no_grad():
            ref = reference(input_ids=seq, attention_mask=full, position_ids=_full_mask_positions(full),
                            output_attentions=True)
        expected = torch.stack([a[:, :, -1].argmax(-1) for a in ref.attentions], dim=1)  # (B, L, H)
        assert torch.equal(top1, expected), f"{arch} step {step}"
        end = seq.shape[1]
        window = top1[:, sliding]
        assert ((window >= end - WINDOW) & (window < end)).all(), "a sliding layer looked outside its window"
        assert (top1[1] >= 7).all(), "padded keys must never be the top-1"
    assert (torch.stack(got)[:, :, sliding] >= WINDOW).any(), "cache indices (< WINDOW) would have passed"


def test_top1_window_without_a_window_mask():
    """Flash attention passes only a padding mask and enforces the window in its kernel: the seam keeps the
    last `sliding_window` keys itself, as a 4D sliding mask would."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 1, 16, generator=g), torch.randn(2, 2, 30, 16, generator=g)
    q[:, 1], q[:, 3] = q[:, 0], q[:, 2]  # query heads of one kv group agree ...
    k[:, 0, 3], k[:, 1, 3] = 10 * q[:, 0, 0], 10 * q[:, 2, 0]  # ... and key 3 wins unless the window hides it
    pad = torch.ones(2, 30, dtype=torch.long)
    pad[1, :2] = 0
    four_d = pad[:, None, None, :].bool() & (torch.arange(30) >= 30 - WINDOW)
    want = last_query_top1(q, k, four_d)
    assert (want >= 30 - WINDOW).all()
    assert torch.equal(last_query_top1(q, k, pad, sliding_window=WINDOW), want)
    assert torch.equal(last_query_top1(q, k, None, sliding_window=WINDOW), want)
    assert (last_query_top1(q, k, pad) < 30 - WINDOW).any()  # the window is what moved it


def _needle_in_window_probes(model, seed):
    """Echo probes put the needle at the end of the prompt, inside the sliding window where sliding layers
    copy from; token probes put it windows away, where only full layers may reach it."""
    return token_probes(n=2, seed=seed) + echo_probes(model, n=3, seed=seed)


@pytest.mark.parametrize("arch", SLIDING)
def test_detect_scores_equal_the_no_cache_reference(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    probes = _needle_in_window_probes(model, seed=1)
    assert min(len(p.input_ids) for p in probes) >= 5 * WINDOW
    config = DetectConfig(max_new_tokens=8, batch_size=1, keep_failed=True, progress=False)
    result = detect_retrieval_heads(model, _Tok(), probes, config)
    total = torch.zeros(3, 4)
    for probe, outcome in zip(probes, result.outcomes, strict=True):
        response, scores = reference_scores(reference, probe, 8, {2})
        assert outcome.response_ids == response
        assert torch.equal(outcome.scores, scores), f"{arch} {probe.id}"
        total += scores
    assert total[sliding_layers(model)].sum() > 0, "sliding layers must copy, or the comparison proves nothing"


@pytest.mark.parametrize("arch", SLIDING)
def test_batch_of_four_left_padded_equals_batch_of_one(arch):
    model = build_model(arch)
    probes = _needle_in_window_probes(model, seed=2)[:4]
    assert len({len(p.input_ids) for p in probes}) == 4  # four lengths: every row but one is padded
    runs = [detect_retrieval_heads(model, _Tok(), probes, DetectConfig(max_new_tokens=8, batch_size=b,
                                                                       keep_failed=True, progress=False))
            for b in (1, 4)]
    assert runs[0].retrieval_scores() == runs[1].retrieval_scores()
    assert [o.response_ids for o in runs[0].outcomes] == [o.response_ids for o in runs[1].outcomes]
    assert sum(sum(v) for v in runs[0].retrieval_scores().values()) > 0


def test_needle_outside_every_window_is_never_copied_by_a_sliding_layer():
    """Mistral slides in every layer: a needle more than a window before every query is invisible to it."""
    model = build_model("mistral-sw")
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 96, (60,), generator=g).tolist()
    probe = Probe("far", ids, 0, 40)  # keys 0..39; the first query sits at 59, its window starts at 52
    result = detect_retrieval_heads(model, _Tok(), [probe], DetectConfig(max_new_tokens=8, keep_failed=True,
                                                                          progress=False))
    assert float(result.outcomes[0].scores.sum()) == 0.0


@pytest.mark.parametrize("arch", SLIDING)
def test_uniform_knockout_all_positions_equals_zeroed_queries(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    ids, mask, pos = padded_batch(n=5 * WINDOW, pad=7)
    heads = ["0-1", "1-2", "2-0", "2-3"]
    check_uniform_knockout_all_positions(model, reference, heads, ids, mask, pos, pad=7)


def _cached_logits(model, ids, mask, fed):
    """Last-position logits of a prefill and then of each token of `fed` fed one at a time with the KV cache:
    [batch, 1 + steps, vocab]."""
    pos = _full_mask_positions(mask)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        logits = [out.logits[:, -1]]
        for t in range(fed.shape[1]):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(input_ids=fed[:, t:t + 1], attention_mask=mask, position_ids=_full_mask_positions(mask)[:, -1:],
                        use_cache=True, **cache_kwargs(model, output_cache(out)))
            logits.append(out.logits[:, -1])
    return torch.stack(logits, dim=1)


@pytest.mark.parametrize("arch", SLIDING)
def test_uniform_knockout_under_cached_decoding_equals_the_no_cache_reference(arch):
    """Decode mode with a truncated sliding cache: a uniform head averages the values of its window only.
    Reference: no cache, the query zeroed from the prompt's last position on (the positions that generate)."""
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    heads = ["0-0", "0-3", "1-1", "2-2"]
    ids, mask, _ = padded_batch(n=6 * WINDOW, pad=9)
    fed = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(8))
    with knockout(model, heads, mode="uniform", where="decode"):
        got = _cached_logits(model, ids, mask, fed)
    plain = _cached_logits(model, ids, mask, fed)
    for row in range(2):
        prompt = ids[row, mask[row].bool()]
        seq = torch.cat([prompt, fed[row]])[None]
        with torch.no_grad(), zero_queries(reference, heads, start=len(prompt) - 1):
            want = reference(input_ids=seq).logits[0, len(prompt) - 1:]
        torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 0.02 * plain.abs().max(), "the knockout must change the logits"
    # headlab's own greedy loop, batched and left-padded, against no-cache greedy decoding
    prompts = [ids[row, mask[row].bool()].tolist() for row in range(2)]
    with knockout(model, heads, mode="uniform", where="decode"):
        tokens = greedy_generate(model, build_tokenizer(), prompts, max_new_tokens=8, batch_size=2,
                                 stop_at_newline=False)
    for row, prompt in enumerate(prompts):
        with zero_queries(reference, heads, start=len(prompt) - 1):
            assert tokens[row] == no_cache_greedy(reference, prompt, 8), f"{arch} row {row}"


@pytest.mark.parametrize("arch", ["mistral-sw", "gemma3"])
def test_z_hook_at_a_cached_step_reads_what_a_no_cache_forward_computes(arch):
    model = build_model(arch)
    seam = Seam.attach(model)
    ids, mask, pos = padded_batch(n=5 * WINDOW, pad=7)
    seen = {}
    hooks = [seam.z_hook(layer, lambda z, layer=layer: seen.__setitem__(layer, z.clone())) for layer in range(3)]
    with torch.no_grad():
        for h in hooks:
            h.__enter__()
        try:
            full = {}
            model(input_ids=ids, attention_mask=mask, position_ids=pos)
            full.update(seen)
            out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True)
            model(input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:], use_cache=True,
                  **cache_kwargs(model, output_cache(out)))
        finally:
            for h in reversed(hooks):
                h.__exit__(None, None, None)
    for layer in range(3):
        assert seen[layer].shape == (2, 1, 4, 16)
        torch.testing.assert_close(seen[layer][:, 0], full[layer][:, -1], atol=1e-4, rtol=1e-4)  # two sdpa paths


@pytest.mark.parametrize("arch", SLIDING)
def test_lockstep_patching_with_sliding_caches_follows_the_source(arch):
    """Every head patched from a source: the target generates what the source generates without any cache."""
    target = build_model(arch)
    source = attention_tuned(target, arch)
    ids, mask, _ = padded_batch(n=5 * WINDOW, pad=9)
    prompts = [ids[row, mask[row].bool()].tolist() for row in range(2)]
    tok = build_tokenizer()
    want = [no_cache_greedy(source, p, 8) for p in prompts]
    assert want != greedy_generate(target, tok, prompts, max_new_tokens=8, batch_size=2, stop_at_newline=False)
    with patch_from_model(target, source, ALL):
        got = greedy_generate(target, tok, prompts, max_new_tokens=8, batch_size=2, stop_at_newline=False)
        one = torch.tensor([prompts[0]])
        hf = target.generate(one, attention_mask=torch.ones_like(one), max_new_tokens=len(want[0]), do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, one.shape[1]:].tolist()
    assert got == want
    assert hf == want[0]


def test_top1_capture_refuses_a_static_cache():
    """A static cache holds unfilled or rolled slots, not a suffix of the sequence: say so, never guess."""
    model = build_model("mistral-sw")
    seam = Seam.attach(model)
    ids = torch.randint(3, 96, (1, 20), generator=torch.Generator().manual_seed(0))
    cache = StaticCache(config=model.config, max_cache_len=64)
    with pytest.raises(HeadlabError, match="dynamic KV cache"), torch.no_grad(), seam.capture_top1():
        model(input_ids=ids, use_cache=True, **cache_kwargs(model, cache))
