"""`data convert --format squad`: SQuAD v1.1 -> multi-document QA and citation, on a hand-written SQuAD file.

The real tier (`-m real --run-real`) converts the SQuAD v1.1 dev set and renders it with SmolLM2's template."""

import copy
import json
from types import SimpleNamespace

import pytest
from tiny import build_tokenizer

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.data.example import load_examples, save_examples
from headlab.data.metrics import citation_prf, exact_match, parse_citations, token_f1
from headlab.data.squad import SquadConfig, convert_squad, heldout_titles, read_squad
from headlab.data.task_prompts import encode_prompt, render_task_prompt, task_probe
from headlab.data.task_registry import task_score


def _par(context, *qas):
    """A paragraph; each qa is (id, question, [answer texts]) with offsets found in the context."""
    out = []
    for qid, question, texts in qas:
        answers = [{"text": t, "answer_start": context.index(t)} for t in texts]
        out.append({"id": qid, "question": question, "answers": answers})
    return {"context": context, "qas": out}


def _squad():
    data = [
        {"title": "Lake_Orvin", "paragraphs": [
            _par("Lake Orvin lies in the northern hills. Its water is very cold. Fishermen catch trout there.",
                 ("a0", "What do fishermen catch in Lake Orvin?", ["trout", "trout", "trout there"])),
            _par("The lake was named after Orvin Dale in 1821. He mapped the valley on foot.",
                 ("a1", "Who was Lake Orvin named after?", ["Orvin Dale"]),
                 ("a2", "When was the lake named?", ["1821", "in 1821"])),
        ]},
        {"title": "Copper_Bell", "paragraphs": [
            _par("The Copper Bell is a tavern. It opened in 1902 near the old mill.",
                 ("b0", "When did the Copper Bell open?", ["1902"])),
            _par("Its owner, Mira Fenn, brewed dark ale. The ale won a prize at the fair.",
                 ("b1", "What did Mira Fenn brew?", ["dark ale"])),
            _par("The tavern burned in 1950. A bakery now stands on the site.",
                 ("b2", "What stands on the site now?", ["A bakery"])),
        ]},
        {"title": "Glass_Harp", "paragraphs": [
            _par("A glass harp is played with wet fingers. Its tone is clear and soft.",
                 ("c0", "How is a glass harp played?", ["with wet fingers"])),
        ]},
        {"title": "Tern_Island", "paragraphs": [
            _par("Tern Island has about 3.2 thousand residents. Ferries leave twice a day.",
                 ("d0", "How many residents does Tern Island have?", ["about 3.2 thousand"])),
        ]},
        {"title": "Red_Kite", "paragraphs": [
            _par("The red kite is a bird of prey. It feeds mostly on carrion.",
                 ("e0", "What does the red kite feed on?", ["carrion"])),
        ]},
        {"title": "Salt_Road", "paragraphs": [
            _par("The Salt Road ran from the coast to Vell. Merchants paid a toll at Harn.",
                 ("f0", "Where did merchants pay a toll?", ["Harn"])),
        ]},
    ]
    # Like 15 answers of the real dev set: the text starts with a space and the offset is one early.
    qa = data[0]["paragraphs"][1]["qas"][0]
    qa["answers"].append({"text": " Orvin Dale", "answer_start": qa["answers"][0]["answer_start"] - 1})
    return {"version": "1.1", "data": data}


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(_squad()))
    return path


def _by_id(examples):
    return {ex.metadata["source_id"]: ex for ex in examples}


def _check_example(ex, squad):
    """Gold paragraph once at its position, distractors from distinct other articles, spans on the answer."""
    paragraphs = {(a["title"], p["context"]): {q["id"]: q for q in p["qas"]}
                  for a in squad["data"] for p in a["paragraphs"]}
    qid = ex.metadata["source_id"]
    (gold,) = [(t, c) for (t, c), qs in paragraphs.items() if qid in qs]
    pos = ex.metadata["gold_position"]
    texts = [d.text for d in ex.documents]
    assert texts.count(gold[1]) == 1 and texts[pos] == gold[1] and ex.gold_doc_ids == [pos + 1]
    titles = ex.metadata["source_titles"]
    assert titles[pos] == gold[0] == ex.metadata["article"]
    assert len(set(titles)) == len(titles)  # one document per article, none from the gold article but gold
    assert [d.id for d in ex.documents] == list(range(1, len(texts) + 1))
    for doc, title in zip(ex.documents, titles, strict=True):
        assert (title, doc.text) in paragraphs and doc.title == title.replace("_", " ")
    (span,) = ex.span_texts()
    assert span in gold[1]
    doc_start = ex.context.index(gold[1])
    assert doc_start <= ex.gold_spans[0][0] and ex.gold_spans[0][1] <= doc_start + len(gold[1])
    squad_answers = [a["text"].strip() for a in paragraphs[gold][qid]["answers"]]
    located = [ex.context[s:e] for s, e in ex.metadata["answer_spans"]]
    assert located == list(dict.fromkeys(squad_answers))
    assert all(doc_start <= s < e <= doc_start + len(gold[1]) for s, e in ex.metadata["answer_spans"])
    assert located[0] in span
    if ex.task == "mdqa":
        assert ex.answers == located
        assert all(exact_match(a, ex.answers) == 1.0 == token_f1(a, ex.answers) for a in squad_answers)
        assert task_score("mdqa", f"It is {located[0]}.", ex.answers, ex.gold_doc_ids) == 1.0
    else:
        assert ex.answers == [f"[{pos + 1}]"] and located[0] in ex.question
        assert citation_prf(parse_citations(ex.answers[0]), ex.gold_doc_ids)["f1"] == 1.0


@pytest.mark.parametrize("position,expected", [("first", 0), ("middle", 1), ("last", 3), ("2", 2)])
def test_gold_at_requested_position(squad_file, position, expected):
    examples, report = convert_squad(squad_file, SquadConfig(n_docs=4, gold_position=position))
    assert len(examples) == 10 == report["examples"]  # every question once
    for ex in examples:
        assert ex.metadata["gold_position"] == expected and ex.metadata["n_documents"] == 4
        _check_example(ex, _squad())


def test_random_positions_citation_and_round_trip(squad_file, tmp_path):
    examples, _ = convert_squad(squad_file, SquadConfig(n_docs=5, seed=3))
    assert len({ex.metadata["gold_position"] for ex in examples}) > 1
    cites, _ = convert_squad(squad_file, SquadConfig(task="citation", n_docs=5, seed=3))
    for ex in [*examples, *cites]:
        _check_example(ex, _squad())
    # The two tasks share their documents question by question (paired comparisons).
    qa, ci = _by_id(examples), _by_id(cites)
    assert all(qa[k].context == ci[k].context for k in qa)
    out = tmp_path / "o.jsonl"
    save_examples(cites, out)
    assert [e.to_dict() for e in load_examples(out)] == [e.to_dict() for e in cites]


def test_deterministic_and_independent_of_limit(squad_file):
    config = SquadConfig(n_docs=4, seed=1)
    a, _ = convert_squad(squad_file, config)
    b, _ = convert_squad(squad_file, SquadConfig(n_docs=4, seed=1))
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    few, _ = convert_squad(squad_file, SquadConfig(n_docs=4, seed=1, limit=3))
    assert len(few) == 3 and all(e.to_dict() == _by_id(a)[e.metadata["source_id"]].to_dict() for e in few)
    other, _ = convert_squad(squad_file, SquadConfig(n_docs=4, seed=2))
    assert [e.context for e in other] != [e.context for e in a]


def test_train_and_heldout_share_no_article(squad_file):
    titles = {a.title for a in read_squad(squad_file)}
    held = heldout_titles(read_squad(squad_file), 0.34)
    assert len(held) == 2 and held < titles
    train, _ = convert_squad(squad_file, SquadConfig(n_docs=3, split="train", heldout_fraction=0.34, seed=0))
    test, _ = convert_squad(squad_file, SquadConfig(n_docs=2, split="heldout", heldout_fraction=0.34, seed=9))
    seen_train = {t for ex in train for t in ex.metadata["source_titles"]}
    seen_test = {t for ex in test for t in ex.metadata["source_titles"]}
    assert seen_train and seen_test and not seen_train & seen_test
    assert seen_test == held and seen_train == titles - held
    # The split depends on titles only: reversing the file's article order changes nothing.
    flipped = _squad()
    flipped["data"].reverse()
    assert heldout_titles(read_squad_obj(flipped, squad_file.parent), 0.34) == held


def read_squad_obj(obj, folder):
    path = folder / "flipped.json"
    path.write_text(json.dumps(obj))
    return read_squad(path)


def test_squad2_unanswerable_questions_are_skipped(tmp_path):
    obj = _squad()
    obj["data"][3]["paragraphs"][0]["qas"].append(
        {"id": "d1", "question": "Who founded Tern Island?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "Ferries", "answer_start": 45}]})
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(obj))
    examples, _ = convert_squad(path, SquadConfig(n_docs=3))
    assert len(examples) == 10 and "d1" not in _by_id(examples)


def test_max_tokens_fits_prompts(squad_file):
    tok = build_tokenizer()
    full, _ = convert_squad(squad_file, SquadConfig(n_docs=6, gold_position="last"))
    sizes = [len(encode_prompt(tok, render_task_prompt(ex, tok))["input_ids"]) for ex in full]
    # Below the median size, so that most examples lose a distractor or two, but no lower than every question
    # needs for its gold paragraph and one distractor (the tiny BPE's lengths vary from one process to the next).
    for limit in range(sorted(sizes)[len(sizes) // 2] - 20, max(sizes)):
        try:
            examples, report = convert_squad(squad_file, SquadConfig(n_docs=6, gold_position="last",
                                                                     max_tokens=limit), tok)
            break
        except HeadlabError:
            continue
    assert examples and len(examples) + report["skipped_too_long"] == len(full)
    assert any(ex.metadata["n_documents"] < 6 for ex in examples)
    for ex in examples:
        n = len(encode_prompt(tok, render_task_prompt(ex, tok))["input_ids"])
        assert n == ex.metadata["prompt_tokens"] <= limit
        assert ex.metadata["gold_position"] == ex.metadata["n_documents"] - 1 >= 1
        _check_example(ex, _squad())
        probe = task_probe(ex, tok)
        assert probe["needle_start"] < probe["needle_end"] <= len(probe["input_ids"])
    median = sorted(sizes)[len(sizes) // 2]  # half the questions keep all six documents, the rest are skipped
    exact, rep = convert_squad(squad_file, SquadConfig(n_docs=6, gold_position="last", max_tokens=median,
                                                       exact_docs=True), tok)
    assert all(ex.metadata["n_documents"] == 6 for ex in exact) and rep["skipped_too_long"] > 0
    with pytest.raises(HeadlabError, match="field 'max_tokens'"):
        convert_squad(squad_file, SquadConfig(n_docs=6, max_tokens=5), tok)
    with pytest.raises(HeadlabError, match="needs a tokenizer"):
        convert_squad(squad_file, SquadConfig(max_tokens=500))


def test_cli_writes_data_and_config(squad_file, tmp_path, capsys):
    out = tmp_path / "d" / "cite.jsonl"
    rc = main(["data", "convert", str(squad_file), "--format", "squad", "--task", "citation", "--docs", "3",
               "--gold-position", "middle", "--seed", "4", "--limit", "5", "--out", str(out)])
    assert rc == 0 and "wrote 5 examples" in capsys.readouterr().out
    examples = load_examples(out)
    assert len(examples) == 5 and all(ex.gold_doc_ids == [2] and ex.task == "citation" for ex in examples)
    config = json.loads((tmp_path / "d" / "cite.jsonl.config.json").read_text())
    assert config["n_docs"] == 3 and config["seed"] == 4 and config["task"] == "citation"


def test_study_reads_converted_file_as_real_data(squad_file, tmp_path):
    from headlab.study.config import build_config
    from headlab.study.stages import EVAL, build_study, make_data

    train, test = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    save_examples(convert_squad(squad_file, SquadConfig(n_docs=3, split="train", heldout_fraction=0.34))[0], train)
    save_examples(convert_squad(squad_file, SquadConfig(n_docs=2, split="heldout", heldout_fraction=0.34))[0], test)
    config = build_config("quick", real_data={"mdqa": str(train)}, real_eval={"mdqa": str(test)})
    stages = build_study(config, tmp_path / "run").stages
    assert stages["data/mdqa/real/seed0"].inputs["file"] == str(train)  # each fine-tune seed reads the file
    assert stages[f"data/mdqa/{EVAL}"].inputs["file"] == str(test)
    out = tmp_path / "stage"
    out.mkdir()
    make_data(SimpleNamespace(inputs={"file": str(test), "n": 2}, out=out), config)
    made = load_examples(out / "examples.jsonl")
    assert [e.to_dict() for e in made] == [e.to_dict() for e in load_examples(test)[:2]]


def _fails(capsys, tmp_path, src, *extra, names_file=True):
    out = tmp_path / "out.jsonl"
    rc = main(["data", "convert", str(src), "--format", "squad", "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and (str(src) in err or not names_file)
    assert not out.exists() and not (tmp_path / "out.jsonl.config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")]  # no temp file left
    return err


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys):
    not_json = tmp_path / "broken.json"
    not_json.write_text('{"data": [')
    assert "invalid JSON" in _fails(capsys, tmp_path, not_json)

    obj = _squad()
    del obj["data"][1]["paragraphs"][2]["context"]
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(obj))
    assert "field 'data[1].paragraphs[2].context' is missing" in _fails(capsys, tmp_path, missing)

    few = tmp_path / "few.json"
    few.write_text(json.dumps(_squad()))
    err = _fails(capsys, tmp_path, few, "--docs", "7")
    assert "field 'data'" in err and "6 articles" in err and "7 documents" in err

    bad_answer = copy.deepcopy(_squad())
    bad_answer["data"][2]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "with dry hands"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(bad_answer))
    assert "field 'data[2].paragraphs[0].qas[0].answers[0].text'" in _fails(capsys, tmp_path, wrong)

    assert "gold_position" in _fails(capsys, tmp_path, few, "--docs", "3", "--gold-position", "5",
                                  names_file=False)
    assert main(["data", "convert", str(few), "--format", "mdqa", "--docs", "3",
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "applies to --format squad only" in capsys.readouterr().err


# ---- real tier: the SQuAD v1.1 dev set under SmolLM2's tokenizer and chat template -------------------------------

@pytest.mark.real
def test_real_squad_dev_renders_fits_and_scores(squad_dev, real_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(real_model_dir))
    assert tok.chat_template
    # Every answerable question of the whole dev set converts, and its gold answers score 1.
    everything, report = convert_squad(squad_dev, SquadConfig(n_docs=20, seed=0))
    questions = sum(len(p["qas"]) for a in json.loads(squad_dev.read_text())["data"] for p in a["paragraphs"])
    assert len(everything) == questions == report["examples"]
    for ex in everything:
        assert all(ex.context[s:e] == a for (s, e), a in zip(ex.metadata["answer_spans"], ex.answers, strict=True))
        assert all(exact_match(a, ex.answers) == 1.0 == token_f1(a, ex.answers) for a in ex.answers)
        assert ex.answers[0] in ex.span_texts()[0]
    # Held-out MDQA and citation sized for a 1536-token prompt under SmolLM2's template.
    for task in ("mdqa", "citation"):
        examples, report = convert_squad(squad_dev, SquadConfig(task=task, n_docs=10, gold_position="middle",
                                                                max_tokens=1536, split="heldout", limit=40), tok)
        assert len(examples) == 40
        titles = {t for ex in examples for t in ex.metadata["source_titles"]}
        assert titles <= set(report["articles"]) and len(report["articles"]) == 12  # 25% of 48 articles
        for ex in examples:
            prompt = render_task_prompt(ex, tok)
            assert prompt.startswith("<|im_start|>") and ex.context in prompt
            assert prompt.rstrip().endswith("<|im_start|>assistant")
            n = len(encode_prompt(tok, prompt)["input_ids"])
            assert n == ex.metadata["prompt_tokens"] <= 1536 and ex.metadata["n_documents"] >= 5
            probe = task_probe(ex, tok, which="answer")
            needle = tok.decode(probe["input_ids"][probe["needle_start"]:probe["needle_end"]])
            assert ex.span_texts()[0] in needle
            if task == "mdqa":
                assert exact_match(ex.answers[0], ex.answers) == 1.0 == token_f1(ex.answers[0], ex.answers)
                assert task_score("mdqa", ex.answers[0], ex.answers, ex.gold_doc_ids) == 1.0
            else:
                assert task_score("citation", ex.answers[0], ex.answers, ex.gold_doc_ids) == 1.0
