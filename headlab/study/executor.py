"""Running a study's stages concurrently: every stage whose dependencies are done starts at once.

    headlab study --executor ray                  # a local Ray instance on this machine
    headlab study --executor ray --address auto   # the Ray cluster this node belongs to (docs/scale.md)

`Pipeline.run` alone runs the stages one after another in one process (the default, no Ray needed). With an
executor it hands the scheduling here; each stage still runs through `Pipeline._run_stage`, unchanged, so
the pipeline's contract holds: fingerprints decide what is done, a finished stage is never recomputed, a
stage appears whole or not at all (scratch folder, then rename), and a killed driver is finished by
re-running it. The run folder must be on a file system every node sees.

A stage that raises stops the stages that depend on it, directly or not; stages that do not depend on it
still run to the end. The failures are then raised together as one line (`StageFailures`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError
from headlab.core.io import open_lock_file
from headlab.core.progress import progress_bar
from headlab.study.pipeline import Pipeline

# Stages that run a model: on a GPU when the cluster has GPUs. Data, compare and report need a CPU only.
MODEL_STAGES = ("models/", "eval/", "heads/", "knockout/", "patch/", "niah/")


class StageFailures(HeadlabError):
    """One or more stages raised; `status` is the run's status (failed and blocked stages included)."""

    def __init__(self, failures: dict[str, str], blocked: list[str], status: dict[str, str]):
        self.failures, self.blocked, self.status = failures, blocked, status
        finished = sum(1 for v in status.values() if v not in ("failed", "blocked"))
        listed = "; ".join(f"{name} ({why})" for name, why in failures.items())
        super().__init__(f"study: {len(failures)} stage(s) failed: {listed}; {len(blocked)} dependent stage(s) "
                         f"not run; {finished} other stage(s) done (re-run to retry)")


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(error, HeadlabError) else f"{type(error).__name__}: {first}".rstrip(": ")


def schedule(pipeline: Pipeline, submit: Callable[[str, str, dict[str, str]], Any],
             wait: Callable[[list[Any]], list[tuple[Any, tuple[float | None, str] | BaseException]]],
             progress: bool = True, log: Callable[[str], None] = print) -> dict[str, str]:
    """The dependency-driven loop, for any backend: `submit(name, fingerprint, dependency digests)` starts a
    stage and returns a handle; `wait(handles)` blocks until at least one finishes and returns (handle,
    outcome): (seconds taken or None when it was found done, digest of its outputs), or the exception it raised.

    A stage is checked for reuse only once its dependencies are resolved, since reuse compares the digests of
    what it read (pipeline.py); a stage whose dependencies all check out and which checks out itself is skipped.
    """
    fps = pipeline.fingerprints()
    status: dict[str, str] = {}
    digests: dict[str, str] = {}
    pending = list(pipeline.stages)  # definition order, which is dependency order
    running: dict[Any, str] = {}
    failures: dict[str, str] = {}
    blocked: list[str] = []
    bar = progress_bar(total=len(pending), desc="study", unit="stage", disable=not progress)
    while pending or running:
        for name in list(pending):  # in order, so a skipped stage frees its dependants in the same pass
            stage = pipeline.stages[name]
            if not all(d in digests for d in stage.deps):
                continue
            pending.remove(name)
            done = pipeline.reuse(stage, fps[name], digests, log)
            if done is not None:
                digests[name], status[name] = done, "skipped"
                bar.update(1)
            else:
                running[submit(name, fps[name], {d: digests[d] for d in stage.deps})] = name
        if not running:  # nothing can start: what is left waits on a failed stage
            break
        for handle, outcome in wait(list(running)):
            name = running.pop(handle)
            bar.update(1)
            if isinstance(outcome, BaseException):
                status[name] = "failed"
                failures[name] = one_line(outcome)
                log(f"[study] {name}: failed ({failures[name]})")
                # Dependants of a failed stage never start; pending is in dependency order, so one pass
                # reaches dependants of dependants.
                for other in list(pending):
                    if any(status.get(d) in ("failed", "blocked") for d in pipeline.stages[other].deps):
                        pending.remove(other)
                        status[other] = "blocked"
                        blocked.append(other)
                continue
            seconds, digests[name] = outcome
            if seconds is None:  # finished meanwhile by a task of an earlier, killed driver
                status[name] = "skipped"
            else:
                status[name] = f"{seconds:.1f}s"
                log(f"[study] {name}: done in {status[name]}")
    bar.close()
    if failures:
        raise StageFailures(failures, blocked, status)
    return status


def stage_resources(name: str, gpus: bool, cpus: int = 1) -> dict[str, float]:
    """Ray resources of one stage: a GPU for the stages that run a model when the cluster has GPUs."""
    return {"num_cpus": cpus, "num_gpus": 1 if gpus and name.startswith(MODEL_STAGES) else 0}


def run_locked(pipeline: Pipeline, name: str, fp: str, digests: dict[str, str]) -> tuple[float | None, str]:
    """`_run_stage` under a lock file per stage in the run folder: (seconds, digest of its outputs), seconds
    None when the stage turned out done.

    When a driver is killed, Ray takes a few seconds to stop its running tasks; a re-run that starts the
    same stage meanwhile waits here until the old task has died (the kernel drops its lock with it), then
    finds the stage done or runs it alone. POSIX locks also hold across nodes on NFS.
    """
    lock = pipeline.root / ".locks" / (name.replace("/", "__") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    stage = pipeline.stages[name]
    with os.fdopen(open_lock_file(lock), "r+b") as handle:  # never through a link planted in .locks/
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): run unguarded
            fcntl = None
        if fcntl is not None:
            fcntl.lockf(handle, fcntl.LOCK_EX)
        done = pipeline.reuse(stage, fp, digests)
        if done is not None:
            return None, done
        return pipeline._run_stage(stage, fp, digests)


class RayExecutor:
    """Each ready stage is a Ray task with the resources `stage_resources` gives it.

    `address` None starts a local Ray instance (`num_cpus` CPUs, all of this machine's by default) unless
    one is already running in this process; "auto" or "ray://host:port" joins a cluster.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_stage: int = 1,
                 use_gpus: bool = True, resources: Callable[[str, bool, int], dict] = stage_resources):
        self.address, self.num_cpus, self.cpus_per_stage = address, num_cpus, cpus_per_stage
        self.use_gpus = use_gpus  # False: model stages run on CPUs even where the cluster has GPUs
        self.resources = resources

    def run(self, pipeline: Pipeline, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, str]:
        try:
            import ray
        except ImportError:
            raise HeadlabError("--executor ray needs Ray: pip install 'headlab[ray]'") from None
        started = not ray.is_initialized()
        if started:
            self._init(ray)
        try:
            gpus = self.use_gpus and ray.cluster_resources().get("GPU", 0) > 0
            remote = ray.remote(run_locked)
            shared = ray.put(pipeline)  # one copy of the stage graph for every task

            def submit(name: str, fp: str, digests: dict[str, str]):
                return remote.options(name=name, **self.resources(name, gpus, self.cpus_per_stage)).remote(
                    shared, name, fp, digests)

            def wait(handles: list) -> list:
                ready, _ = ray.wait(handles, num_returns=1)
                out = []
                for ref in ready:
                    try:
                        out.append((ref, ray.get(ref)))
                    except ray.exceptions.RayTaskError as e:  # the stage raised: report its own exception
                        out.append((ref, e.cause if isinstance(e.cause, BaseException) else e))
                    except ray.exceptions.RayError as e:  # the worker died (out of memory, node lost)
                        out.append((ref, e))
                return out

            return schedule(pipeline, submit, wait, progress, log)
        finally:
            if started:
                ray.shutdown()

    def _init(self, ray) -> None:
        # Workers import headlab from where the driver does (a source checkout works without installing): the
        # folder above the package, two above this module.
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        kwargs: dict = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}, "logging_level": "ERROR",
                        "log_to_driver": False}  # worker logs stay in Ray's session folder
        if self.address is None:  # a new instance of our own, never a cluster that happens to run here
            kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
        try:
            ray.init(address=self.address or "local", **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise HeadlabError(f"--address {self.address}: cannot reach a Ray cluster ({one_line(e)})") from None
