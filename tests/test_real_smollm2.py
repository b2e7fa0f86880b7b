"""The real-model tier: headlab on a real pretrained checkpoint (SmolLM2-135M-Instruct, 30 layers x 9 query heads x
3 kv heads, with a chat template) and real text (Paul Graham essays as the needle-in-a-haystack haystack).

Run with `pytest --run-real -m real tests/test_real_smollm2.py`. The model is loaded once per module and the
probes built once, with headlab's own spec builder (headlab.data.niah). Two probe sets, so that heads found on
one are tested on the other:
- `probes_1k`: 2 needles x 3 depths at 1,000 tokens (the reference comparison and the knockout data);
- `probes_2k`: 2 needles x 2 depths at 2,000 tokens (detection, which ranks the heads).
The weights are SmolLM2's Q4_1 GGUF dequantized (tools/real_assets.py), so its logits are not the hub
checkpoint's; nothing here depends on that.
"""

from __future__ import annotations

import os
import statistics

import pytest
import torch
from conftest import _real_asset
from test_detect import reference_scores

from headlab.data.niah import NiahSpec, niah_probes

pytestmark = pytest.mark.real

NEEDLES = [
    {"needle": "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
     "question": "What is the best thing to do in San Francisco?", "answer": "eat a sandwich"},
    {"needle": "The secret ingredient in Aunt Mirela's plum cake is a spoonful of smoked paprika.",
     "question": "What is the secret ingredient in Aunt Mirela's plum cake?", "answer": "smoked paprika"},
]


# ---- fixtures: everything expensive happens once ---------------------------------------------------------------

@pytest.fixture(scope="module")
def smol(real_model_dir):
    """(model, tokenizer) through headlab's loader (SDPA, float32), with every core (the default suite pins torch
    to one thread, right for tiny models and wrong for this one)."""
    from headlab.model.loading import load_model

    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield load_model(real_model_dir)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def haystack(essays_dir) -> str:
    return "\n\n".join(p.read_text(encoding="utf-8") for p in sorted(essays_dir.glob("*.txt")))


@pytest.fixture(scope="module")
def probes_1k(smol, haystack):
    return niah_probes(NiahSpec(haystack, NEEDLES, [1000], [0.2, 0.5, 0.8]), smol[1])


@pytest.fixture(scope="module")
def probes_2k(smol, haystack):
    return niah_probes(NiahSpec(haystack, NEEDLES, [2000], [0.35, 0.65]), smol[1])


@pytest.fixture(scope="module")
def detection_2k(smol, probes_2k):
    from headlab.experiments.detect import DetectConfig, detect_retrieval_heads

    model, tokenizer = smol
    return detect_retrieval_heads(model, tokenizer, probes_2k, DetectConfig(max_new_tokens=32, progress=False))


@pytest.fixture(scope="module")
def ranking(detection_2k) -> list[str]:
    from headlab.mech.heads import mean_scores, scored_ranking

    return scored_ranking(mean_scores(detection_2k.retrieval_scores()))


# ---- (b) prompts: the chat template, the needle inside the user's message ------------------------------------

def test_probes_use_the_chat_template_and_the_needle_lies_in_the_user_message(smol, probes_1k, probes_2k):
    _, tokenizer = smol
    assert tokenizer.chat_template
    user_header = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assistant = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for p, length in [(p, 1000) for p in probes_1k] + [(p, 2000) for p in probes_2k]:
        ids = p.input_ids
        assert abs(len(ids) - length) <= 2, p.id  # sized with the real tokenizer and the template's overhead
        assert ids[-len(assistant):] == assistant, p.id  # ends with the generation prompt
        starts = [i for i in range(len(ids)) if ids[i:i + len(user_header)] == user_header]
        assert len(starts) == 1, p.id
        user_start = starts[0] + len(user_header)
        user_end = ids.index(end_of_turn, user_start)
        assert user_start <= p.needle_start < p.needle_end <= user_end, p.id
        # The span is docs/definitions.md#probe's (Wu et al.'s) first window over 90% of the needle's token set. In
        # prose the sentence before the needle ends in ".", a needle token too, so the window starts a token or two
        # before the needle's exact occurrence and leaves its last tokens out (the test of probes.py shows the same).
        needle_ids = tokenizer(" " + p.needle, add_special_tokens=False)["input_ids"]
        exact = next(i for i in range(len(ids)) if ids[i:i + len(needle_ids)] == needle_ids)
        assert exact - 2 <= p.needle_start <= exact, p.id
        assert tokenizer.decode(needle_ids[:-2]) in tokenizer.decode(p.needle_ids), p.id


# ---- (a) headlab's scores equal the literal no-cache reference -------------------------------------------------

def test_retrieval_scores_equal_the_no_cache_reference(smol, real_model_dir, probes_1k):
    """Per probe and head, headlab's scores (SDPA prefill, KV-cache decode, top-1 from query x cached keys) equal
    docs/definitions.md#retrieval-score applied literally: each step recomputes the whole sequence with eager
    attention and output_attentions=True, top-1 per head (tests/test_detect.py's reference). Three decoding steps
    per probe keep the reference, a full 1K-token forward per step, inside the tier's time."""
    from headlab.experiments.detect import DetectConfig, detect_retrieval_heads
    from headlab.mech.generate import stop_ids
    from headlab.model.loading import load_model

    model, tokenizer = smol
    steps = 3
    result = detect_retrieval_heads(model, tokenizer, probes_1k, DetectConfig(max_new_tokens=steps,
                                                                               keep_failed=True, progress=False))
    eager, _ = load_model(real_model_dir, attn_implementation="eager")
    stops = stop_ids(eager, tokenizer, stop_at_newline=True)
    copies = 0.0
    for probe, outcome in zip(probes_1k, result.outcomes, strict=True):
        response, scores = reference_scores(eager, probe, steps, stops)
        assert outcome.response_ids == response, probe.id
        assert torch.equal(outcome.scores, scores), probe.id
        copies += float(scores.sum())
    assert len(probes_1k) >= 6
    assert copies > 0, "the probes must produce copies, or the comparison proves nothing"


# ---- (c) retrieval heads exist and are few ----------------------------------------------------------------------

def test_retrieval_heads_exist_and_are_a_small_fraction(detection_2k):
    from headlab.mech.heads import mean_scores, select_heads

    assert sum(o.counted for o in detection_2k.outcomes) >= 3  # the model retrieves the needles
    means = mean_scores(detection_2k.retrieval_scores())
    heads = select_heads(means, threshold=0.1)
    total = detection_2k.geometry.total_heads
    print(f"\nretrieval heads (mean >= 0.1): {len(heads)} of {total}: "
          + ", ".join(f"{h} {means[h]:.2f}" for h in heads))
    assert total == 30 * 9
    assert 1 <= len(heads) <= 0.1 * total
    assert max(means.values()) >= 0.3


# ---- (d) knockout: the top 10 matter, 10 random heads do not -----------------------------------------------------

def test_knocking_out_the_top_10_hurts_niah_far_more_than_10_random_heads(smol, probes_1k, ranking):
    from headlab.experiments.evaluate import items_from_probes
    from headlab.experiments.knockout import KnockoutConfig, run_knockout

    model, tokenizer = smol
    config = KnockoutConfig(k=10, mode="uniform", where="decode", seeds=3, curve=[], max_new_tokens=24,
                            batch_size=1, progress=False)
    result = run_knockout(model, tokenizer, items_from_probes(probes_1k), ranking, config)
    print(f"\nNIAH accuracy on {result['n_items']} probes: baseline {result['baseline']:.2f}, top-10 knocked out "
          f"{result['top']:.2f}, 10 random {result['random']} (top: {', '.join(result['top_heads'])})")
    # Measured (2-core CPU, float32): baseline 1.00, top 10 0.50, random 0.83 / 1.00 / 1.00. "Far more": the top
    # 10 lose at least 2 of the 6 probes, and at least 3 times what 10 random heads lose on average.
    assert result["baseline"] >= 5 / 6
    top_drop = result["baseline"] - result["top"]
    random_drop = result["baseline"] - statistics.fmean(result["random"])
    assert top_drop >= 2 / 6 - 1e-9
    assert random_drop <= top_drop / 3 + 1e-9


# ---- (e) LoFiT: an offset merged into the real model equals the hooked model -------------------------------------

def test_lofit_offsets_merged_into_the_real_model_give_the_hooked_logits(smol, ranking):
    from headlab.lofit.adapter import LofitAdapter, apply_adapters
    from headlab.lofit.merge import max_logit_difference, merge_into_model
    from headlab.mech.heads import parse_head
    from headlab.model.seam import Seam

    model, tokenizer = smol
    geometry = Seam.attach(model).geometry
    heads = [parse_head(h) for h in ranking[:8]]  # 3% of 270 heads, as LoFiT's default
    adapter = LofitAdapter(heads, geometry, offset=True, init_std=0.5, seed=0)
    merged = merge_into_model(model, [adapter])
    assert merged.config.attention_bias  # a Llama: the offsets became o_proj biases
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What do founders need most?"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        plain = model(ids).logits
        with apply_adapters(model, adapter):
            hooked = model(ids).logits
    assert float((hooked - plain).abs().max()) > 1e-2  # the offsets do change the model
    assert max_logit_difference(model, merged, [adapter], ids) < 1e-3


# ---- (f) task data generated and sized with the real tokenizer and chat template --------------------------------

@pytest.mark.parametrize("task", ["mdqa", "multihop", "citation"])
def test_task_data_is_sized_with_the_real_tokenizer(smol, task):
    from headlab.data.task_prompts import task_probes
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.data.training import prompt_ids

    _, tokenizer = smol
    examples = generate_examples(GenConfig(task, "real", "diverse", n=3, length=1024), tokenizer)
    probes = task_probes(examples, tokenizer)
    assistant = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for ex, probe in zip(examples, probes, strict=True):
        ids = prompt_ids(ex, tokenizer)
        assert ex.metadata["prompt_tokens"] == len(ids)
        assert 0.9 * 1024 <= len(ids) <= 1024, (ex.id, len(ids))  # filled, never over
        assert ids[-len(assistant):] == assistant and probe.input_ids == ids
        s, e = ex.gold_spans[0]
        assert ex.context[s:e].strip() in tokenizer.decode(probe.needle_ids)


# ---- GGUF input: the user's GGUF file is the same model as the converted folder ----------------------------------

def test_gguf_file_loads_as_the_converted_checkpoint(smol):
    pytest.importorskip("gguf")
    from headlab.model.loading import load_model

    path = _real_asset(lambda a: a.smollm2_gguf())
    model, tokenizer = smol
    from_gguf, gguf_tokenizer = load_model(path)
    reference = model.state_dict()
    for name, tensor in from_gguf.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Where is Dolores Park?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
