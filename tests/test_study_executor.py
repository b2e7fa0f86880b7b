"""Concurrent study executors on a small fake pipeline: a failed stage stops its dependants only, is reported
in one line, and a re-run finishes the rest; through Ray, independent stages really run at the same time."""

import json
import time
from pathlib import Path

import pytest

from headlab.study.executor import RayExecutor, StageFailures, schedule, stage_resources
from headlab.study.pipeline import Pipeline, Stage

TESTS = Path(__file__).resolve().parent


def _graph(root: Path, fail: bool, meet: bool = False) -> Pipeline:
    """a -> b -> c -> d, e, f(a, e), report(all). b raises while `fail`; with `meet`, e and f2 each wait for
    the other's marker, which only two stages running at the same time can both see."""
    p = Pipeline(root)

    def value(name):
        def run(ctx):
            if name == "b" and fail:
                raise RuntimeError("boom\nsecond line")
            total = 1 + sum(json.loads((d / "v.json").read_text()) for d in ctx.deps.values())
            (ctx.out / "v.json").write_text(json.dumps(total))
        return run

    def rendezvous(mine, other):
        def run(ctx):
            (root / f".{mine}").touch()
            deadline = time.time() + 120
            while not (root / f".{other}").exists():
                assert time.time() < deadline, f"{other} never ran alongside {mine}"
                time.sleep(0.05)
            (ctx.out / "v.json").write_text("1")
        return run

    p.add(Stage("a", {}, value("a")))
    p.add(Stage("b", {}, value("b"), ["a"]))
    p.add(Stage("c", {}, value("c"), ["b"]))
    p.add(Stage("d/x", {}, value("d"), ["c"]))
    p.add(Stage("e", {}, rendezvous("e", "f2") if meet else value("e")))
    p.add(Stage("f2", {}, rendezvous("f2", "e") if meet else value("f2")))
    p.add(Stage("f", {}, value("f"), ["a", "e"]))
    p.add(Stage("report", {}, value("report"), ["a", "b", "c", "d/x", "e", "f", "f2"]))
    return p


def _inline(pipeline: Pipeline):
    """A backend that runs each submitted stage in this process when waited on."""
    submitted = {}

    def submit(name, fp, digests):
        submitted[name] = fp, digests
        return name

    def wait(handles):
        name = handles[0]
        fp, digests = submitted.pop(name)
        try:
            return [(name, pipeline._run_stage(pipeline.stages[name], fp, digests))]
        except Exception as e:
            return [(handles[0], e)]

    return submit, wait


def _check_failed_run(root: Path, error: StageFailures) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1
    assert "b (RuntimeError: boom)" in message and "3 dependent stage(s) not run" in message
    assert error.failures == {"b": "RuntimeError: boom"} and sorted(error.blocked) == ["c", "d/x", "report"]
    for name in ("a", "e", "f", "f2"):  # independent of b: finished whole
        assert (root / name / "stage.json").is_file() and (root / name / "v.json").is_file()
    for name in ("b", "c", "d/x", "report"):
        assert not (root / name).exists()


def test_a_failed_stage_stops_its_dependants_only_and_a_rerun_finishes(tmp_path):
    logs = []
    p = _graph(tmp_path, fail=True)
    with pytest.raises(StageFailures) as info:
        schedule(p, *_inline(p), progress=False, log=logs.append)
    _check_failed_run(tmp_path, info.value)
    assert "[study] b: failed (RuntimeError: boom)" in logs
    p = _graph(tmp_path, fail=False)
    status = schedule(p, *_inline(p), progress=False, log=logs.append)
    assert {n for n, s in status.items() if s == "skipped"} == {"a", "e", "f", "f2"}
    assert json.loads((tmp_path / "report" / "v.json").read_text()) == 1 + 1 + 2 + 3 + 4 + 1 + 3 + 1


def test_stage_resources():
    assert stage_resources("models/mdqa/real", gpus=True) == {"num_cpus": 1, "num_gpus": 1}
    assert stage_resources("heads/mdqa/base", gpus=False, cpus=2) == {"num_cpus": 2, "num_gpus": 0}
    assert stage_resources("data/mdqa/real", gpus=True)["num_gpus"] == 0
    assert stage_resources("report", gpus=True)["num_gpus"] == 0


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    # Workers import the stage functions of this file by reference: give them its folder.
    root = str(TESTS.parent)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=100 * 2**20, runtime_env={"env_vars": {"PYTHONPATH": f"{root}:{TESTS}"}})
    yield ray
    ray.shutdown()


def test_ray_runs_independent_stages_together_and_isolates_a_failure(tmp_path, ray_instance):
    with pytest.raises(StageFailures) as info:
        _graph(tmp_path, fail=True, meet=True).run(progress=False, log=lambda s: None, executor=RayExecutor())
    _check_failed_run(tmp_path, info.value)
    status = _graph(tmp_path, fail=False, meet=True).run(progress=False, log=lambda s: None, executor=RayExecutor())
    assert [n for n, s in status.items() if s != "skipped"] == ["b", "c", "d/x", "report"]
    assert json.loads((tmp_path / "report" / "v.json").read_text()) == 1 + 1 + 2 + 3 + 4 + 1 + 3 + 1


def test_a_stage_found_done_under_its_lock_is_not_run_again(tmp_path):
    from headlab.study.executor import run_locked

    p = _graph(tmp_path, fail=False)
    fps = p.fingerprints()
    seconds, digest = run_locked(p, "a", fps["a"], {})
    assert isinstance(seconds, float) and digest
    assert (tmp_path / ".locks" / "a.lock").is_file()
    assert run_locked(p, "a", fps["a"], {}) == (None, digest)  # e.g. finished by a task of a killed driver
