"""Task prompt rendering and token probes on hand-built examples."""

import pytest
from bpe import train_byte_level_bpe

from headlab.core.errors import HeadlabError
from headlab.data.example import Document, TaskExample, render_context
from headlab.data.task_prompts import (
    char_to_token_span,
    render_task_prompt,
    task_probe,
    task_probes,
    task_question,
)

TEXTS = ["Ivo Lenn works at Acme Press. Acme Press is based in Tovesk. The sky is blue."] * 30


@pytest.fixture(scope="module")
def tok():
    return train_byte_level_bpe(TEXTS, vocab_size=300)


def _multihop() -> TaskExample:
    docs = [Document(1, "Sky", "The sky is blue."), Document(2, "Ivo Lenn", "Ivo Lenn works at Acme Press."),
            Document(3, "Acme Press", "The grass is green. Acme Press is based in Tovesk.")]
    context, starts = render_context(docs)
    first = (starts[1], starts[1] + len("Ivo Lenn works at Acme Press."))
    s = starts[2] + len("The grass is green. ")
    second = (s, s + len("Acme Press is based in Tovesk."))
    return TaskExample("m", "multihop", "templated", "repetitive", context,
                       "Where is the employer of Ivo Lenn based?", ["Tovesk"], docs, [2, 3], [first, second])


def test_plain_prompt_is_exact(tok):
    ex = _multihop()
    assert render_task_prompt(ex, tok) == (
        f"{ex.context}\n\nQuestion: Where is the employer of Ivo Lenn based?\n"
        "Answer with a short phrase from the documents.\nAnswer:")
    assert task_question(ex).startswith(ex.question)


def test_probe_first_and_answer_span(tok):
    ex = _multihop()
    first = task_probe(ex, tok)
    needle = tok.decode(first["input_ids"][first["needle_start"]:first["needle_end"]])
    assert needle.strip() == "Ivo Lenn works at Acme Press."
    answer = task_probe(ex, tok, which="answer")  # the span holding "Tovesk": the second hop
    needle = tok.decode(answer["input_ids"][answer["needle_start"]:answer["needle_end"]])
    assert needle.strip() == "Acme Press is based in Tovesk."
    assert answer["input_ids"] == first["input_ids"]
    assert set(first) == {"input_ids", "needle_start", "needle_end"}
    (obj,) = task_probes([ex], tok, which="answer")
    assert (obj.id, obj.needle_start, obj.needle_end) == ("m", answer["needle_start"], answer["needle_end"])
    assert obj.needle_ids == answer["input_ids"][answer["needle_start"]:answer["needle_end"]]
    with pytest.raises(HeadlabError, match="field 'which'"):
        task_probe(ex, tok, which="last")


def test_char_to_token_span_edges():
    offsets = [(0, 0), (0, 3), (3, 4), (4, 9), (9, 10), (0, 0)]
    assert char_to_token_span(offsets, 3, 9) == (2, 4)
    assert char_to_token_span(offsets, 2, 5) == (1, 4)  # straddling tokens are included
    assert char_to_token_span(offsets, 0, 10) == (1, 5)  # special tokens (empty offsets) never count
    with pytest.raises(HeadlabError):
        char_to_token_span(offsets, 10, 12)


def test_probe_without_gold_span_is_an_error(tok):
    ex = _multihop()
    ex.gold_spans = []
    with pytest.raises(HeadlabError, match="gold_spans"):
        task_probe(ex, tok)
