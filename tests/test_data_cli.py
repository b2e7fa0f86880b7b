"""`data make`, `data convert`, `data show` through headlab's CLI."""

import json
import random

import pytest
from bpe import train_byte_level_bpe

from headlab.cli import run
from headlab.core.errors import HeadlabError
from headlab.data.cli import load_tokenizer
from headlab.data.example import load_examples
from headlab.data.world import World


def _run(*argv):
    run(list(argv))  # raises HeadlabError on bad input (main would print it as one line)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    world, rng = World(0), random.Random(0)
    texts = [world.filler_document(rng, 8, "diverse") for _ in range(50)]
    texts += [world.fact_sentence(world.sample_fact(rng), rng) for _ in range(200)]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_byte_level_bpe(texts, vocab_size=600).backend_tokenizer.save(str(path))
    return path


def test_make_then_show(tokenizer_file, tmp_path, capsys):
    out = tmp_path / "d" / "mh.jsonl"
    _run("data", "make", "--task", "multihop", "--needle", "templated", "--haystack", "diverse", "--n", "3",
         "--length", "600", "--tokenizer", str(tokenizer_file), "--seed", "7", "--depth", "0",
         "--out", str(out))
    examples = load_examples(out)
    assert len(examples) == 3 and all(e.metadata["prompt_tokens"] <= 600 for e in examples)
    assert all(e.gold_doc_ids[0] == 1 for e in examples)  # --depth 0
    config = json.loads((tmp_path / "d" / "mh.jsonl.config.json").read_text())
    assert config["task"] == "multihop" and config["seed"] == 7
    capsys.readouterr()
    _run("data", "show", str(out), "--n", "1")
    shown = capsys.readouterr().out
    assert examples[0].question in shown and "3 examples" in shown
    assert f"*[{examples[0].gold_doc_ids[0]}]" in shown
    assert shown.count("== ") == 1


def test_convert_mdqa(tmp_path):
    src = tmp_path / "nq.jsonl"
    ctxs = [{"title": "t", "text": "It is A.", "isgold": True}, {"title": "u", "text": "B.", "isgold": False}]
    src.write_text(json.dumps({"question": "q?", "answers": ["A"], "ctxs": ctxs}) + "\n")
    _run("data", "convert", str(src), "--format", "mdqa", "--out", str(tmp_path / "o.jsonl"))
    (ex,) = load_examples(tmp_path / "o.jsonl")
    assert ex.span_texts() == ["It is A."] and ex.needle_realism == "dataset"


def test_errors(tmp_path, tokenizer_file):
    with pytest.raises(HeadlabError, match="tokenizer not found"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(HeadlabError, match="file not found"):
        _run("data", "show", str(tmp_path / "none.jsonl"))
    with pytest.raises(HeadlabError, match="--length: must be >= 1"):  # refused by the CLI's own bounds
        _run("data", "make", "--task", "mdqa", "--length", "0", "--tokenizer", str(tokenizer_file),
             "--out", str(tmp_path / "x.jsonl"))
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(HeadlabError, match="--needle"):  # an unknown axis value is refused, the option named
        _run("data", "make", "--task", "mdqa", "--needle", "fancy", "--out", "x")
