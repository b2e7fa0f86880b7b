"""Dataset readers in their published formats; a bad file gets one located line and exit status 2."""

import json

import pytest

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.cot.datasets import load_dataset, parse_categories

BIGBENCH = {
    "keywords": ["logical reasoning"], "preferred_score": "multiple_choice_grade",
    "examples": [
        {"input": "Take 1 step. Turn around. Take 1 step.", "target_scores": {"True": 1, "False": 0}},
        {"input": "Which is leftmost?", "target_scores": {"the red ball": 1, "the blue ball": 0, "the cat": 0}},
        {"input": "How many legs?", "target": ["four", "4"]},
        {"input": "Name the gas.", "target": "Hydrogen"},
    ],
}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bigbench_types_names_and_shuffled_options(tmp_path):
    path = write(tmp_path / "benchmark_tasks" / "navigate" / "task.json", json.dumps(BIGBENCH))
    items = load_dataset(path)
    assert [i.answer_type for i in items] == ["yesno", "mc", "number", "text"]
    assert {i.dataset for i in items} == {"navigate"} and items[0].category == "symbolic"
    assert items[0].gold == ["yes"] and items[2].gold == ["4"] and items[3].gold == ["hydrogen"]
    mc = items[1]
    assert sorted(mc.choices) == sorted(BIGBENCH["examples"][1]["target_scores"])
    assert mc.choices["ABC".index(mc.gold[0])] == "the red ball"
    assert load_dataset(path)[1].choices == mc.choices  # the shuffle is seeded by the item id
    assert load_dataset(path, category="math")[0].category == "math"


def test_nested_bigbench_task_name(tmp_path):
    path = write(tmp_path / "bigbench" / "logical_deduction" / "three_objects" / "task.json", json.dumps(BIGBENCH))
    assert load_dataset(path)[0].dataset == "logical_deduction/three_objects"


def test_gsm8k_commonsenseqa_mmlu(tmp_path):
    gsm = write(tmp_path / "gsm8k_test.jsonl", json.dumps(
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"}) + "\n")
    (g,) = load_dataset(gsm)
    assert (g.answer_type, g.gold, g.category, g.rationale) == ("number", ["7"], "math", "3 + 4 = 7")
    csqa = write(tmp_path / "csqa_dev.jsonl", json.dumps(
        {"id": "x1", "answerKey": "B", "question": {"stem": "Where do fish live?", "choices": [
            {"label": "A", "text": "desert"}, {"label": "B", "text": "water"}]}}) + "\n")
    (c,) = load_dataset(csqa)
    assert (c.answer_type, c.gold, c.choices, c.category) == ("mc", ["B"], ["desert", "water"], "commonsense")
    mmlu = write(tmp_path / "abstract_algebra_test.csv", '"What is 2+2?",3,4,5,6,B\n')
    (m,) = load_dataset(mmlu)
    assert (m.dataset, m.gold, m.choices, m.category) == ("mmlu/abstract_algebra", ["B"], ["3", "4", "5", "6"],
                                                          "knowledge")


@pytest.mark.parametrize("name, text, message", [
    ("gsm.jsonl", '{"question": "q", "answer": "7"}\n', r"gsm.jsonl:1: field 'answer' must be a string ending"),
    ("gsm.jsonl", '{"question": "q", "answer": "#### 7"}\n{"question": "q", "answer": "#### x"}\n',
     r"gsm.jsonl:2: field 'answer': 'x' after '####' is not a number"),
    ("gsm.jsonl", '{"question": "q", "answer": "#### 7"}\n{bad json\n', r"gsm.jsonl:2: invalid JSON"),
    ("csqa.jsonl", '{"question": {"stem": "q", "choices": [{"label": "A", "text": "a"}]}, "answerKey": "C"}\n',
     r"csqa.jsonl:1: field 'answerKey' is missing or not one of the labels"),
    ("mmlu.csv", "q,a,b,c,d,A\nq,a,b,c,d,E\n", r"mmlu.csv:2: column 6 \(answer\) must be a letter A-D"),
    ("mmlu.csv", "q,a,b\n", r"mmlu.csv:1: expected 6 columns"),
    ("task.json", '{"examples": [{"input": "q", "target": "1"}, {"input": "q"}]}',
     r"task.json: examples\[1\]: field 'target_scores' or 'target' is missing"),
    ("task.json", '{"examples": [{"input": 3, "target": "1"}]}', r"task.json: examples\[0\]: field 'input'"),
    ("task.json", '{"examples": [{"input": "q", "target_scores": {"a": "x"}}]}',
     r"examples\[0\]: field 'target_scores' must map option text to a number"),
    ("task.json", '{"examples": []}', r"task.json: field 'examples' is missing or empty"),
    ("task.json", '{"examples": [\n  {"input": }]}', r"task.json:2: invalid JSON"),
    ("data.txt", "hello", r"data.txt: unknown dataset format"),
])
def test_bad_files_get_one_located_line(tmp_path, capsys, name, text, message):
    path = write(tmp_path / name, text)
    with pytest.raises(HeadlabError, match=message):
        load_dataset(path)
    # Through the CLI: one line, exit status 2, before any model is loaded, nothing written.
    out = tmp_path / "run"
    assert main(["cot", "run", "--model", str(tmp_path / "no-model"), "--data", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("headlab: error: ") and str(path) in err[0]
    assert not out.exists()


def test_category_override_and_errors(tmp_path):
    assert parse_categories(["navigate=math"]) == {"navigate": "math"}
    with pytest.raises(HeadlabError, match="expected DATASET=CATEGORY"):
        parse_categories(["navigate"])
