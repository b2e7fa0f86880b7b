"""Real-dataset loaders on small fixture files written here, including malformed ones."""

import gzip
import json

import pytest

from headlab.core.errors import HeadlabError
from headlab.data.loaders import load_mdqa, load_musique, load_summhay

MDQA = {
    "question": "who wrote the opera carmen",
    "answers": ["Georges Bizet", "Bizet"],
    "ctxs": [
        {"id": "7", "title": "Opera", "text": "Opera is an art form. It began in Italy.", "hasanswer": False,
         "isgold": False},
        {"id": "9", "title": "Carmen", "text": "Carmen is an opera in four acts. It was written by Georges "
         "Bizet in 1875. The libretto is French.", "hasanswer": True, "isgold": True},
        {"id": "3", "title": "Bizet", "text": "Georges Bizet was a French composer.", "hasanswer": True,
         "isgold": False},
    ],
}

MUSIQUE = {
    "id": "2hop__1_2",
    "question": "Where was the founder of Acme Press born?",
    "answer": "Tovesk",
    "answer_aliases": ["Tovesk town"],
    "answerable": True,
    "paragraphs": [
        {"idx": 0, "title": "Brask", "paragraph_text": "Brask is a town.", "is_supporting": False},
        {"idx": 1, "title": "Acme Press", "paragraph_text": "Acme Press prints books. It was founded by Ivo "
         "Lenn.", "is_supporting": True},
        {"idx": 2, "title": "Ivo Lenn", "paragraph_text": "Ivo Lenn liked tea. Ivo Lenn was born in Tovesk.",
         "is_supporting": True},
    ],
    "question_decomposition": [
        {"id": 1, "question": "Acme Press >> founded by", "answer": "Ivo Lenn", "paragraph_support_idx": 1},
        {"id": 2, "question": "Where was #1 born?", "answer": "Tovesk", "paragraph_support_idx": 2},
    ],
}

SUMMHAY = {
    "topic": "Remote work",
    "subtopics": [{"subtopic": "Productivity", "insights": [
        {"insight_id": "i1", "insight": "Remote teams report fewer meetings per week."},
        {"insight_id": "i2", "insight": "Nobody mentions this insight."},
    ]}],
    "documents": [
        {"document_id": f"d{k}", "document_text": f"Doc {k} talks about offices. It is long.",
         "insights_included": []} for k in range(6)
    ],
}
SUMMHAY["documents"][1] = {"document_id": "d1", "document_text": "We spoke to staff. Remote teams now report "
                           "fewer meetings each week. Lunch was good.", "insights_included": ["i1"]}
SUMMHAY["documents"][4] = {"document_id": "d4", "document_text": "In short, fewer meetings per week are "
                           "reported by remote teams. That is all.", "insights_included": ["i1"]}


def _jsonl(path, *objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_mdqa_gold_span_is_answer_sentence_of_gold_doc(tmp_path):
    (ex,) = load_mdqa(_jsonl(tmp_path / "nq.jsonl", MDQA))
    assert ex.task == "mdqa" and ex.answers == ["Georges Bizet", "Bizet"]
    assert ex.gold_doc_ids == [2]  # the isgold document, not the other one that has the answer
    assert ex.span_texts() == ["It was written by Georges Bizet in 1875."]
    assert [d.title for d in ex.documents] == ["Opera", "Carmen", "Bizet"]


def test_mdqa_reads_gzip_and_limit(tmp_path):
    path = tmp_path / "nq.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write((json.dumps(MDQA) + "\n") * 3)
    assert len(load_mdqa(path)) == 3
    assert len(load_mdqa(path, limit=2)) == 2


@pytest.mark.parametrize("mutate, field", [
    (lambda o: o.pop("question"), "question"),
    (lambda o: o.update(answers="Bizet"), "answers"),
    (lambda o: o["ctxs"][1].pop("title"), "ctxs[1].title"),
    (lambda o: o["ctxs"][1].update(isgold=False), "ctxs"),
])
def test_mdqa_malformed(tmp_path, mutate, field):
    bad = json.loads(json.dumps(MDQA))
    mutate(bad)
    path = _jsonl(tmp_path / "nq.jsonl", MDQA, bad)
    with pytest.raises(HeadlabError) as err:
        load_mdqa(path)
    assert f"{path}:2: field '{field}'" in str(err.value)


def test_musique_spans_follow_hop_answers(tmp_path):
    unanswerable = dict(MUSIQUE, id="x", answerable=False)
    (ex,) = load_musique(_jsonl(tmp_path / "m.jsonl", MUSIQUE, unanswerable))
    assert ex.task == "multihop" and ex.answers == ["Tovesk", "Tovesk town"]
    assert ex.gold_doc_ids == [2, 3]
    assert ex.span_texts() == ["It was founded by Ivo Lenn.", "Ivo Lenn was born in Tovesk."]


def test_musique_malformed(tmp_path):
    bad = json.loads(json.dumps(MUSIQUE))
    bad["paragraphs"][2]["is_supporting"] = "yes"
    path = _jsonl(tmp_path / "m.jsonl", bad)
    with pytest.raises(HeadlabError, match=r"m\.jsonl:1: field 'paragraphs\[2\]\.is_supporting'"):
        load_musique(path)


def test_summhay_citation_examples(tmp_path):
    path = tmp_path / "topic.json"
    path.write_text(json.dumps(SUMMHAY))
    (ex,) = load_summhay(path, max_docs=4, seed=1)  # i2 is in no document: skipped
    assert ex.task == "citation" and len(ex.documents) == 4
    assert ex.metadata["insight_id"] == "i1"
    kept = ex.metadata["source_doc_ids"]
    assert "d1" in kept and "d4" in kept and kept == sorted(kept)
    assert ex.gold_doc_ids == [kept.index("d1") + 1, kept.index("d4") + 1]
    assert ex.answers == ["".join(f"[{g}]" for g in ex.gold_doc_ids)]
    assert ex.span_texts() == ["Remote teams now report fewer meetings each week.",
                               "In short, fewer meetings per week are reported by remote teams."]
    assert "fewer meetings per week" in ex.question
    assert load_summhay(path, max_docs=4, seed=1) == [ex]  # seeded distractor choice
    assert len(load_summhay(path, max_docs=None)[0].documents) == 6


def test_summhay_malformed(tmp_path):
    bad = json.loads(json.dumps(SUMMHAY))
    del bad["documents"][3]["insights_included"]
    path = tmp_path / "topic.json"
    path.write_text(json.dumps(bad))
    msg = r"topic\.json: field 'documents\[3\]\.insights_included' is missing"
    with pytest.raises(HeadlabError, match=msg):
        load_summhay(path)
    path.write_text("[1, 2]")
    with pytest.raises(HeadlabError, match="expected a JSON object"):
        load_summhay(path)
    with pytest.raises(HeadlabError, match="file not found"):
        load_summhay(tmp_path / "nope.json")
