"""What each synthetic task states and asks: gold needles, the question, answers and plausible distractors.

A `Plan` is the task-level content of one example, independent of the haystack and of length: the sentences
that must appear (each in its own gold document), and a source of distractor sentences that look like them
(same relation, other entities) so that answering needs retrieval, not guessing. Built on the toy world.

Needle realism: `real` draws every wording the world knows for a relation (train and held-out wordings),
over the held-out split's names; `templated` uses the one fixed template per relation; `symbolic` states
key/value pairs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from headlab.data.world import RELATIONS, Fact, World

# Two-hop chains: (first relation, second relation, question). The first fact's object (the bridge) is the
# entity the second fact is about; "{x}" is the first fact's subject.
CHAINS: tuple[tuple[str, str, str], ...] = (
    ("works_at", "based_in", "Where is the employer of {x} based?"),
    ("studied_at", "based_in", "Where is the school where {x} studied based?"),
    ("married_to", "born_in", "Where was the spouse of {x} born?"),
    ("married_to", "lives_in", "Where does the spouse of {x} live?"),
    ("married_to", "works_at", "Where does the spouse of {x} work?"),
    ("married_to", "owns", "What does the spouse of {x} own?"),
    ("works_at", "founded", "Who founded the employer of {x}?"),
    ("studied_at", "founded", "Who founded the school where {x} studied?"),
)


def citation_question(statement: str) -> str:
    """The question of a citation example (shared by the citation plan, the SummHay loader and SQuAD)."""
    return f'Which documents support the statement: "{statement}"?'


@dataclass
class Needle:
    """One sentence to state, in a document with this title."""

    title: str
    sentence: str


@dataclass
class Plan:
    question: str
    answers: list[str]
    gold: list[Needle]                                  # each in its own document, in hop order
    distractors: Callable[[random.Random], list[Needle]]  # one draw: one or two distractor documents
    metadata: dict = field(default_factory=dict)


class _Entities:
    """Draws entities, preferring ones not used yet in this example and never a forbidden one."""

    def __init__(self, world: World, forbidden: set[str]) -> None:
        self.world = world
        self.forbidden = forbidden
        self.used: set[str] = set(forbidden)

    def draw(self, kind: str, rng: random.Random) -> str:
        candidate = self.world.entity(kind, rng)
        for _ in range(50):  # long contexts can exhaust a pool; then reuse anything not forbidden
            if candidate not in self.used:
                break
            candidate = self.world.entity(kind, rng)
        while candidate in self.forbidden:
            candidate = self.world.entity(kind, rng)
        self.used.add(candidate)
        return candidate

    def fact(self, relation: str, rng: random.Random, subject: str | None = None,
             obj: str | None = None) -> Fact:
        rel = RELATIONS[relation]
        s = subject if subject is not None else self.draw(rel.subject_kind, rng)
        o = obj if obj is not None else self.draw(rel.object_kind, rng)
        while o == s:
            o = self.draw(rel.object_kind, rng)
        return Fact(relation, s, o)


def fact_sentence(world: World, fact: Fact, realism: str, rng: random.Random) -> str:
    """`templated`: the relation's fixed template; `real`: any of its train or held-out wordings."""
    rel = RELATIONS[fact.relation]
    fmt = rel.template if realism == "templated" else rng.choice(rel.real + rel.heldout)
    text = fmt.format(s=fact.subject, o=fact.obj)
    return text[0].upper() + text[1:]


def world_for(seed: int, realism: str, split: str | None = None) -> World:
    """The world an example draws names from: held-out names for `real` unless a split is given."""
    return _world(seed, split or ("heldout" if realism == "real" else "train"))


@lru_cache(maxsize=8)
def _world(seed: int, split: str) -> World:
    # Building the name pools costs ~50 ms; a World is only read after construction, so share it.
    return World(seed, split)


# --- symbolic key/value needles ---------------------------------------------------------------------------
def _sym_key(rng: random.Random) -> str:
    letters = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2))
    return f"{letters}-{rng.randrange(10000):04d}"


def _sym_value(rng: random.Random) -> str:
    return f"{rng.randrange(100000):05d}"


class _Keys:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def draw(self, rng: random.Random) -> str:
        key = _sym_key(rng)
        while key in self.used:
            key = _sym_key(rng)
        self.used.add(key)
        return key


def _value_sentence(key: str, value: str) -> str:
    return f"The value of key {key} is {value}."


def _pointer_sentence(key: str, target: str) -> str:
    return f"Key {key} points to key {target}."


# --- plans -------------------------------------------------------------------------------------------------
def mdqa_plan(world: World, realism: str, rng: random.Random) -> Plan:
    """One fact to find among documents stating the same relation about other entities."""
    if realism == "symbolic":
        keys = _Keys()
        key, value = keys.draw(rng), _sym_value(rng)

        def sym_distractor(r: random.Random) -> list[Needle]:
            k = keys.draw(r)
            return [Needle(k, _value_sentence(k, _sym_value(r)))]

        return Plan(f"What is the value of key {key}?", [value], [Needle(key, _value_sentence(key, value))],
                    sym_distractor, {"key": key})
    gold = world.sample_fact(rng)
    asked = gold.obj if RELATIONS[gold.relation].asks == "s" else gold.subject
    ents = _Entities(world, {asked})
    ents.used.add(world.short_answer(gold))

    def distractor(r: random.Random) -> list[Needle]:
        # Two in three share the gold relation: the question's wording alone cannot pick the document.
        relation = gold.relation if r.random() < 2 / 3 else r.choice(sorted(RELATIONS))
        f = ents.fact(relation, r)
        return [Needle(f.subject, fact_sentence(world, f, realism, r))]

    return Plan(world.question(gold), [world.short_answer(gold)],
                [Needle(gold.subject, fact_sentence(world, gold, realism, rng))], distractor,
                {"relation": gold.relation, "fact": [gold.subject, gold.obj]})


def multihop_plan(world: World, realism: str, rng: random.Random) -> Plan:
    """Two chained facts in two documents; distractors are other chains of the same two relations."""
    if realism == "symbolic":
        keys = _Keys()
        a, b, value = keys.draw(rng), keys.draw(rng), _sym_value(rng)

        def sym_chain(r: random.Random) -> list[Needle]:
            x, y = keys.draw(r), keys.draw(r)
            return [Needle(x, _pointer_sentence(x, y)), Needle(y, _value_sentence(y, _sym_value(r)))]

        return Plan(f"What is the value of the key that key {a} points to?", [value],
                    [Needle(a, _pointer_sentence(a, b)), Needle(b, _value_sentence(b, value))], sym_chain,
                    {"chain": [a, b]})
    rel1, rel2, template = rng.choice(CHAINS)
    ents = _Entities(world, set())

    def chain(r: random.Random, forbid: bool = False) -> tuple[Fact, Fact]:
        first = ents.fact(rel1, r)
        if RELATIONS[rel2].asks == "s":  # "who founded the employer": the bridge is the object
            second = ents.fact(rel2, r, obj=first.obj)
        else:
            second = ents.fact(rel2, r, subject=first.obj)
        if forbid:  # nothing else may be said about the gold subject or bridge
            ents.forbidden.update((first.subject, first.obj))
        return first, second

    first, second = chain(rng, forbid=True)

    def distractor(r: random.Random) -> list[Needle]:
        f1, f2 = chain(r)
        return [Needle(f1.subject, fact_sentence(world, f1, realism, r)),
                Needle(f2.subject, fact_sentence(world, f2, realism, r))]

    gold = [Needle(first.subject, fact_sentence(world, first, realism, rng)),
            Needle(second.subject, fact_sentence(world, second, realism, rng))]
    return Plan(template.format(x=first.subject), [world.short_answer(second)], gold, distractor,
                {"chain": [rel1, rel2], "bridge": first.obj})


def citation_plan(world: World, realism: str, rng: random.Random, max_support: int = 2) -> Plan:
    """A statement supported by 1..max_support documents; distractors are near misses that do not support it.

    Near misses: the same subject with another relation, the same relation and object with another subject,
    or any other fact. Under `real` each supporting document may word the fact differently from the statement.
    """
    n_support = rng.randint(1, max_support)
    if realism == "symbolic":
        keys = _Keys()
        key, value = keys.draw(rng), _sym_value(rng)
        statement = _value_sentence(key, value)

        def sym_distractor(r: random.Random) -> list[Needle]:
            k = keys.draw(r)  # half of them share the statement's value under another key
            return [Needle(k, _value_sentence(k, value if r.random() < 0.5 else _sym_value(r)))]

        gold = [Needle(key, statement) for _ in range(n_support)]
        return Plan(citation_question(statement), [""], gold, sym_distractor, {"statement": statement})
    fact = world.sample_fact(rng)
    statement = fact_sentence(world, fact, "templated", rng)
    ents = _Entities(world, {fact.subject, fact.obj})
    same_subject = [r for r, rel in RELATIONS.items()
                    if rel.subject_kind == RELATIONS[fact.relation].subject_kind and r != fact.relation]

    def distractor(r: random.Random) -> list[Needle]:
        roll = r.random()
        if roll < 1 / 3 and same_subject:
            f = ents.fact(r.choice(same_subject), r, subject=fact.subject)
        elif roll < 2 / 3 and fact.relation != "married_to":  # symmetric: another subject would support it
            f = ents.fact(fact.relation, r, obj=fact.obj)
        else:
            f = ents.fact(r.choice(sorted(RELATIONS)), r)
        return [Needle(f.subject, fact_sentence(world, f, realism, r))]

    gold = [Needle(fact.subject, fact_sentence(world, fact, realism, rng)) for _ in range(n_support)]
    return Plan(citation_question(statement), [""], gold, distractor,
                {"relation": fact.relation, "statement": statement})
