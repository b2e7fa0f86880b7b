import json

import pytest
from tiny import build_tokenizer

from headlab.core.errors import HeadlabError
from headlab.data.niah import insert_at_depth, load_niah_spec, niah_probes
from headlab.data.probe_files import load_probes
from headlab.data.probes import locate_needle, text_probe
from headlab.data.prompts import PLAIN_TEMPLATE


def test_locate_needle_exact_first_window():
    assert locate_needle([9, 1, 2, 3, 4, 1, 2, 3, 4], [1, 2, 3, 4]) == 1


def test_locate_needle_set_overlap_threshold():
    needle = list(range(10, 30))  # 20 distinct tokens
    near = [99] + needle[1:]  # 19/20 = 95% of the needle's set: found (the window before has 90%)
    far = [97, 98, 99] + needle[3:]  # 85%: not found
    assert locate_needle([1, 2] + near + [3], needle) == 2
    assert locate_needle([1, 2] + far + [3], needle) is None
    assert locate_needle([1, 2], needle) is None


def test_text_probe_span_covers_needle_tokens():
    tok = build_tokenizer()
    context = "The grass is green. Mara Quill was born in Tovesk. The sky is blue."
    probe = text_probe(tok, context, "Mara Quill was born in Tovesk.", "Where was Mara Quill born?")
    # The rule takes the FIRST window over 90% overlap, which may start a token early (here at the
    # period before the needle, since "." is also a needle token): Wu et al.'s rule, kept literally.
    span = tok.decode(probe.needle_ids)
    assert "Mara Quill was born in Toves" in span
    assert probe.needle_end - probe.needle_start == len(tok("Mara Quill was born in Tovesk.")["input_ids"])
    assert tok.decode(probe.input_ids) == PLAIN_TEMPLATE.format(context=context,
                                                                question="Where was Mara Quill born?")


def test_needle_not_in_context_is_an_error_naming_the_probe():
    tok = build_tokenizer()
    with pytest.raises(HeadlabError, match="p7: needle not found"):
        text_probe(tok, "The grass is green.", "Bob Stone works at Halden Mills.", "Where?", probe_id="p7")


def test_probe_file_errors_name_line_and_field(tmp_path):
    tok = build_tokenizer()
    path = tmp_path / "probes.jsonl"
    good = {"context": "Mara Quill was born in Tovesk.", "needle": "Mara Quill was born in Tovesk.",
            "question": "Where?"}
    cases = [
        ("{not json", "probes.jsonl:2: invalid JSON"),
        (json.dumps({"needle": "x", "question": "q"}), "probes.jsonl:2: field 'context' is missing"),
        (json.dumps({**good, "question": 3}), "probes.jsonl:2: field 'question' has the wrong type"),
        (json.dumps({"input_ids": [1, 2, 3], "needle_start": 2, "needle_end": 9}),
         "probes.jsonl:2: field 'needle_end'"),
        (json.dumps({**good, "needle": "Bob Stone works at Halden Mills."}), "probes.jsonl:2: field 'needle'"),
    ]
    for bad, message in cases:
        path.write_text(json.dumps(good) + "\n" + bad + "\n")
        with pytest.raises(HeadlabError, match=message):
            load_probes(path, tok)
    path.write_text("\n")
    with pytest.raises(HeadlabError, match="no probes"):
        load_probes(path, tok)


def test_token_and_text_probes_load(tmp_path):
    tok = build_tokenizer()
    path = tmp_path / "probes.jsonl"
    lines = [{"id": "t", "input_ids": [5, 6, 7, 8], "needle_start": 1, "needle_end": 3},
             {"context": "Bob Stone works at Halden Mills.", "needle": "Bob Stone works at Halden Mills.",
              "question": "Where does Bob Stone work?", "answer": "Halden Mills"}]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    token, text = load_probes(path, tok)
    assert (token.id, token.needle_ids, token.is_text) == ("t", [6, 7], False)
    assert text.is_text and text.answer == "Halden Mills" and text.id == "probes.jsonl:2"


def test_insert_at_depth_uses_sentence_boundaries():
    hay = "A one. B two. C three. D four."
    assert insert_at_depth(hay, "N!", 0.0) == "N! A one. B two. C three. D four."
    assert insert_at_depth(hay, "N!", 1.0) == "A one. B two. C three. D four. N!"
    assert insert_at_depth(hay, "N!", 0.5) == "A one. B two. N! C three. D four."


def test_niah_spec_renders_lengths_and_depths(tmp_path):
    tok = build_tokenizer()
    (tmp_path / "hay.txt").write_text("The grass is green. The sky is blue. The river runs north. " * 30)
    spec = tmp_path / "spec.yaml"
    spec.write_text("haystack: ['*.txt']\nneedles:\n  - needle: Mara Quill was born in Tovesk.\n"
                    "    question: Where was Mara Quill born?\nlengths: [80, 160]\ndepths: [0.0, 0.5, 1.0]\n")
    probes = niah_probes(load_niah_spec(spec), tok)
    assert len(probes) == 6
    for p in probes:
        length = int(p.id.split("-len")[1].split("-")[0])
        assert abs(len(p.input_ids) - length) <= 4
        assert "Mara Quill was born in Tove" in tok.decode(p.needle_ids)  # the rule may start a token or two early
    starts = [p.needle_start for p in probes if "len160" in p.id]
    assert starts[0] < starts[1] < starts[2]


def test_niah_spec_errors(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("haystack: [missing.txt]\nneedles: [{needle: a, question: b}]\nlengths: [10]\ndepths: [0]\n")
    with pytest.raises(HeadlabError, match="field 'haystack'"):
        load_niah_spec(spec)
    (tmp_path / "h.txt").write_text("x")
    spec.write_text("haystack: [h.txt]\nneedles: [{needle: a}]\nlengths: [10]\ndepths: [0]\n")
    with pytest.raises(HeadlabError, match=r"needles\[0\]"):
        load_niah_spec(spec)
    spec.write_text("haystack: [h.txt]\nneedles: [{needle: a, question: b}]\nlengths: [10]\ndepths: [2]\n")
    with pytest.raises(HeadlabError, match="field 'depths'"):
        load_niah_spec(spec)
