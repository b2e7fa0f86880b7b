"""`headlab heads score`: each method writes the detection run folder plus kv-head scores; bad input is one line."""

import json

import pytest
from test_cli_detect import GOOD, _fails, write_jsonl

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.mech.heads import load_scores, mean_scores
from headlab.mech.kv_heads import kv_head_of, kv_head_scores
from headlab.model.geometry import HeadGeometry


@pytest.mark.parametrize("method", ["retrieval", "attention-mass"])
def test_heads_score_writes_query_and_kv_head_scores(method, tiny_model_dir, tmp_path, capsys):
    probes = write_jsonl(tmp_path / "p.jsonl", [GOOD, {"input_ids": list(range(3, 60)), "needle_start": 10,
                                                       "needle_end": 30}])
    out = tmp_path / "out"
    code = main(["heads", "score", "--method", method, "--model", str(tiny_model_dir), "--probes", str(probes),
                 "--out", str(out), "--max-new-tokens", "5", "--keep-failed", "--kv-reduce", "mean"])
    assert code == 0
    scores = load_scores(out / "retrieval_scores.json")
    assert len(scores) == 3 * 4 and all(len(v) == 2 for v in scores.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["method"] == method and summary["config"]["unit"] == "query head"
    kv = json.loads((out / "kv_scores.json").read_text())
    assert kv["unit"] == "kv head" and kv["reduce"] == "mean"
    assert kv["mean_scores"] == kv_head_scores(mean_scores(scores), HeadGeometry(3, 4, 4, 16), "mean")
    assert f"{method}: probes 2 given, 2 counted" in capsys.readouterr().out


def test_pattern_methods_score_random_repeated_sequences(tiny_model_dir, tmp_path, capsys):
    from tiny import build_tokenizer

    from headlab.experiments.patterns import PatternConfig, pattern_scores, repeated_tokens_for
    from headlab.model.loading import load_model

    out = tmp_path / "out"
    assert main(["heads", "score", "--method", "induction", "--model", str(tiny_model_dir), "--out", str(out),
                 "--sequences", "3", "--length", "6", "--batch-size", "2"]) == 0
    scores = load_scores(out / "retrieval_scores.json")
    assert all(len(v) == 3 for v in scores.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "induction" and summary["unit"] == "query head"
    assert summary["config"]["model"] == str(tiny_model_dir)
    model, _ = load_model(tiny_model_dir)
    config = PatternConfig(method="induction", n_sequences=3, length=6, batch_size=3)
    want = pattern_scores(model, repeated_tokens_for(model, config, build_tokenizer()), config)
    assert mean_scores(scores) == pytest.approx(want.mean, abs=1e-6)  # the library's numbers, batch size aside
    assert (out / "kv_scores.json").is_file() and (out / "retrieval_heads.png").is_file()
    assert "induction: 3 random repeated sequences" in capsys.readouterr().out


def test_razor_attention_keeps_the_top_induction_and_echo_heads(tiny_model_dir, tmp_path):
    from headlab.experiments.patterns import razor_attention_heads

    out = tmp_path / "out"
    assert main(["heads", "score", "--method", "razor-attention", "--model", str(tiny_model_dir), "--out", str(out),
                 "--sequences", "3", "--length", "6", "--repeats", "4", "--induction-ratio", "0.25",
                 "--echo-ratio", "0.1"]) == 0
    config = json.loads((out / "summary.json").read_text())["config"]
    kept = razor_attention_heads(config["induction_means"], config["echo_means"], 0.25, 0.1)
    assert config["kept"] == kept and 3 <= len(kept) <= 4 + 1  # round(12 * 0.25) induction heads, round(1.2) echo
    scores = load_scores(out / "retrieval_scores.json")
    assert sorted(h for h, v in scores.items() if v == [1.0]) == sorted(kept)
    assert all(v in ([0.0], [1.0]) for v in scores.values())


def test_methods_differ_on_the_same_probes(tiny_model_dir, tmp_path):
    probes = write_jsonl(tmp_path / "p.jsonl", [{"input_ids": list(range(3, 60)), "needle_start": 10,
                                                 "needle_end": 30}])
    means = {}
    for method in ("retrieval", "attention-mass"):
        out = tmp_path / method
        assert main(["heads", "score", "--method", method, "--model", str(tiny_model_dir), "--probes", str(probes),
                     "--out", str(out), "--max-new-tokens", "5", "--keep-failed"]) == 0
        means[method] = mean_scores(load_scores(out / "retrieval_scores.json"))
    assert means["retrieval"] != means["attention-mass"]
    assert all(0 <= v <= 1 for v in means["attention-mass"].values())


def test_query_focused_scores_task_examples_as_the_library_does(tiny_model_dir, tmp_path, capsys):
    from tiny import write_task_file

    from headlab.data.example import load_examples
    from headlab.data.prompts import pad_id_of
    from headlab.experiments.query_focused import query_focused_scores, query_inputs
    from headlab.model.loading import load_model

    data = write_task_file(tmp_path / "t.jsonl", tiny_model_dir, n=3, length=400, seed=0)
    out = tmp_path / "out"
    assert main(["heads", "score", "--method", "query-focused", "--model", str(tiny_model_dir), "--probes",
                 str(data), "--out", str(out), "--batch-size", "2"]) == 0
    scores = load_scores(out / "retrieval_scores.json")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "query-focused" and summary["unit"] == "query head" and summary["n_examples"] == 3
    model, tokenizer = load_model(tiny_model_dir)
    want = query_focused_scores(model, query_inputs(load_examples(data), tokenizer), pad_id=pad_id_of(tokenizer))
    assert mean_scores(scores) == pytest.approx(want.mean, abs=1e-6)
    kv = json.loads((out / "kv_scores.json").read_text())
    assert kv["unit"] == "kv head"
    assert kv["mean_scores"] == pytest.approx(kv_head_scores(want.mean, HeadGeometry(3, 4, 4, 16)), abs=1e-6)
    assert "query-focused: 3 examples" in capsys.readouterr().out


def test_query_focused_refuses_probes_and_examples_without_gold_documents(tiny_model_dir, tmp_path, capsys):
    from tiny import write_task_file

    out = tmp_path / "out"
    base = ["heads", "score", "--method", "query-focused", "--model", str(tiny_model_dir), "--out", str(out)]
    probes = write_jsonl(tmp_path / "p.jsonl", [GOOD])
    _fails(base + ["--probes", str(probes)], capsys, "p.jsonl:1: field 'documents' missing", "not probes")
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    _fails(base + ["--probes", str(spec)], capsys, "spec.json", "not a needle-in-a-haystack spec")
    data = write_task_file(tmp_path / "t.jsonl", tiny_model_dir, n=1, length=400, seed=0)
    record = json.loads(data.read_text())
    record["gold_doc_ids"] = []
    write_jsonl(tmp_path / "nogold.jsonl", [record])
    _fails(base + ["--probes", str(tmp_path / "nogold.jsonl")], capsys, "field 'gold_doc_ids' is empty")
    _fails(base + ["--probes", str(data), "--null-query", ""], capsys, "null_query")
    assert not out.exists()


def test_duo_gates_write_native_kv_head_gates_and_resume(tiny_model_dir, tmp_path, capsys):
    from headlab.experiments.duo_gates import CHECKPOINT

    probes = write_jsonl(tmp_path / "p.jsonl", [{"input_ids": list(range(3, 60)), "needle_start": 10,
                                                 "needle_end": 20}])
    out, checkpoints = tmp_path / "out", tmp_path / "ckpt"
    argv = ["heads", "score", "--method", "duo-gates", "--model", str(tiny_model_dir), "--probes", str(probes),
            "--out", str(out), "--steps", "3", "--sink", "2", "--recent", "4", "--save-every", "1",
            "--checkpoints", str(checkpoints)]
    assert main(argv) == 0
    kv = json.loads((out / "kv_scores.json").read_text())
    assert kv["unit"] == "kv head" and kv["reduce"] == "native" and len(kv["mean_scores"]) == 3 * 4
    scores = load_scores(out / "retrieval_scores.json")
    assert {name: values[0] for name, values in scores.items()} == kv["mean_scores"]  # one kv head per query head
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "duo-gates" and summary["unit"] == "kv head" and len(summary["losses"]) == 3
    assert (checkpoints / CHECKPOINT).is_file()
    assert "duo-gates: 1 probes, 3 steps" in capsys.readouterr().out
    assert main(argv) == 0  # done already: the checkpoint holds every step, nothing is trained again
    assert json.loads((out / "kv_scores.json").read_text()) == kv


def test_bad_heads_score_input_is_one_line_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["heads", "score", "--model", str(tiny_model_dir), "--out", str(out)]
    _fails(base + ["--method", "qrheads"], capsys, "--method", "qrheads")
    _fails(base + ["--method", "attention-mass", "--keys", "all"], capsys, "keys", "top-k, span")
    _fails(base + ["--kv-reduce", "median"], capsys, "--kv-reduce", "median")
    probes = write_jsonl(tmp_path / "p.jsonl", [GOOD])
    _fails(base + ["--method", "induction", "--probes", str(probes)], capsys, "--probes", "drop --probes")
    _fails(base + ["--method", "induction", "--length", "0"], capsys, "length", ">= 1")
    _fails(base + ["--method", "duo-gates", "--steps", "0"], capsys, "steps", ">= 1")
    _fails(base + ["--method", "duo-gates", "--init", "2"], capsys, "init", "[0, 1]")
    _fails(base + ["--method", "razor-attention", "--echo-ratio", "1.5"], capsys, "--echo-ratio")
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, "{oops"])
    _fails(base + ["--probes", str(bad)], capsys, "bad.jsonl:2", "invalid JSON")
    assert not out.exists()


def test_kv_head_scores_take_the_max_or_mean_of_each_group():
    g = HeadGeometry(1, 4, 2, 8)  # query heads 0, 1 read kv head 0; 2, 3 read kv head 1
    assert [kv_head_of(h, g) for h in range(4)] == [0, 0, 1, 1]
    means = {"0-0": 0.1, "0-1": 0.5, "0-2": 0.2, "0-3": 0.0}
    assert kv_head_scores(means, g) == {"0-0": 0.5, "0-1": 0.2}
    assert kv_head_scores(means, g, "mean") == pytest.approx({"0-0": 0.3, "0-1": 0.1})
    with pytest.raises(HeadlabError, match=r"^kv-reduce: expected one of max, mean, got 'sum'$"):
        kv_head_scores(means, g, "sum")
