"""Metric edge cases on hand-made inputs."""

import pytest

from headlab.core.errors import HeadlabError
from headlab.data.metrics import (
    citation_prf,
    exact_match,
    normalize_answer,
    parse_citations,
    substring_match,
    token_f1,
)
from headlab.data.task_registry import task_score


def test_normalize_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("An apple a day") == "apple day"
    # Articles only as whole words: "theatre" keeps its "the".
    assert normalize_answer("theatre") == "theatre"


def test_exact_match_takes_best_over_aliases():
    assert exact_match("the USA.", ["United States", "USA"]) == 1.0
    assert exact_match("USA today", ["USA"]) == 0.0
    assert exact_match("anything", []) == 0.0


def test_substring_match_is_word_bounded():
    assert substring_match("I think it is Paris, France.", ["paris"]) == 1.0
    assert substring_match("1990", ["1"]) == 0.0
    assert substring_match("in 1 day", ["1"]) == 1.0
    # A gold answer that normalises to nothing never matches.
    assert substring_match("the", ["the"]) == 0.0


def test_token_f1_partial_and_best_alias():
    # pred {new, york, city}, gold {new, york}: P=2/3, R=1 -> F1=0.8
    assert token_f1("New York City", ["New York"]) == pytest.approx(0.8)
    assert token_f1("New York City", ["Boston", "new york city"]) == 1.0
    assert token_f1("Boston", ["New York"]) == 0.0
    assert token_f1("", ["New York"]) == 0.0
    # Repeated tokens count with multiplicity: P=1/3, R=1 -> F1=0.5
    assert token_f1("go go go", ["go"]) == pytest.approx(0.5)
    assert token_f1("x", []) == 0.0


def test_parse_citations_order_and_duplicates():
    assert parse_citations("See [2][5] and [ 2 ], also [10].") == [2, 5, 10]
    assert parse_citations("no ids here, [x] [] (3)") == []


def test_citation_prf_cases():
    assert citation_prf([2, 5], [2, 5]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    r = citation_prf([2, 3, 4], [2, 5])
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(0.5)
    assert r["f1"] == pytest.approx(0.4)
    assert citation_prf([], [1]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert citation_prf([1], []) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert citation_prf([], []) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert citation_prf([7, 7, 7], [7])["precision"] == 1.0


def test_task_score_dispatches_per_task():
    assert task_score("mdqa", "It was Tovesk.", ["Tovesk"], [3]) == 1.0
    assert task_score("multihop", "Brask", ["Tovesk"], [3]) == 0.0
    assert task_score("citation", "[3][4]", ["[3]"], [3]) == pytest.approx(2 / 3)
    with pytest.raises(HeadlabError, match="unknown task 'summary'"):
        task_score("summary", "x", ["x"], [])
