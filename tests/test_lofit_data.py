"""LoFiT data: record formats and the TruthfulQA / MQuAKE / CLUTRR loaders, from fixture files, and bad input."""

import json

import pytest
from tiny import build_tokenizer

from headlab.core.errors import HeadlabError
from headlab.lofit.datasets import (
    Completion,
    Preference,
    load_clutrr,
    load_mquake,
    load_records,
    load_truthfulqa,
    truthfulqa_preferences,
)

TOK = build_tokenizer()


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_records_completions_and_preferences(tmp_path):
    comps = load_records(_jsonl(tmp_path / "c.jsonl", [{"prompt": "Q: a?\nA:", "completion": "b",
                                                          "answers": ["bee"]}]), TOK)
    assert comps == [Completion("Q: a?\nA:", ["b", "bee"], id="1")]
    prefs = load_records(_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "y", "rejected": "n"}]), TOK)
    assert prefs == [Preference("Q", "y", "n")]


def test_completion_metric_exact_needs_the_whole_reply(tmp_path):
    from headlab.lofit.evaluate import score_completion

    rows = [{"prompt": "Q", "completion": "Tovesk", "metric": "exact"}, {"prompt": "Q", "completion": "Tovesk"}]
    exact, contains = load_records(_jsonl(tmp_path / "c.jsonl", rows), TOK)
    sentence = "Mara Quill was born in Tovesk."
    assert (exact.task, contains.task) == ("exact", "qa")
    assert score_completion(exact, "tovesk") == 1.0 and score_completion(exact, sentence) == 0.0
    assert score_completion(contains, sentence) == 1.0 and score_completion(contains, "Tove") == 0.0


def test_records_from_task_examples(tmp_path):
    from headlab.data.example import save_examples
    from headlab.data.tasks import GenConfig, generate_examples

    examples = generate_examples(GenConfig("mdqa", "templated", "repetitive", n=2, length=400), TOK)
    save_examples(examples, tmp_path / "t.jsonl")
    recs = load_records(tmp_path / "t.jsonl", TOK)
    assert [r.answers for r in recs] == [e.answers for e in examples]
    assert all(r.task == "mdqa" and e.context in r.prompt for r, e in zip(recs, examples, strict=True))


@pytest.mark.parametrize("rows, match", [
    ([{"prompt": "x"}], r"c.jsonl:1: field 'completion' is missing"),
    ([{"prompt": "x", "completion": "  "}], r"c.jsonl:1: field 'completion' has an invalid value"),
    ([{"prompt": "x", "completion": "y", "answers": "z"}], r"c.jsonl:1: field 'answers'"),
    ([{"prompt": "x", "chosen": "y"}], r"c.jsonl:1: field 'rejected' is missing"),
    ([{"question": "x"}], r"c.jsonl:1: not a LoFiT record"),
    ([{"prompt": "x", "completion": "y"}, {"prompt": "x", "chosen": "y", "rejected": "z"}], r"c.jsonl:2: mixes"),
    ([{"prompt": "x", "completion": "y", "metric": "f1"}], r"c.jsonl:1: field 'metric' must be one of"),
    ([], r"no records"),
])
def test_bad_records(tmp_path, rows, match):
    with pytest.raises(HeadlabError, match=match):
        load_records(_jsonl(tmp_path / "c.jsonl", rows), TOK)


def test_bad_records_json_line(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"prompt": "x", "completion": "y"}\n{oops\n')
    with pytest.raises(HeadlabError, match=r"c.jsonl:2: invalid JSON"):
        load_records(tmp_path / "c.jsonl", TOK)


MC_TASK = [{"question": "What color is the sky?",
            "mc1_targets": {"Blue.": 1, "Green.": 0, "Red.": 0},
            "mc2_targets": {"Blue.": 1, "It is blue.": 1, "Green.": 0}}]


def test_truthfulqa_mc_task_json_and_hf_export(tmp_path):
    (tmp_path / "mc_task.json").write_text(json.dumps(MC_TASK))
    items = load_truthfulqa(tmp_path / "mc_task.json", TOK)
    assert [it.choices for it in items] == [["Blue.", "Green.", "Red."], ["Blue.", "It is blue.", "Green."]]
    assert items[0].mc1_labels == [1, 0, 0] and items[1].mc2_labels == [1, 1, 0]
    assert "What color is the sky?" in items[0].prompt
    hf = {"question": "What color is the sky?",
          "mc1_targets": {"choices": ["Blue.", "Green.", "Red."], "labels": [1, 0, 0]},
          "mc2_targets": {"choices": ["Blue.", "It is blue.", "Green."], "labels": [1, 1, 0]}}
    assert load_truthfulqa(_jsonl(tmp_path / "tqa.jsonl", [hf]), TOK) == items
    pairs = truthfulqa_preferences(items)
    assert [(p.chosen, p.rejected) for p in pairs] == [("Blue.", "Green."), ("It is blue.", "Green.")]


@pytest.mark.parametrize("record, match", [
    ({"mc1_targets": {}, "mc2_targets": {}}, "record 0: field 'question' is missing"),
    ({"question": "q", "mc2_targets": {"a": 1, "b": 0}}, "record 0: field 'mc1_targets' is missing"),
    ({"question": "q", "mc1_targets": {"a": 1, "b": 1}, "mc2_targets": {"a": 1, "b": 0}}, "exactly one true"),
    ({"question": "q", "mc1_targets": {"a": 1, "b": 2}, "mc2_targets": {"a": 1, "b": 0}}, "0/1 labels"),
])
def test_bad_truthfulqa(tmp_path, record, match):
    (tmp_path / "mc.json").write_text(json.dumps([record]))
    with pytest.raises(HeadlabError, match=match):
        load_truthfulqa(tmp_path / "mc.json", TOK)


MQUAKE = [{"case_id": 7,
           "requested_rewrite": [{"prompt": "{} is a citizen of", "subject": "Ann Vey",
                                  "target_new": {"str": "Tovesk"}, "target_true": {"str": "Halden"}}],
           "questions": ["Which country is Ann Vey a citizen of?", "Ann Vey holds citizenship of?"],
           "answer": "Halden", "new_answer": "Tovesk", "new_answer_alias": ["Tovesk Republic"]}]


def test_mquake(tmp_path):
    (tmp_path / "mq.json").write_text(json.dumps(MQUAKE))
    [rec] = load_mquake(tmp_path / "mq.json", TOK)
    assert rec.answers == ["Tovesk", "Tovesk Republic"] and rec.id == "7"
    assert "Ann Vey is a citizen of Tovesk." in rec.prompt and "Which country" in rec.prompt
    broken = [dict(MQUAKE[0], requested_rewrite=[{"prompt": "{} x"}])]
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    with pytest.raises(HeadlabError, match=r"bad.json: case 0: field 'subject'"):
        load_mquake(tmp_path / "bad.json", TOK)


def test_clutrr(tmp_path):
    (tmp_path / "c.csv").write_text('id,story,query,target_text\n'
                                    'a1,"[Ann] took her son [Bob] out.","(\'Ann\', \'Bob\')",son\n')
    [rec] = load_clutrr(tmp_path / "c.csv", TOK)
    assert rec.answers == ["son"] and "[Ann] took her son" in rec.prompt and "How is Bob related to Ann?" in rec.prompt
    (tmp_path / "q.csv").write_text('story,query,target_text\nx,Ann and Bob,son\n')
    with pytest.raises(HeadlabError, match=r"q.csv:2: field 'query'"):
        load_clutrr(tmp_path / "q.csv", TOK)
    (tmp_path / "h.csv").write_text('story,target_text\nx,son\n')
    with pytest.raises(HeadlabError, match=r"h.csv: field 'query' is missing"):
        load_clutrr(tmp_path / "h.csv", TOK)
