"""The hostile-input campaign (tools/hostile_campaign.py): its table covers every command, its judge catches what
it must, and a sample of its cases passes (the whole campaign is a tool run, minutes long)."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import hostile_campaign as hc  # noqa: E402


def test_every_command_meets_every_class_that_applies_to_it():
    cases = hc.all_cases()
    hostile = [c for c in cases if not c.valid]
    assert len(hostile) >= 400 and sum(c.valid for c in cases) >= 40
    assert len({c.id for c in cases}) == len(cases)
    classes = defaultdict(set)
    for c in hostile:
        classes[c.command].add(c.cls)
    commands = set(hc.BASE)
    assert set(classes) == commands
    for command in commands:  # every command gets numbers and its output checks (where it has an output)
        assert "numbers" in classes[command], command
        if command in hc.OUTPUTS and command != "cot report":
            assert "out" in classes[command], command
        if "{out}" in hc.BASE[command]:  # --out as a link: dangling, to a folder, to a file
            assert "links" in classes[command], command
    for command in hc.MODEL_OPTION:
        assert {"model-folder", "mistyped-path"} <= classes[command], command
    for command in hc.FILE_SLOTS:
        assert {"non-utf8", "empty/truncated/binary"} <= classes[command], command


def _outcome(rc, stderr, names=("data.jsonl",), valid=False):
    case = hc.Case("x", "data show", "valid" if valid else "fields", "data show {data.jsonl}", names, valid=valid)
    return hc.Outcome(case, rc, stderr, 0.0)


@pytest.mark.parametrize("rc,stderr,failure", [
    (None, "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n", "traceback"),
    (1, "", "traceback"),
    (0, "", "accepted"),
    (2, "headlab: error: something is wrong\n", "message"),  # names no file
    (2, "warning: noise\nheadlab: error: data.jsonl:1: bad\n", "message"),  # more than one line
    (None, "\n[campaign] no exit within 5 s\n", "hang"),
])
def test_the_judge_catches_each_failure(tmp_path, rc, stderr, failure):
    runner = hc.Runner.__new__(hc.Runner)
    runner.root, runner.outs = tmp_path, tmp_path / "outs"
    o = _outcome(rc, stderr)
    runner._judge(o, tmp_path / "absent", None, hc._stat_tree(tmp_path, runner.outs), [])
    assert failure in o.failures


def test_the_judge_passes_one_located_line_and_sees_writes(tmp_path):
    runner = hc.Runner.__new__(hc.Runner)
    runner.root, runner.outs = tmp_path, tmp_path / "outs"
    o = _outcome(2, "headlab: error: data.jsonl:2: field 'answers' is missing\n")
    runner._judge(o, tmp_path / "absent", None, hc._stat_tree(tmp_path, runner.outs), [])
    assert o.failures == []
    (tmp_path / "out").mkdir()
    o = _outcome(2, "headlab: error: data.jsonl:2: field 'answers' is missing\n")
    runner._judge(o, tmp_path / "out", None, {}, ["('huggingface.co', 443)"])
    assert sorted(o.failures) == ["network", "wrote"]


def _sample(cases: list[hc.Case], per_class: int = 3) -> list[hc.Case]:
    """A few cases of every class, spread over the table, plus cheap valid controls; in-process ones only."""
    by_class = defaultdict(list)
    for c in cases:
        if c.mode == "inproc" and not c.tolerate_success:
            by_class[c.cls].append(c)
    picked = []
    for cls, group in sorted(by_class.items()):
        if cls == "valid":
            picked += [c for c in group if c.command in ("heads show", "heads import", "data show", "compare")][:4]
            continue
        step = max(1, len(group) // per_class)
        picked += group[::step][:per_class]
    return picked


@pytest.mark.slow
def test_a_sample_of_the_campaign_passes(tmp_path):
    import torch

    torch.set_num_threads(1)
    fixtures = hc.build_fixtures(tmp_path / "fx")
    runner = hc.Runner(tmp_path / "fx", fixtures)
    sample = _sample(hc.all_cases())
    assert len(sample) >= 40
    failed = {}
    for case in sample:
        outcome = runner.run(case)
        if outcome.failures:
            failed[case.id] = (outcome.failures, outcome.stderr.strip().splitlines()[-1:])
    assert not failed, failed
