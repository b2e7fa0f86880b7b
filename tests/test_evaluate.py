import json

import pytest
import torch
from test_finetune import LENGTH
from tiny import write_task_file

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.data.example import Document, TaskExample
from headlab.experiments.evaluate import (
    EvalConfig,
    depth_bin,
    evaluate_examples,
    gold_depth,
    score_prediction,
    summarize,
)
from headlab.experiments.niah_sweep import NiahSweepConfig, niah_sweep, probe_score
from headlab.model.loading import load_model


def _example(task: str, answers: list[str], gold: list[int], n_docs: int = 5, length: int = 1024) -> TaskExample:
    docs = [Document(i + 1, f"T{i}", "text.") for i in range(n_docs)]
    return TaskExample(f"{task}-{gold}", task, "real", "diverse", "ctx", "q?", answers, docs, gold, [(0, 3)],
                       {"length": length})


def test_scores_match_hand_computed_values():
    qa = _example("mdqa", ["Tovesk", "the city of Tovesk"], [1])
    cit = _example("citation", ["[2][4]"], [2, 4], length=2048)
    # Hand-computed: substring match after normalisation; citation F1 with P = 1/2, R = 1/2.
    assert score_prediction(qa, "She was born in Tovesk.")["score"] == 1.0
    assert score_prediction(qa, "She was born in Tovesk.")["exact_match"] == 0.0
    assert score_prediction(qa, "Tovesk")["exact_match"] == 1.0
    assert score_prediction(qa, "Tovesks")["score"] == 0.0
    assert score_prediction(qa, "born in tovesk")["f1"] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    s = score_prediction(cit, "[2][3]")
    assert (s["citation_precision"], s["citation_recall"], s["score"]) == (0.5, 0.5, 0.5)
    assert score_prediction(cit, "[4] [2]")["score"] == 1.0
    records = [{"task": "mdqa", "score": 1.0, "depth": 0.0, "length": 1024},
               {"task": "mdqa", "score": 0.0, "depth": 0.9, "length": 1024},
               {"task": "citation", "score": 0.5, "depth": 1.0, "length": 2048}]
    summary = summarize(records, depth_bins=5)
    assert summary["score"] == pytest.approx(0.5)
    assert summary["by_depth"] == {"0.0-0.2": {"score": 1.0, "n": 1}, "0.8-1.0": {"score": 0.25, "n": 2}}
    assert summary["by_length"]["1024"] == {"score": 0.5, "n": 2}
    assert summary["by_task"]["citation"]["score"] == 0.5


def test_gold_depth():
    assert gold_depth(_example("mdqa", ["a"], [1])) == 0.0
    assert gold_depth(_example("mdqa", ["a"], [5])) == 1.0
    assert gold_depth(_example("mdqa", ["a"], [3])) == 0.5
    assert depth_bin(1.0, 5) == "0.8-1.0" and depth_bin(0.19, 5) == "0.0-0.2"


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory, tiny_model_dir):
    return write_task_file(tmp_path_factory.mktemp("evaldata") / "eval.jsonl", tiny_model_dir, 3, LENGTH, seed=1)


def test_evaluate_records_use_the_generated_text(tiny_model_dir, eval_file, monkeypatch):
    from headlab.data.example import load_examples
    from headlab.experiments import evaluate as ev

    model, tok = load_model(tiny_model_dir)
    examples = load_examples(eval_file)
    gold = examples[1].answers[0]
    fixed = [tok(" wrong", add_special_tokens=False)["input_ids"], tok(" " + gold, add_special_tokens=False)[
        "input_ids"], []]
    monkeypatch.setattr(ev, "generate_with_progress", lambda *a, **k: fixed)
    records, summary = evaluate_examples(model, tok, examples, EvalConfig())
    assert [r["id"] for r in records] == [e.id for e in examples]
    assert [r["score"] for r in records] == [0.0, float(tok.decode(fixed[1]).strip() == gold), 0.0]
    assert records[2]["prediction"] == ""
    assert summary["n"] == 3 and set(summary["by_length"]) == {str(LENGTH)}


def test_evaluate_cli_writes_outputs(tiny_model_dir, eval_file, tmp_path):
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(eval_file), "--out", str(out),
                 "--max-new-tokens", "4", "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and {"id", "prediction", "gold", "score", "depth", "length"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score"] == pytest.approx(sum(r["score"] for r in rows) / 3)
    assert (out / "scores.png").stat().st_size > 0 and (out / "config.json").is_file()


def test_evaluate_cli_bad_input_writes_nothing(tiny_model_dir, eval_file, tmp_path, capsys):
    out = tmp_path / "ev"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(empty), "--out", str(out)]) == 2
    assert "empty.jsonl: no examples" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    obj = json.loads(eval_file.read_text().splitlines()[0])
    obj["task"] = "summarise"
    bad.write_text(json.dumps(obj) + "\n")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(out)]) == 2
    assert "bad.jsonl:1: field 'task'" in capsys.readouterr().err
    long = tmp_path / "long.jsonl"
    obj = json.loads(eval_file.read_text().splitlines()[0])
    obj["context"] = obj["context"] + " filler" * 600  # past the test model's 512 positions
    long.write_text(json.dumps(obj) + "\n")
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(long), "--out", str(out)]) == 2
    assert "--allow-long-context" in capsys.readouterr().err
    assert not out.exists()


def test_finetune_cli_bad_input(tiny_model_dir, eval_file, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(eval_file), "--out", str(out)]
    assert main([*args, "--context-length", "64"]) == 2
    assert "longer than the target context 64" in capsys.readouterr().err
    assert main([*args, "--rope-scaling", "{bad"]) == 2
    assert "--rope-scaling: invalid JSON" in capsys.readouterr().err
    assert not out.exists()


def test_niah_probe_score():
    assert probe_score({"answer": "Tovesk", "needle": "x"}, "in Tovesk.") == 1.0
    assert probe_score({"answer": None, "needle": "Mara was born in Tovesk"}, "Mara was born") == 0.6


def test_niah_sweep_grid(tiny_model_dir, monkeypatch):
    from headlab.experiments import niah_sweep as ns
    from headlab.toy.tokenizer import train_tokenizer

    tok = train_tokenizer(0, 512, model_max_length=512)  # toy-world probes need the toy vocabulary
    model = torch.nn.Module()
    seen = []

    def fake_generate(model, tokenizer, prompts, *a, **k):  # answers right only for short prompts
        seen.extend(len(p) for p in prompts)
        return [tokenizer(" nothing", add_special_tokens=False)["input_ids"] if len(p) > 200 else [] for p in prompts]

    monkeypatch.setattr(ns, "generate_with_progress", fake_generate)
    monkeypatch.setattr(ns, "probe_score", lambda probe, pred: float(pred == ""))
    cfg = NiahSweepConfig(lengths=[128, 256], depths=[0.0, 1.0], needles=2)
    grid, records = niah_sweep(model, tok, cfg)
    assert len(records) == 2 * 2 * 2 and grid["lengths"] == [128, 256]
    assert grid["scores"] == [[1.0, 0.0], [1.0, 0.0]]
    assert all(r["length"] - 16 <= r["prompt_tokens"] <= r["length"] for r in records)
    with pytest.raises(HeadlabError, match="depths"):
        niah_sweep(model, tok, NiahSweepConfig(depths=[1.5]))


def test_finetune_then_evaluate_adapter_cli(tiny_model_dir, eval_file, tmp_path):
    run = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny_model_dir), "--data", str(eval_file), "--out", str(run),
                 "--context-length", "1024", "--steps", "2", "--batch-size", "2", "--lr", "1e-2"]) == 0
    assert (run / "model" / "adapter_config.json").is_file() and (run / "summary.json").is_file()
    # The adapter folder evaluates directly: its base is rebuilt with the saved context extension.
    model, _ = load_model(run / "model")
    assert model.config.max_position_embeddings == 1024
    # Plain transformers loads it too, given the saved overrides; both give the same logits.
    from transformers import AutoModelForCausalLM

    ext = json.loads((run / "model" / "extension.json").read_text())
    plain = AutoModelForCausalLM.from_pretrained(run / "model", **ext).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
    assert main(["evaluate", "--model", str(run / "model"), "--data", str(eval_file), "--out", str(tmp_path / "ev"),
                 "--max-new-tokens", "3"]) == 0
    # Finished runs are not recomputed by accident.
    assert main(["finetune", "--model", str(tiny_model_dir), "--data", str(eval_file), "--out", str(run)]) == 2
    assert main(["finetune", "--model", str(tiny_model_dir), "--data", str(eval_file), "--out", str(run),
                 "--resume"]) == 2
