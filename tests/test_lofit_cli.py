"""`headlab lofit ...` end to end on a saved tiny Llama, and bad input: exit 2, one line, nothing written."""

import json

import pytest
from lofit_util import FACTS
from transformers import AutoModelForCausalLM

from headlab.cli import main

TRAIN = ["--epochs", "2", "--lr", "5e-2", "--batch-size", "6"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("lofit-data") / "train.jsonl"
    rows = [{"prompt": f"Question: Where was {who} born?\nAnswer:", "completion": where} for who, where in FACTS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    return path


def test_select_tune_merge_eval(tiny_model_dir, data, tmp_path, capsys):
    m, d = ["--model", str(tiny_model_dir)], ["--data", str(data)]
    assert main(["lofit", "select", *m, *d, "--out", str(tmp_path / "sel"), "--top-k", "2", *TRAIN]) == 0
    heads = json.loads((tmp_path / "sel" / "heads.json").read_text())
    assert len(heads["heads"]) == 2 and len(heads["norms"]) == 12
    assert (tmp_path / "sel" / "config.json").is_file() and (tmp_path / "sel" / "scales.safetensors").is_file()

    sel = str(tmp_path / "sel" / "heads.json")
    for method in ("lofit", "random"):
        assert main(["lofit", "tune", *m, *d, "--heads", sel, "--method", method,
                     "--out", str(tmp_path / method), *TRAIN]) == 0
    trained = json.loads((tmp_path / "lofit" / "train.json").read_text())
    rand = json.loads((tmp_path / "random" / "train.json").read_text())
    assert trained["heads"] == heads["heads"] and trained["n_trainable"] == 2 * 16
    assert len(rand["heads"]) == 2 and not set(rand["heads"]) & set(heads["heads"])
    assert main(["lofit", "tune", *m, *d, "--method", "lora", "--rank", "2", "--out", str(tmp_path / "lora"),
                 *TRAIN]) == 0
    assert (tmp_path / "lora" / "lora" / "adapter_model.safetensors").is_file()

    adapter = str(tmp_path / "lofit" / "adapter.safetensors")
    assert main(["lofit", "merge", *m, "--adapter", adapter, "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.model.layers[0].self_attn.o_proj.bias is not None
    report = json.loads((tmp_path / "merged" / "lofit_merge.json").read_text())
    assert report["max_abs_logit_difference"] < 1e-5

    capsys.readouterr()
    scores = {}
    for name, extra in [("base", []), ("lofit", ["--adapter", adapter]), ("merged", ["--model",
                        str(tmp_path / "merged")]), ("lora", ["--lora", str(tmp_path / "lora" / "lora")])]:
        out = tmp_path / f"eval-{name}.json"
        assert main(["lofit", "eval", *m, *d, *extra, "--out", str(out), "--max-new-tokens", "4"]) == 0
        scores[name] = json.loads(out.read_text())
    assert scores["merged"]["examples"] == scores["lofit"]["examples"]  # same greedy answers
    assert scores["base"]["n"] == 6 and "score" in capsys.readouterr().out


def test_select_nothing_message(tiny_model_dir, data, tmp_path, capsys):
    assert main(["lofit", "select", "--model", str(tiny_model_dir), "--data", str(data), "--out",
                 str(tmp_path / "s"), "--l1", "1000", "--epochs", "1", "--batch-size", "6"]) == 0
    assert "selected no heads" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "heads.json").read_text())["heads"] == []
    code = main(["lofit", "tune", "--model", str(tiny_model_dir), "--data", str(data), "--heads",
                 str(tmp_path / "s" / "heads.json"), "--out", str(tmp_path / "t")])
    assert code == 2 and not (tmp_path / "t").exists()
    assert "empty" in capsys.readouterr().err


def _bad(tmp_path, argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_bad_input(tiny_model_dir, data, tmp_path, capsys):
    m = ["--model", str(tiny_model_dir)]
    out = ["--out", str(tmp_path / "out")]
    _bad(tmp_path, ["lofit", "select", *m, "--data", str(tmp_path / "none.jsonl"), *out], "file not found", capsys)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    _bad(tmp_path, ["lofit", "tune", *m, "--data", str(tmp_path / "bad.jsonl"), "--heads", "h", *out],
         "bad.jsonl:1: field 'completion' is missing", capsys)
    (tmp_path / "heads.json").write_text('{"heads": ["0-9"]}')
    _bad(tmp_path, ["lofit", "tune", *m, "--data", str(data), "--heads", str(tmp_path / "heads.json"), *out],
         "out of range", capsys)
    _bad(tmp_path, ["lofit", "tune", *m, "--data", str(data), *out], "--heads is required", capsys)
    _bad(tmp_path, ["lofit", "select", *m, "--data", str(data), "--fraction", "2", *out], "--fraction", capsys)
    _bad(tmp_path, ["lofit", "select", *m, "--data", str(data), "--epochs", "0", *out], "--epochs", capsys)
    _bad(tmp_path, ["lofit", "select", *m, "--data", str(data), "--l1", "-1", *out], "--l1", capsys)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    _bad(tmp_path, ["lofit", "merge", *m, "--adapter", str(tmp_path / "junk.safetensors"), *out],
         "not a safetensors file", capsys)
    _bad(tmp_path, ["lofit", "eval", *m, "--data", str(data), "--lora", str(tmp_path / "nope"), *out],
         "LoRA folder not found", capsys)
    (tmp_path / "p.jsonl").write_text('{"prompt": "x", "chosen": "y", "rejected": "z"}\n')
    _bad(tmp_path, ["lofit", "eval", *m, "--data", str(tmp_path / "p.jsonl"), *out], "cannot be scored", capsys)


def test_merge_refuses_mismatched_adapter(tiny_model_dir, tmp_path, capsys):
    from headlab.lofit.adapter import LofitAdapter
    from headlab.model.geometry import HeadGeometry

    LofitAdapter([(0, 0)], HeadGeometry(2, 8, 8, 8)).save(tmp_path / "a.safetensors")
    _bad(tmp_path, ["lofit", "merge", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "a.safetensors"),
                    "--out", str(tmp_path / "out")], "does not match", capsys)


def test_heads_from_a_detection_summary(tmp_path):
    from headlab.core.errors import HeadlabError
    from headlab.lofit.cli import read_heads
    from headlab.model.geometry import HeadGeometry

    g = HeadGeometry(3, 4, 2, 16)
    (tmp_path / "summary.json").write_text(json.dumps({"retrieval_heads": ["2-1", "0-3"], "mean_scores": {}}))
    assert read_heads(str(tmp_path / "summary.json"), g) == ["2-1", "0-3"]
    (tmp_path / "bad.json").write_text(json.dumps({"heads": "2-1"}))
    with pytest.raises(HeadlabError, match="bad.json: field 'heads'"):
        read_heads(str(tmp_path / "bad.json"), g)
    (tmp_path / "name.json").write_text(json.dumps({"heads": ["2:1"]}))
    with pytest.raises(HeadlabError, match="name.json"):
        read_heads(str(tmp_path / "name.json"), g)
