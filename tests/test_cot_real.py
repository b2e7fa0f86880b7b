"""The CoT harness on the real SmolLM2-135M-Instruct and real BIG-bench items (run with --run-real)."""

import json

import pytest

from headlab.cli import main


@pytest.mark.real
def test_smollm2_bigbench_direct_and_cot(real_model_dir, bigbench_task, tmp_path, capsys):
    out = tmp_path / "cot"
    data = [str(bigbench_task("navigate")), str(bigbench_task("arithmetic/2_digit_addition"))]
    argv = ["cot", "run", "--model", str(real_model_dir), "--data", *data, "--out", str(out), "--limit", "2",
            "--cot-max-new-tokens", "96", "--direct-max-new-tokens", "16", "--resamples", "500"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["dataset"] for r in records} == {"navigate", "arithmetic/2_digit_addition"}
    for r in records:
        for mode in ("direct", "cot"):
            assert r[mode]["response"].strip() and 0 < r[mode]["tokens"] <= (16 if mode == "direct" else 96)
    # The instruct model follows the answer form: most answers are found (a random model's are not).
    found = sum(r[m]["answer"] is not None for r in records for m in ("direct", "cot"))
    assert found >= 6, [(r["direct"]["response"], r["cot"]["response"]) for r in records]
    summary = json.loads((out / "summary.json").read_text())
    assert {row["dataset"] for row in summary["datasets"]} == {"navigate", "arithmetic/2_digit_addition"}
    assert (out / "cot_gain.png").is_file() and "data:image/png" in (out / "report.html").read_text()
    capsys.readouterr()
