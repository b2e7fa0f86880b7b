import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from headlab.core.errors import HeadlabError
from headlab.study.pipeline import Pipeline, Stage


def _counting_pipeline(root, calls, scale=1):
    p = Pipeline(root)

    def make(name, value):
        def run(ctx):
            calls.append(name)
            total = value + sum(json.loads((d / "value.json").read_text()) for d in ctx.deps.values())
            (ctx.out / "value.json").write_text(json.dumps(total))
        return run

    p.add(Stage("a", {"v": 1 * scale}, make("a", 1 * scale)))
    p.add(Stage("b", {"v": 2}, make("b", 2)))
    p.add(Stage("c/x", {"v": 3}, make("c/x", 3), deps=["a"]))
    p.add(Stage("d", {"v": 4}, make("d", 4), deps=["c/x", "b"]))
    return p


def test_rerun_skips_and_config_change_recomputes_only_downstream(tmp_path):
    calls = []
    _counting_pipeline(tmp_path, calls).run(progress=False, log=lambda s: None)
    assert calls == ["a", "b", "c/x", "d"]
    assert json.loads((tmp_path / "d" / "value.json").read_text()) == 1 + 3 + 2 + 4
    assert json.loads((tmp_path / "c/x" / "config.json").read_text())["inputs"] == {"v": 3}
    calls.clear()
    status = _counting_pipeline(tmp_path, calls).run(progress=False, log=lambda s: None)
    assert calls == [] and set(status.values()) == {"skipped"}
    _counting_pipeline(tmp_path, calls, scale=10).run(progress=False, log=lambda s: None)
    assert calls == ["a", "c/x", "d"]  # b does not depend on a
    assert json.loads((tmp_path / "d" / "value.json").read_text()) == 10 + 3 + 2 + 4


def test_failed_stage_leaves_nothing_and_bad_graphs_are_rejected(tmp_path):
    p = Pipeline(tmp_path)

    def boom(ctx):
        (ctx.out / "half.txt").write_text("half")
        raise RuntimeError("boom")

    p.add(Stage("x", {}, boom))
    with pytest.raises(RuntimeError):
        p.run(progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(HeadlabError, match="undefined"):
        p.add(Stage("y", {}, boom, deps=["nope"]))
    with pytest.raises(HeadlabError, match="twice"):
        p.add(Stage("x", {}, boom))


SCRIPT = textwrap.dedent('''
    import json, sys, time
    from headlab.study.pipeline import Pipeline, Stage

    def make(i):
        def run(ctx):
            for step in range(5):  # a long stage that checkpoints into its work folder
                ck = ctx.work / "step.json"
                done = json.loads(ck.read_text()) if ck.exists() else -1
                if step <= done:
                    continue
                time.sleep(0.05)
                ck.write_text(json.dumps(step))
            prev = sum(json.loads((d / "v.json").read_text()) for d in ctx.deps.values())
            (ctx.out / "v.json").write_text(json.dumps(prev * 2 + i))
        return run

    p = Pipeline(sys.argv[1])
    for i in range(8):
        p.add(Stage(f"s{i}", {"i": i}, make(i), deps=[f"s{i - 1}"] if i else []))
    p.run(progress=False, log=lambda s: None)
''')


def test_real_interruption_then_rerun_matches_uninterrupted(tmp_path):
    script = tmp_path / "pipe.py"
    script.write_text(SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "clean")], check=True)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed")])
    deadline = time.time() + 60
    while not (tmp_path / "killed" / "s2" / "stage.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "s7").exists(), "the kill must land mid-run for this test to mean anything"
    subprocess.run([sys.executable, str(script), str(tmp_path / "killed")], check=True)
    for i in range(8):
        clean = (tmp_path / "clean" / f"s{i}" / "v.json").read_text()
        assert (tmp_path / "killed" / f"s{i}" / "v.json").read_text() == clean
