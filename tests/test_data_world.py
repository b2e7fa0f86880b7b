"""The toy world generator: deterministic from a seed, facts and questions consistent."""

import random

import pytest

from headlab.core.errors import HeadlabError
from headlab.data.world import DIVERSITY, RELATIONS, World


def _sample(seed: int) -> list[str]:
    w = World(seed)
    rng = random.Random(seed + 1)
    out = []
    for f in w.sample_facts(rng, 10):
        out += [w.fact_sentence(f, rng), w.question(f), w.short_answer(f)]
    out += [w.filler_document(rng, 5, d) for d in DIVERSITY]
    return out


def test_same_seed_same_text_and_different_seed_differs():
    assert _sample(3) == _sample(3)
    assert _sample(3) != _sample(4)


def test_splits_have_disjoint_names_and_wordings():
    tr, ho = World(0, "train"), World(0, "heldout")
    for kind in ("person", "place", "org"):
        assert not set(tr.pools[kind]) & set(ho.pools[kind])
    for rel in RELATIONS.values():
        assert not set(rel.real) & set(rel.heldout)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_answer_is_in_its_fact_sentence(split):
    w = World(1, split)
    rng = random.Random(7)
    for _ in range(200):
        f = w.sample_fact(rng)
        for realism in ("real", "templated"):
            sent = w.fact_sentence(f, rng, realism)
            assert w.short_answer(f) in sent
            # The question names the other slot, which the sentence states too.
            other = f.obj if RELATIONS[f.relation].asks == "s" else f.subject
            assert other in w.question(f) and other in sent


def test_sampled_facts_have_unique_keys():
    w = World(2)
    facts = w.sample_facts(random.Random(0), 30)
    assert len({f.key for f in facts}) == 30
    assert len({w.question(f) for f in facts}) == 30


def test_filler_never_names_an_entity():
    w = World(0)
    rng = random.Random(0)
    names = set(w.people) | set(w.places) | set(w.orgs)
    text = w.filler_document(rng, 300, "diverse")
    assert not any(n in text for n in names)
    rep = w.filler_sentences(rng, 50, "repetitive")
    assert len(set(rep)) <= 5


def test_bad_input_raises_one_line():
    with pytest.raises(HeadlabError, match="field 'split'"):
        World(0, "dev")
    with pytest.raises(HeadlabError, match="field 'diversity'"):
        World(0).filler_sentence(random.Random(0), "varied")
