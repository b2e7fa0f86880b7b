"""Answer extraction on hand-written responses of every answer type, malformed ones included."""

import pytest

from headlab.cot.datasets import Item
from headlab.cot.extract import extract, is_correct


def item(kind, gold, choices=()):
    return Item("t:0", "t", "math", kind, "q", gold, list(choices))


MC = item("mc", ["B"], ["The black book is the leftmost.", "The blue book is the leftmost.", "plausible"])
NUM = item("number", ["109"])
YN = item("yesno", ["no"])
TXT = item("text", ["hydrogen"])


@pytest.mark.parametrize("response, it, answer, status", [
    # multiple choice: letter forms, option text, an answer statement on the next line
    ("Let me think. The orange book is left of the blue.\nThe answer is (B).", MC, "B", "ok"),
    ("The answer is B.", MC, "B", "ok"),
    ("Answer: B) The blue book is the leftmost.", MC, "B", "ok"),
    ("So the answer is: the blue book is the leftmost.", MC, "B", "ok"),
    ("The answer is:\n\n**C**", MC, "C", "ok"),
    ("B", MC, "B", "fallback"),
    ("The answer is A blue book is the leftmost.", MC, "B", "ok"),     # "A" is an article here, the option text decides
    ("The answer is (A) or (B).", MC, None, "ambiguous"),
    ("The answer is A. On reflection, the answer is B.", MC, None, "ambiguous"),
    ("The answer is (D).", MC, None, "none"),             # not one of the options
    ("I cannot tell which book it is.", MC, None, "none"),
    # numbers: commas, dollars, words, derivations, decimals
    ("80 + 29 = 109. The answer is 109.", NUM, "109", "ok"),
    ("The answer is $1,234.50.", NUM, "1234.5", "ok"),
    ("The answer is three.", NUM, "3", "ok"),
    ("The answer is 80 + 29 = 109.", NUM, "109", "ok"),
    ("First 80, then 29 more.\nSo 80 plus 29 makes 109", NUM, "109", "fallback"),
    ("The answer is 12. Wait, the answer is 15.", NUM, None, "ambiguous"),
    ("The answer is 12 or 13.", NUM, None, "ambiguous"),
    ("", NUM, None, "none"),
    ("I do not know.", NUM, None, "none"),
    # yes / no
    ("Turn around twice and you face forward. The answer is No.", YN, "no", "ok"),
    ("The answer is True.", YN, "yes", "ok"),
    ("Yes", YN, "yes", "fallback"),
    ("The answer is yes or no.", YN, None, "ambiguous"),
    ("The answer is yes. The answer is no.", YN, None, "ambiguous"),
    ("Hard to say.", YN, None, "none"),
    # short text
    ("Atomic number 1 is the lightest. The answer is Hydrogen.", TXT, "hydrogen", "ok"),
    ("The answer is hydrogen. The answer is helium.", TXT, None, "ambiguous"),
])
def test_extract(response, it, answer, status):
    got = extract(response, it, "cot")
    assert (got.answer, got.status) == (answer, status)


def test_direct_falls_back_on_the_first_line_cot_on_the_last():
    text = "Yes\nbut no, thinking again"
    assert extract(text, YN, "direct").answer == "yes"
    assert extract(text, YN, "cot").answer == "no"


def test_is_correct():
    assert is_correct("109", NUM) and is_correct("109.0", NUM) and not is_correct("108", NUM)
    assert is_correct("B", MC) and not is_correct("A", MC) and not is_correct(None, MC)
    assert is_correct("The Hydrogen", TXT) and not is_correct("helium", TXT)
    assert is_correct("no", YN) and not is_correct("yes", YN)
