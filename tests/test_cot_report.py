"""`headlab cot report`: accuracies, paired differences, the "=" split and the figure, from examples.jsonl."""

import json

import numpy as np
import pytest

from headlab.cli import main
from headlab.core.stats import mean_interval, paired_difference
from headlab.cot.report import write_report


def record(i, dataset, category, direct, cot, eq=False, tokens=(3, 40)):
    def mode(ok, n, text):
        return {"response": text, "tokens": n, "answer": "x" if ok else None, "status": "ok" if ok else "none",
                "correct": ok}
    return {"id": f"{dataset}:{i}", "dataset": dataset, "category": category, "eq_question": False,
            "direct": mode(direct, tokens[0], "The answer is x."),
            "cot": mode(cot, tokens[1], "2 = 2. The answer is x." if eq else "so the answer is x.")}


def write_run(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "config.json").write_text(json.dumps({"model": "m", "cot_max_new_tokens": 64, "shots": 0}))


def test_report_numbers(tmp_path):
    rng = np.random.default_rng(0)
    math_d, math_c = rng.random(40) < 0.3, rng.random(40) < 0.7
    know_d, know_c = rng.random(30) < 0.6, rng.random(30) < 0.6
    records = [record(i, "arith", "math", bool(math_d[i]), bool(math_c[i]), eq=True) for i in range(40)]
    records += [record(i, "trivia", "knowledge", bool(know_d[i]), bool(know_c[i])) for i in range(30)]
    write_run(tmp_path, records)
    summary = write_report(tmp_path, resamples=2000)
    arith = next(r for r in summary["datasets"] if r["dataset"] == "arith")
    assert arith["n"] == 40 and arith["direct"]["accuracy"] == pytest.approx(math_d.mean())
    cot = mean_interval(math_c.astype(float), n_resamples=2000, method="percentile")
    gain = paired_difference(math_c, math_d, n_resamples=2000, method="percentile")
    assert arith["cot"]["ci"] == pytest.approx([cot.low, cot.high]) and cot.low < arith["cot"]["accuracy"] < cot.high
    assert arith["cot_minus_direct"]["ci"] == pytest.approx([gain.diff.low, gain.diff.high])
    assert arith["cot_minus_direct"]["p"] == pytest.approx(gain.p)
    assert arith["cot_minus_direct"]["diff"] == pytest.approx(math_c.mean() - math_d.mean())
    assert arith["cot"]["tokens_mean"] == 40 and arith["direct"]["tokens_mean"] == 3
    assert [r["category"] for r in summary["categories"]] == ["math", "knowledge"]
    assert summary["all"]["n"] == 70
    # The "=" split: every math item's CoT response has "=", no knowledge item's does.
    assert summary["eq_split"]["with ="]["n"] == 40 and summary["eq_split"]["without ="]["n"] == 30
    assert summary["eq_split"]["with ="]["cot"]["accuracy"] == pytest.approx(math_c.mean())
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "arith" in html and "The &quot;=&quot; split" in html
    assert (tmp_path / "cot_gain.png").read_bytes()[:4] == b"\x89PNG"
    assert "| arith | 40 |" in (tmp_path / "report.md").read_text()


def test_report_cli_and_bad_folder(tmp_path, capsys):
    write_run(tmp_path / "ok", [record(i, "a", "math", i % 2 == 0, True) for i in range(6)])
    assert main(["cot", "report", str(tmp_path / "ok"), "--resamples", "100"]) == 0
    assert "| a | 6 |" in capsys.readouterr().out
    assert main(["cot", "report", str(tmp_path / "missing")]) == 2
    assert "examples.jsonl: file not found" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "examples.jsonl").write_text('{"dataset": "a", "category": "math", "direct": {}}\n'
                                                     '{"dataset": "a"}\n')
    assert main(["cot", "report", str(tmp_path / "bad")]) == 2
    assert "examples.jsonl:2: field 'category' is missing" in capsys.readouterr().err
