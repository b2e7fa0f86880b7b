"""The task-example JSONL format: round trip and located errors on malformed lines."""

import json

import pytest

from headlab.core.errors import HeadlabError
from headlab.data.example import Document, TaskExample, load_examples, render_context, save_examples


def _example() -> TaskExample:
    docs = [Document(1, "Tovesk", "Mara Quill was born in Tovesk. The sky is blue."),
            Document(2, "Brask", "Ivo Lenn was born in Brask.")]
    context, starts = render_context(docs)
    span = (starts[0], starts[0] + len("Mara Quill was born in Tovesk."))
    return TaskExample("ex-0", "mdqa", "templated", "repetitive", context, "Where was Mara Quill born?",
                       ["Tovesk"], docs, [1], [span], {"seed": 3})


def test_render_context_layout_and_offsets():
    ex = _example()
    assert ex.context.startswith("Document [1] (Title: Tovesk) Mara Quill")
    assert "\n\nDocument [2] (Title: Brask) Ivo Lenn" in ex.context
    assert ex.span_texts() == ["Mara Quill was born in Tovesk."]


def test_round_trip(tmp_path):
    path = tmp_path / "ex.jsonl"
    save_examples([_example(), _example()], path)
    loaded = load_examples(path)
    assert loaded == [_example(), _example()]
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def _write_with(tmp_path, **changes):
    obj = _example().to_dict()
    for key, value in changes.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    good = json.dumps(_example().to_dict())
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n\n" + json.dumps(obj) + "\n")
    return path


@pytest.mark.parametrize("changes, field", [
    ({"task": "summary"}, "task"),
    ({"needle_realism": "fancy"}, "needle_realism"),
    ({"context": None}, "context"),
    ({"answers": []}, "answers"),
    ({"answers": ["a", 3]}, "answers"),
    ({"documents": [{"id": "1", "title": "t", "text": "x"}]}, "documents[0].id"),
    ({"documents": [{"id": 1, "text": "x"}]}, "documents[0].title"),
    ({"gold_doc_ids": [9]}, "gold_doc_ids"),
    ({"gold_spans": [[5, 2]]}, "gold_spans[0]"),
    ({"gold_spans": [[0, 10 ** 6]]}, "gold_spans[0]"),
    ({"gold_spans": [[0, True]]}, "gold_spans[0]"),
    ({"metadata": []}, "metadata"),
])
def test_malformed_line_names_file_line_field(tmp_path, changes, field):
    path = _write_with(tmp_path, **changes)
    with pytest.raises(HeadlabError) as err:
        load_examples(path)
    msg = str(err.value)
    assert f"{path}:3:" in msg  # line 3: line 2 is blank and skipped
    assert f"'{field}'" in msg


def test_not_json_is_located(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(HeadlabError, match=r"x\.jsonl:1"):
        load_examples(path)
