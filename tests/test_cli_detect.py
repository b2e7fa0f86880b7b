import json

import pytest

from headlab.cli import main
from headlab.mech.heads import load_scores, mean_scores, select_heads

GOOD = {"context": "The grass is green. Mara Quill was born in Tovesk. The sky is blue.",
        "needle": "Mara Quill was born in Tovesk.", "question": "Where was Mara Quill born?"}


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_detect_writes_scores_summary_and_heatmap(tiny_model_dir, tmp_path, capsys):
    probes = write_jsonl(tmp_path / "p.jsonl", [GOOD, {"input_ids": list(range(3, 60)), "needle_start": 10,
                                                       "needle_end": 30}])
    out = tmp_path / "out"
    code = main(["detect", "--model", str(tiny_model_dir), "--probes", str(probes), "--out", str(out),
                 "--max-new-tokens", "6", "--keep-failed", "--batch-size", "2", "--top-k", "3"])
    assert code == 0
    scores = load_scores(out / "retrieval_scores.json")
    assert len(scores) == 3 * 4 and all(len(v) == 2 for v in scores.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["probes_given"] == 2 and summary["probes_counted"] == 2
    assert summary["config"]["model"] == str(tiny_model_dir) and summary["config"]["top_k"] == 3
    assert summary["retrieval_heads"] == select_heads(mean_scores(scores), top_k=3)
    assert (out / "retrieval_heads.png").read_bytes()[:4] == b"\x89PNG"
    assert "probes: 2 given, 2 counted" in capsys.readouterr().out


def _fails(argv, capsys, *fragments):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for f in fragments:
        assert f in err, err
    return err


def test_bad_detect_inputs_give_one_line_and_write_nothing(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["detect", "--model", str(tiny_model_dir), "--out", str(out), "--max-new-tokens", "4"]
    _fails(["detect", "--model", str(tmp_path / "nope"), "--probes", "x.jsonl", "--out", str(out)], capsys,
           "nope: model folder not found")
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, "{oops"])
    _fails(base + ["--probes", str(bad)], capsys, "bad.jsonl:2", "invalid JSON")
    missing = write_jsonl(tmp_path / "missing.jsonl", [{k: v for k, v in GOOD.items() if k != "needle"}])
    _fails(base + ["--probes", str(missing)], capsys, "missing.jsonl:1", "field 'needle' is missing")
    lost = write_jsonl(tmp_path / "lost.jsonl", [{**GOOD, "needle": "Bob Stone works at Halden Mills."}])
    _fails(base + ["--probes", str(lost)], capsys, "lost.jsonl:1", "needle not found")
    long = write_jsonl(tmp_path / "long.jsonl", [{"input_ids": [5] * 600, "needle_start": 1, "needle_end": 5}])
    _fails(base + ["--probes", str(long)], capsys, "long.jsonl:1", "maximum of 512 positions")
    _fails(base + ["--probes", str(tmp_path / "absent.jsonl")], capsys, "absent.jsonl: file not found")
    assert not out.exists()


def test_heads_show_import_compare(tiny_model_dir, tmp_path, capsys):
    other_tool = tmp_path / "Llama-tiny.json"  # Retrieval_Head format from another tool
    other_tool.write_text(json.dumps({"0-1": [0.5, 0.3], "2-3": [0.0, 0.1], "1-0": [0.2, 0.2]}))
    assert main(["heads", "show", str(other_tool), "--threshold", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("0-1") < printed.index("1-0") and "2-3" not in printed
    assert main(["heads", "import", str(other_tool), "--out", str(tmp_path / "imp"), "--top-k", "2",
                 "--model", str(tiny_model_dir)]) == 0
    round_trip = load_scores(tmp_path / "imp" / "retrieval_scores.json")
    assert round_trip == load_scores(other_tool)
    summary = json.loads((tmp_path / "imp" / "summary.json").read_text())
    assert summary["retrieval_heads"] == ["0-1", "1-0"] and summary["probes_counted"] == 2
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"0-1": [0.4], "1-0": [0.0], "2-3": [0.3]}))
    capsys.readouterr()
    assert main(["heads", "compare", str(other_tool), str(ref), "--top-k", "2"]) == 0
    assert "recall 0.500  jaccard 0.333  shared 1" in capsys.readouterr().out


def test_bad_head_files(tiny_model_dir, tmp_path, capsys):
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({"0-1": [0.5], "7-2": [0.1]}))
    _fails(["heads", "show", str(wide), "--model", str(tiny_model_dir)], capsys,
           "wide.json", "head 7-2 is out of range", "3 layers x 4 heads")
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"layer0": [0.5]}))
    _fails(["heads", "show", str(named)], capsys, "named.json", "'layer0' is not a head name")
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"0-1": ["high"]}))
    _fails(["heads", "show", str(values)], capsys, "values.json: field '0-1'", "finite numbers")
    assert not (tmp_path / "imp").exists()


@pytest.mark.parametrize("threshold,top_k,expected", [(0.2, None, ["a", "b"]), (None, 1, ["a"]),
                                                      (0.9, None, []), (None, 4, ["a", "b", "c"])])
def test_select_heads(threshold, top_k, expected):
    # "z" never copied: a top-K set leaves it out rather than padding K with zero-score heads.
    names = {"a": "0-1", "b": "1-0", "c": "1-1", "z": "0-0"}
    means = {names["a"]: 0.5, names["b"]: 0.2, names["c"]: 0.1, names["z"]: 0.0}
    inverse = {v: k for k, v in names.items()}
    assert [inverse[h] for h in select_heads(means, threshold, top_k)] == expected


def test_scored_ranking_leaves_out_heads_that_never_copied():
    from headlab.mech.heads import scored_ranking

    means = {"0-0": 0.0, "0-1": 0.3, "1-0": 0.0, "1-1": 0.05}
    assert scored_ranking(means) == ["0-1", "1-1"]
    assert scored_ranking({"0-0": 0.0}) == []
