"""The toy world: procedurally generated English-like text with facts, filler and questions.

A `World` is built from a seed and a split. It holds pools of made-up names (people, places,
organisations, objects) and can write:

- fact sentences for a relation, in varied "real" wordings or one fixed template per relation;
- the question that asks for a fact, and its short answer;
- filler sentences and documents at a chosen haystack diversity: ``diverse`` (varied prose),
  ``repetitive`` (the same few sentences), ``symbolic`` (random tokens).

Every draw takes an explicit ``random.Random`` so callers own the random stream; nothing touches global
random state. Two splits, ``train`` and ``heldout``, use disjoint names and disjoint real wordings, so an
evaluation can use names and phrasings the toy model never saw in pretraining.

Example::

    w = World(seed=0)
    rng = random.Random(1)
    fact = w.sample_fact(rng)
    w.fact_sentence(fact, rng)            # "Mara Quill was born in Tovesk."
    w.question(fact)                      # "Where was Mara Quill born?"
    w.short_answer(fact)                  # "Tovesk"
    w.filler_document(rng, 5, "diverse")  # five sentences of prose
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from headlab.core.errors import HeadlabError

SPLITS = ("train", "heldout")
DIVERSITY = ("diverse", "repetitive", "symbolic")
KINDS = ("person", "place", "org", "object")

# --- names -------------------------------------------------------------------------------------------------
# Syllables are chosen so names are pronounceable and split into a few BPE pieces in real tokenizers.
_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "qu", "r", "s",
           "sh", "st", "t", "th", "tr", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ou"]
_CODAS = ["", "l", "n", "r", "s", "th", "nd", "rk", "sk", "m", "x", "ll", "st", "ck"]
_PLACE_ENDS = ["ford", "vik", "esk", "ara", "holm", "wick", "dale", "mouth", "grad", "heim", "ton", "ria"]
_ORG_KINDS = ["Labs", "Foundry", "Institute", "Trading Company", "Press", "Works", "Bank", "Museum",
              "Observatory", "Guild", "Shipyard", "Academy"]
_MATERIALS = ["copper", "silver", "oak", "glass", "iron", "stone", "brass", "ivory", "amber", "velvet",
              "bronze", "cedar", "jade", "pewter", "linen", "marble"]
_THINGS = ["lantern", "compass", "clock", "violin", "telescope", "kettle", "mirror", "chess set", "map",
           "bicycle", "typewriter", "globe", "harp", "camera", "sextant", "music box"]


def _word(rng: random.Random, n_syll: int) -> str:
    # Open syllables with one closing consonant cluster at the end keep names readable ("Marel", "Tovesk").
    core = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n_syll))
    return (core + rng.choice(_CODAS)).capitalize()


def _split_of(name: str) -> str:
    """Deterministic split of a name, independent of the seed: one name in five is held out."""
    return "heldout" if zlib.crc32(name.encode()) % 5 == 0 else "train"


# --- relations ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Relation:
    """A binary relation with its wordings. `asks` says which slot the question asks for."""

    name: str
    subject_kind: str
    object_kind: str
    template: str            # the one fixed wording (templated realism)
    real: tuple[str, ...]    # varied wordings for the train split
    heldout: tuple[str, ...]  # varied wordings seen only in the heldout split
    question: str            # uses {s} or {o}: the slot that is *not* asked for
    asks: str = "o"          # "o": answer is the object; "s": answer is the subject


RELATIONS: dict[str, Relation] = {r.name: r for r in [
    Relation("born_in", "person", "place", "{s} was born in {o}.",
             ("{s} was born in {o}.", "{s} was born in the town of {o}.", "The birthplace of {s} is {o}.",
              "{s} came into the world in {o}."),
             ("{o} is where {s} was born.", "{s} first saw daylight in {o}."),
             "Where was {s} born?"),
    Relation("lives_in", "person", "place", "{s} lives in {o}.",
             ("{s} lives in {o}.", "{s} has a home in {o}.", "These days {s} lives in {o}.",
              "{s} makes a home in the city of {o}."),
             ("{o} is home to {s}.", "{s} resides in {o}."),
             "Where does {s} live?"),
    Relation("works_at", "person", "org", "{s} works at {o}.",
             ("{s} works at {o}.", "{s} is employed by {o}.", "{s} has a job at {o}.",
              "Every morning {s} goes to work at {o}."),
             ("{o} employs {s}.", "{s} earns a living at {o}."),
             "Where does {s} work?"),
    Relation("married_to", "person", "person", "{s} is married to {o}.",
             ("{s} is married to {o}.", "{s} married {o}.", "The spouse of {s} is {o}.",
              "{s} has been married to {o} for years."),
             ("{s} wed {o}.", "{s} took {o} as a partner for life."),
             "Who is {s} married to?"),
    Relation("founded", "person", "org", "{o} was founded by {s}.",
             ("{o} was founded by {s}.", "{s} founded {o}.", "{s} started {o} many years ago.",
              "The founder of {o} is {s}."),
             ("{s} set up {o}.", "{o} owes its existence to its founder, {s}."),
             "Who founded {o}?", asks="s"),
    Relation("owns", "person", "object", "{s} owns {o}.",
             ("{s} owns {o}.", "{s} keeps {o} at home.", "The most prized possession of {s} is {o}.",
              "{s} bought {o} and still owns it."),
             ("{s} is the owner of {o}.", "{s} has owned {o} since childhood."),
             "What does {s} own?"),
    Relation("based_in", "org", "place", "{s} is based in {o}.",
             ("{s} is based in {o}.", "{s} has its headquarters in {o}.", "The offices of {s} are in {o}.",
              "{s} operates from {o}."),
             ("{o} hosts the headquarters of {s}.", "{s} is run from {o}."),
             "Where is {s} based?"),
    Relation("studied_at", "person", "org", "{s} studied at {o}.",
             ("{s} studied at {o}.", "{s} was a student at {o}.", "{s} trained at {o}.",
              "As a young person {s} studied at {o}."),
             ("{o} is where {s} studied.", "{s} is a graduate of {o}."),
             "Where did {s} study?"),
]}


@dataclass(frozen=True)
class Fact:
    """One fact: `relation(subject, obj)`, e.g. Fact("born_in", "Mara Quill", "Tovesk")."""

    relation: str
    subject: str
    obj: str

    @property
    def key(self) -> tuple[str, str]:
        """What the question names: two facts with the same key in one context would make it ambiguous."""
        rel = RELATIONS[self.relation]
        return (self.relation, self.obj if rel.asks == "s" else self.subject)


# --- filler ------------------------------------------------------------------------------------------------
# A small grammar for diverse prose. It never mentions entity names, so filler cannot state a competing fact.
_F_SUBJ = ["The old road", "A cold wind", "The market", "The river", "The small garden", "A grey cat",
           "The morning train", "The library", "An old fisherman", "The bakery", "A quiet child",
           "The harbour", "The village choir", "The north field", "A flock of geese", "The town clock",
           "The school teacher", "The wooden bridge", "A travelling musician", "The evening rain",
           "The farmer", "The lighthouse", "A tired horse", "The summer festival", "The night sky"]
_F_VERB = ["wandered past", "looked over", "stretched along", "waited beside", "drifted toward",
           "rested near", "moved slowly through", "shone above", "ran across", "stood close to",
           "turned away from", "circled around", "echoed across", "settled over", "leaned against"]
_F_OBJ = ["the empty square", "the green hills", "the stone wall", "the busy street", "the frozen lake",
          "the open window", "the tall pines", "the dusty shelves", "the narrow lane", "the sleeping town",
          "the warm kitchen", "the far shore", "the old mill", "the crowded station", "the wheat fields"]
_F_TAIL = ["", "", "", " in the early morning", " after the storm", " for a long while", " without a sound",
           " as the bells rang", " before the sun went down", " on most days", " once again",
           " while the others slept", " during the long winter"]
_F_PLAIN = ["Nobody was in a hurry that day.", "The weather was mild for the season.",
            "It was the kind of afternoon that people remember.", "Bread was cheap and the wine was good.",
            "Some stories are told only once.", "The roads were wet but the air was clear.",
            "Many people came to watch.", "There was little else to do in the evening.",
            "Prices rose a little every year.", "Children played until it grew dark."]
_REPETITIVE = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
               "There and back again."]
_SYM_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


class World:
    """Entity pools and text generators for one seed and one split ("train" or "heldout")."""

    def __init__(self, seed: int = 0, split: str = "train", pool_size: int = 400) -> None:
        if split not in SPLITS:
            raise HeadlabError(f"toy world: field 'split' must be one of {SPLITS}, got {split!r}")
        if pool_size < 4:
            raise HeadlabError(f"toy world: field 'pool_size' must be >= 4, got {pool_size}")
        self.seed = seed
        self.split = split
        rng = random.Random(f"world-{seed}")  # pools depend on the seed only; the split filters them
        self.people = self._pool(rng, pool_size, self._person)
        self.places = self._pool(rng, pool_size, self._place)
        self.orgs = self._pool(rng, pool_size, self._org)
        # Objects are common nouns, not names: the same pool serves both splits.
        self.objects = [f"{'an' if m[0] in 'aeiou' else 'a'} {m} {t}" for m in _MATERIALS for t in _THINGS]
        self.pools: dict[str, list[str]] = {"person": self.people, "place": self.places, "org": self.orgs,
                                            "object": self.objects}

    # pools
    def _pool(self, rng: random.Random, n: int, make) -> list[str]:
        seen: set[str] = set()
        out: list[str] = []
        while len(out) < n:
            name = make(rng)
            if name not in seen:
                seen.add(name)
                if _split_of(name) == self.split:
                    out.append(name)
        return out

    @staticmethod
    def _person(rng: random.Random) -> str:
        return f"{_word(rng, rng.choice([1, 2]))} {_word(rng, 2)}"

    @staticmethod
    def _place(rng: random.Random) -> str:
        return _word(rng, 1) + rng.choice(_PLACE_ENDS)

    @staticmethod
    def _org(rng: random.Random) -> str:
        return f"{_word(rng, 2)} {rng.choice(_ORG_KINDS)}"

    def entity(self, kind: str, rng: random.Random) -> str:
        """A random entity of `kind` (person, place, org, object) from this split's pool."""
        if kind not in self.pools:
            raise HeadlabError(f"toy world: field 'kind' must be one of {KINDS}, got {kind!r}")
        return rng.choice(self.pools[kind])

    # facts
    def sample_fact(self, rng: random.Random, relation: str | None = None) -> Fact:
        """A random fact; `relation` picks one of RELATIONS, else one is drawn."""
        name = relation if relation is not None else rng.choice(sorted(RELATIONS))
        if name not in RELATIONS:
            raise HeadlabError(f"toy world: field 'relation' must be one of {sorted(RELATIONS)}, "
                               f"got {name!r}")
        rel = RELATIONS[name]
        s = self.entity(rel.subject_kind, rng)
        o = self.entity(rel.object_kind, rng)
        while o == s:  # married_to draws both from people
            o = self.entity(rel.object_kind, rng)
        return Fact(name, s, o)

    def sample_facts(self, rng: random.Random, n: int) -> list[Fact]:
        """`n` facts with distinct keys and distinct entities, so every question has one answer."""
        facts: list[Fact] = []
        keys: set[tuple[str, str]] = set()
        used: set[str] = set()
        while len(facts) < n:
            f = self.sample_fact(rng)
            if f.key in keys or f.subject in used or (f.obj in used and RELATIONS[f.relation].object_kind
                                                      != "object"):
                continue
            facts.append(f)
            keys.add(f.key)
            used.update((f.subject, f.obj))
        return facts

    def fact_sentence(self, fact: Fact, rng: random.Random | None = None, realism: str = "real") -> str:
        """The sentence stating `fact`: `real` draws one of the split's wordings, `templated` the fixed
        one."""
        rel = RELATIONS[fact.relation]
        if realism == "templated":
            fmt = rel.template
        elif realism == "real":
            if rng is None:
                raise HeadlabError("toy world: field 'rng' is required for realism 'real'")
            fmt = rng.choice(rel.real if self.split == "train" else rel.heldout)
        else:
            raise HeadlabError(f"toy world: field 'realism' must be 'real' or 'templated' for "
                               f"facts, got {realism!r}")
        text = fmt.format(s=fact.subject, o=fact.obj)
        return text[0].upper() + text[1:]

    def question(self, fact: Fact) -> str:
        """The question whose answer is the fact's asked slot, e.g. "Where was Mara Quill born?"."""
        rel = RELATIONS[fact.relation]
        return rel.question.format(s=fact.subject, o=fact.obj)

    def short_answer(self, fact: Fact) -> str:
        """The short answer to `question(fact)` (an entity name)."""
        return fact.subject if RELATIONS[fact.relation].asks == "s" else fact.obj

    # filler
    def filler_sentence(self, rng: random.Random, diversity: str = "diverse") -> str:
        """One filler sentence at the given haystack diversity."""
        if diversity == "diverse":
            if rng.random() < 0.2:
                return rng.choice(_F_PLAIN)
            return f"{rng.choice(_F_SUBJ)} {rng.choice(_F_VERB)} {rng.choice(_F_OBJ)}{rng.choice(_F_TAIL)}."
        if diversity == "repetitive":
            return rng.choice(_REPETITIVE)
        if diversity == "symbolic":
            words = ["".join(rng.choice(_SYM_CHARS) for _ in range(rng.randint(2, 6)))
                     for _ in range(rng.randint(4, 9))]
            return " ".join(words) + "."
        raise HeadlabError(f"toy world: field 'diversity' must be one of {DIVERSITY}, "
                           f"got {diversity!r}")

    def filler_sentences(self, rng: random.Random, n: int, diversity: str = "diverse") -> list[str]:
        """`n` filler sentences. `repetitive` cycles through the same few sentences in order."""
        if diversity == "repetitive":
            start = rng.randrange(len(_REPETITIVE))
            return [_REPETITIVE[(start + i) % len(_REPETITIVE)] for i in range(n)]
        return [self.filler_sentence(rng, diversity) for _ in range(n)]

    def filler_document(self, rng: random.Random, n_sentences: int, diversity: str = "diverse") -> str:
        """A paragraph of `n_sentences` filler sentences joined by spaces."""
        return " ".join(self.filler_sentences(rng, n_sentences, diversity))
