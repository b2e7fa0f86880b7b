"""The study report: numbers with n and intervals, the scores table, and models with no scored retrieval head."""

from __future__ import annotations

import pytest
from study_fake import fake_run, patch_record

from headlab.core.io import atomic_write_json
from headlab.study.config import StudyConfig
from headlab.study.layout import BASE
from headlab.study.pipeline import StageContext
from headlab.study.report import collect, findings, write_report
from headlab.study.stages import NO_SCORED_HEADS, _ranking

CONFIG = StudyConfig(tasks=["mdqa"], variants=["symbolic-diverse", "templated-repetitive", "real-repetitive"])


def test_zero_score_heads_are_not_a_ranking(tmp_path):
    # All-zero scores tie; their order is the head index, so "top-K" would be layer 0's heads.
    atomic_write_json(tmp_path / "summary.json", {"mean_scores": {"0-0": 0.0, "0-1": 0.0, "1-0": 0.0}})
    assert _ranking(tmp_path) == []
    atomic_write_json(tmp_path / "summary.json", {"mean_scores": {"0-0": 0.0, "0-1": 0.2, "1-0": 0.05}})
    assert _ranking(tmp_path) == ["0-1", "1-0"]


def test_report_leaves_out_skipped_knockouts_and_patches(tmp_path):
    run = tmp_path / "run"
    deps = fake_run(run, CONFIG)
    task = CONFIG.tasks[0]
    # The base model found no retrieval head; one variant's patch shares no head with the real model.
    atomic_write_json(run / "knockout" / task / BASE / "knockout.json", {"k": 0, "skipped": NO_SCORED_HEADS})
    atomic_write_json(run / "patch" / task / "symbolic-diverse" / "patching.json",
                      {"k": 0, "sets": {}, "skipped": f"target: {NO_SCORED_HEADS}"})
    atomic_write_json(run / "patch" / task / "templated-repetitive" / "patching.json", patch_record(size=0))

    lines = findings(collect(run, CONFIG), CONFIG)
    knockout = next(line for line in lines if ", knockout" in line)
    # Four models knocked out (0.3 against 0.7 random on the same 20 examples), the base left out and said so.
    assert "lower the score more than as many random heads in 4 of 4 models" in knockout
    assert "real -0.40 [" in knockout and "1 of 5 models skipped: no head scored" in knockout
    patching = next(line for line in lines if "patching" in line)
    # Only the variant whose patch moved heads; two examples of twenty gained: no verdict.
    assert "into 1 synthetic-data model: patched real-repetitive is indistinguishable from unpatched " \
           "(difference +0.10 [" in patching

    out = tmp_path / "report"
    write_report(StageContext(out=out, work=tmp_path / "work", deps=deps, inputs={}), CONFIG)
    html = (out / "report.html").read_text()
    assert f"Skipped for {BASE}, symbolic-diverse: no head has a non-zero task retrieval score" in html
    assert (out / "figures" / f"knockout_{task}.png").is_file()


def test_report_with_no_knockout_at_all(tmp_path):
    run = tmp_path / "run"
    deps = fake_run(run, CONFIG)
    task = CONFIG.tasks[0]
    for m in [BASE, *CONFIG.models]:
        atomic_write_json(run / "knockout" / task / m / "knockout.json", {"k": 0, "skipped": NO_SCORED_HEADS})
    for v in CONFIG.variants:
        atomic_write_json(run / "patch" / task / v / "patching.json", {"k": 0, "sets": {}, "skipped": "source"})
    lines = findings(collect(run, CONFIG), CONFIG)
    assert f"{task}: no knockout: no model has a head with a non-zero task retrieval score." in lines
    assert not any("patching the shared" in line for line in lines)
    assert not any(", knockout" in line for line in lines)
    out = tmp_path / "report"
    write_report(StageContext(out=out, work=tmp_path / "work", deps=deps, inputs={}), CONFIG)
    assert not (out / "figures" / f"knockout_{task}.png").exists()
    assert not (out / "figures" / f"patching_{task}.png").exists()


def test_every_number_has_n_and_interval_and_the_table_holds_every_score(tmp_path):
    import csv
    import json

    from study_fake import N

    config = StudyConfig(tasks=["mdqa"], variants=["symbolic-diverse", "templated-repetitive", "real-repetitive"],
                         finetune_seeds=2)
    run = tmp_path / "run"
    deps = fake_run(run, config)
    out = tmp_path / "report"
    write_report(StageContext(out=out, work=tmp_path / "work", deps=deps, inputs={}), config)
    numbers = json.loads((out / "numbers.json").read_text())
    t = numbers["tasks"]["mdqa"]
    # fake_run: model i seed s gets 2 + 3i + s of 20 right; a fine-tuned score is the mean over its seeds.
    real = t["scores"]["real"]
    assert real["value"] == (5 + 6) / 2 / N and real["n"] == N and real["low"] < real["value"] < real["high"]
    assert [s["value"] for s in real["seeds"]] == [5 / N, 6 / N] and real["seed_spread"] == pytest.approx(1 / N)
    assert t["vs_real"]["real-repetitive"]["value"] == pytest.approx((11 - 29) / 2 / N)
    assert set(t["vs_real"]["real-repetitive"]) >= {"low", "high", "n", "p", "verdict"}
    ko = t["knockout"]["real"]
    assert [c["k"] for c in ko["curve"]] == [1, 2, 4] and ko["top_vs_random"]["verdict"] == "lower"
    assert len(ko["top_vs_random_each"]) == 3
    assert t["compare"]["spearman"]["n"] == 3 and "low" in t["compare"]["spearman"]

    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert list(rows[0]) == ["task", "model", "seed", "example_id", "condition", "k", "control_seed", "score"]
    jsonl = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(jsonl) == len(rows)
    evals = [r for r in rows if r["condition"] == "eval" and r["model"] == "real"]
    assert len(evals) == 2 * N and {r["seed"] for r in evals} == {"0", "1"}
    # The numbers come back from the table: the real model's seed-1 score, a knockout point.
    assert sum(float(r["score"]) for r in evals if r["seed"] == "1") / N == pytest.approx(6 / N)
    top4 = [float(r["score"]) for r in rows if (r["model"], r["condition"], r["k"]) == ("real", "knockout_top", "4")]
    assert sum(top4) / len(top4) == pytest.approx(ko["top"]["value"])
    assert {r["control_seed"] for r in rows if r["condition"] == "knockout_random"} == {"0", "1", "2"}
