"""Synthetic task generators: every (task, realism, diversity) cell, two tokenizers, lengths, seeds, depth."""

import random
from pathlib import Path

import pytest
from bpe import train_byte_level_bpe

from headlab.core.errors import HeadlabError
from headlab.data.example import HAYSTACK_DIVERSITIES, NEEDLE_REALISMS, TASKS, example_from_dict
from headlab.data.task_prompts import encode_prompt, render_task_prompt, task_probe
from headlab.data.tasks import GenConfig, generate_example, generate_examples
from headlab.data.world import RELATIONS, World

SHIPPED = Path(__file__).resolve().parents[1] / "headlab" / "assets" / "tiny-llama" / "tokenizer.json"
LENGTH = 700


def _gpt2_style():
    world, rng = World(0), random.Random(0)
    texts = [world.filler_document(rng, 8, d) for d in HAYSTACK_DIVERSITIES for _ in range(40)]
    texts += [world.fact_sentence(world.sample_fact(rng), rng) for _ in range(200)]
    return train_byte_level_bpe(texts, vocab_size=700)


@pytest.fixture(scope="module", params=["gpt2-style", "toy", "shipped"])
def tokenizer(request):
    if request.param == "gpt2-style":
        return _gpt2_style()
    if request.param == "toy":
        from headlab.toy.tokenizer import train_tokenizer
        return train_tokenizer(seed=0, vocab_size=1000, n_docs=120)
    if not SHIPPED.is_file():
        pytest.skip("the shipped tiny-llama tokenizer is not built in this checkout")
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_file=str(SHIPPED))


def _config(task, realism, diversity, **kw):
    kw = {"n": 2, "length": LENGTH, "seed": 3, "doc_sentences": (1, 3), **kw}
    return GenConfig(task, realism, diversity, **kw)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("realism", NEEDLE_REALISMS)
@pytest.mark.parametrize("diversity", HAYSTACK_DIVERSITIES)
def test_every_cell_is_valid(tokenizer, task, realism, diversity):
    for ex in generate_examples(_config(task, realism, diversity), tokenizer):
        assert example_from_dict(ex.to_dict()) == ex  # passes the JSONL validator
        n_tokens = len(encode_prompt(tokenizer, render_task_prompt(ex, tokenizer))["input_ids"])
        assert n_tokens == ex.metadata["prompt_tokens"]
        assert 0.7 * LENGTH <= n_tokens <= LENGTH
        n_gold = {"mdqa": [1], "multihop": [2], "citation": [1, 2]}[task]
        assert len(ex.gold_doc_ids) in n_gold and len(ex.gold_spans) == len(ex.gold_doc_ids)
        assert len(ex.documents) > len(ex.gold_doc_ids)  # at least one distractor
        # Each gold span is a whole sentence inside the text of its gold document.
        by_id = {d.id: d for d in ex.documents}
        for gid, text in zip(ex.gold_doc_ids, ex.span_texts(), strict=True):
            assert text in by_id[gid].text and text.endswith(".")
        # The answer is recoverable from the gold spans.
        if task == "citation":
            assert ex.answers == ["".join(f"[{g}]" for g in ex.gold_doc_ids)]
            if realism != "real":  # under real wording the documents paraphrase the statement
                assert all(f'"{t}"' in ex.question for t in ex.span_texts())
        else:
            assert ex.answers[0] in ex.span_texts()[-1]
        probe = task_probe(ex, tokenizer)
        needle = tokenizer.decode(probe["input_ids"][probe["needle_start"]:probe["needle_end"]])
        assert ex.span_texts()[0] in needle and len(needle) <= len(ex.span_texts()[0]) + 2


def test_seeds_reproduce_and_differ(tokenizer):
    cfg = _config("multihop", "real", "diverse")
    assert generate_examples(cfg, tokenizer) == generate_examples(cfg, tokenizer)
    other = generate_examples(_config("multihop", "real", "diverse", seed=4), tokenizer)
    assert [e.context for e in other] != [e.context for e in generate_examples(cfg, tokenizer)]
    # An example depends on its index only, not on how many come before it.
    assert generate_example(cfg, tokenizer, 1) == generate_examples(cfg, tokenizer)[1]


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_depth_places_the_first_gold_document(tokenizer, depth):
    for ex in generate_examples(_config("mdqa", "templated", "repetitive", n=3, depth=depth), tokenizer):
        n = len(ex.documents)
        assert ex.gold_doc_ids[0] - 1 == round(depth * (n - 1))


def _template_middle(relation):
    template = RELATIONS[relation].template
    return template.split("}", 1)[1].split("{", 1)[0]  # "{s} was born in {o}." -> " was born in "


def test_mdqa_needs_retrieval(tokenizer):
    exs = generate_examples(_config("mdqa", "templated", "diverse", n=8, length=900), tokenizer)
    with_look_alike = 0
    for ex in exs:
        subject, obj = ex.metadata["fact"]
        asked = obj if RELATIONS[ex.metadata["relation"]].asks == "s" else subject
        # The entity the question names is in the gold document only: nothing else can answer it.
        assert [d.id for d in ex.documents if asked in d.text] == ex.gold_doc_ids
        middle = _template_middle(ex.metadata["relation"])
        with_look_alike += sum(middle in d.text for d in ex.documents) >= 2
    assert with_look_alike >= 6  # most examples have a distractor stating the same relation


def test_multihop_entities_and_chain(tokenizer):
    for ex in generate_examples(_config("multihop", "templated", "diverse", n=4, length=900), tokenizer):
        bridge = ex.metadata["bridge"]
        assert [d.id for d in ex.documents if bridge in d.text] == sorted(ex.gold_doc_ids)
        first, second = ex.span_texts()
        assert bridge in first and bridge in second and ex.answers[0] in second


def test_citation_distractors_never_support(tokenizer):
    for ex in generate_examples(_config("citation", "templated", "diverse", n=6, length=900), tokenizer):
        statement = ex.metadata["statement"]
        assert [d.id for d in ex.documents if statement in d.text] == ex.gold_doc_ids


def test_real_uses_heldout_names_and_varied_wordings(tokenizer):
    exs = generate_examples(_config("mdqa", "real", "diverse", n=12, length=500), tokenizer)
    assert {e.metadata["world_split"] for e in exs} == {"heldout"}
    heldout = World(3, "heldout")  # the config's seed
    for e in exs:
        subject, obj = e.metadata["fact"]
        assert subject in heldout.pools[RELATIONS[e.metadata["relation"]].subject_kind]
    templated = [RELATIONS[e.metadata["relation"]].template.format(s=e.metadata["fact"][0],
                                                                   o=e.metadata["fact"][1]) for e in exs]
    reworded = sum(t.lower() != e.span_texts()[0].lower() for t, e in zip(templated, exs, strict=True))
    assert reworded >= 3  # varied wordings, not the fixed template


def test_bad_config_and_too_short(tokenizer):
    with pytest.raises(HeadlabError, match="field 'task'"):
        generate_examples(GenConfig("summary"), tokenizer)
    with pytest.raises(HeadlabError, match="field 'depth'"):
        generate_examples(_config("mdqa", "real", "diverse", depth=1.5), tokenizer)
    with pytest.raises(HeadlabError, match="field 'length'"):
        generate_examples(_config("multihop", "real", "diverse", length=60), tokenizer)


def test_chat_template_probe():
    tok = _gpt2_style()
    tok.chat_template = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    ex = generate_examples(_config("citation", "templated", "repetitive", n=1), tok)[0]
    prompt = render_task_prompt(ex, tok)
    assert prompt.startswith("<|endoftext|>user: Document [1]") and prompt.endswith("assistant:")
    assert "like [2][5]." in prompt
    probe = task_probe(ex, tok)
    assert probe["input_ids"][0] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert probe["input_ids"].count(probe["input_ids"][0]) == 1  # the template's BOS, not a second one
    needle = tok.decode(probe["input_ids"][probe["needle_start"]:probe["needle_end"]])
    assert needle.strip() == ex.span_texts()[0]
