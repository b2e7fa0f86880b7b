"""The study's knockout, patching and report when some models have no head with a non-zero retrieval score."""

from __future__ import annotations

from study_fake import fake_run, patch_record

from headlab.io import atomic_write_json
from headlab.study.config import StudyConfig
from headlab.study.pipeline import StageContext
from headlab.study.report import BASE, collect, findings, write_report
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
