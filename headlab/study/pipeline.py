"""Resumable stages over a run folder.

A stage is named by a path inside the run folder (`models/mdqa/real`), has the inputs that decide its
output (a JSON-serialisable dict) and the stages it reads. Its fingerprint hashes its inputs and its
dependencies' fingerprints, so changing an earlier stage's config recomputes that stage and everything
downstream of it, and nothing else.

A stage writes into a scratch folder; only when it returns are `config.json` and `stage.json` (the
fingerprint, the sha256 of every output file, and the digests of the dependencies it read) added and the
folder moved into place. A killed run leaves no half-written stage behind, and re-running skips every stage
whose `stage.json` matches and whose files still hash to what was recorded; a stage whose files changed is
recomputed, and so is every stage that read the old files. Stages that checkpoint their own progress (a
fine-tune) get a persistent work folder that survives interruption. One run at a time holds the folder
(an OS lock on `.lock`, released by the kernel when its process dies, so a stale lock never blocks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from headlab.core.errors import HeadlabError
from headlab.core.inputs import check_out
from headlab.core.io import atomic_write_json, file_sha256, folder_lock
from headlab.core.progress import progress_bar

STAGE_FILE = "stage.json"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


@dataclass
class StageContext:
    out: Path  # where the stage writes (a scratch folder, moved into place when the stage returns)
    work: Path  # persistent across interruptions: checkpoints of long stages
    deps: dict[str, Path]  # dependency name -> its finished folder
    inputs: dict


@dataclass
class Stage:
    name: str
    inputs: dict
    run: Callable[[StageContext], None]
    deps: list[str] = field(default_factory=list)


def fingerprint(inputs: dict, dep_fingerprints: list[str]) -> str:
    blob = json.dumps({"inputs": inputs, "deps": dep_fingerprints}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def output_hashes(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file a stage wrote (its stage.json aside)."""
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.relative_to(folder).as_posix() != STAGE_FILE}


def digest(outputs: dict[str, str]) -> str:
    """One hash of a stage's outputs: what a dependant records to notice that they changed under it."""
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()[:16]


def read_marker(path: Path) -> dict | None:
    """A stage.json as a dict with the fields resumption needs, or None for anything else (missing, `[]`,
    binary, an older format): an unreadable marker means "not finished", never a crash."""
    try:
        marker = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = (isinstance(marker, dict) and isinstance(marker.get("fingerprint"), str)
          and isinstance(marker.get("outputs"), dict) and isinstance(marker.get("deps"), dict)
          and all(isinstance(k, str) and isinstance(v, str) for k, v in marker["outputs"].items()))
    return marker if ok else None


def run_folder_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """Hold `root/.lock` for the duration (`io.folder_lock`): one run at a time per folder."""
    root = check_out(root)  # a link (dangling or not) or a file as the run folder is one line
    root.mkdir(parents=True, exist_ok=True)
    return folder_lock(root / LOCK_FILE, root)


def remove_path(path: Path) -> None:
    """Remove what is at `path`: a symbolic link itself (never what it points to), a file, or a folder."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


class Pipeline:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stages: dict[str, Stage] = {}

    def add(self, stage: Stage) -> Stage:
        if stage.name in self.stages:
            raise HeadlabError(f"stage {stage.name} defined twice")
        missing = [d for d in stage.deps if d not in self.stages]
        if missing:  # stages are added in dependency order, which is also the run order
            raise HeadlabError(f"stage {stage.name} depends on undefined stage(s): {', '.join(missing)}")
        self.stages[stage.name] = stage
        return stage

    def folder(self, name: str) -> Path:
        return self.root / name

    def fingerprints(self) -> dict[str, str]:
        fps: dict[str, str] = {}
        for name, stage in self.stages.items():
            fps[name] = fingerprint(stage.inputs, [fps[d] for d in stage.deps])
        return fps

    def check_done(self, stage: Stage, fp: str, digests: dict[str, str],
                   folder: Path | None = None) -> tuple[str | None, str | None]:
        """(digest of its outputs, None) when the finished stage can be reused as it is on disk, else
        (None, why not) - the reason is None for the ordinary cases (never run, settings changed)."""
        folder = folder or self.folder(stage.name)
        path = folder / STAGE_FILE
        if not path.exists():
            return None, None
        marker = read_marker(path)
        if marker is None:
            return None, f"{STAGE_FILE} is unreadable or from an older headlab"
        if marker["fingerprint"] != fp:
            return None, None
        for dep in stage.deps:
            if marker["deps"].get(dep) != digests.get(dep):
                return None, f"it read {dep}, which has changed since"
        for rel, sha in marker["outputs"].items():
            file = folder / rel
            if not file.is_file():
                return None, f"{rel} is missing"
            if file_sha256(file) != sha:
                return None, f"{rel} does not match its recorded sha256"
        return digest(marker["outputs"]), None

    def run(self, progress: bool = True, log: Callable[[str], None] = print, executor=None) -> dict[str, str]:
        """Run every stage not already done; returns name -> 'skipped' | seconds taken.

        `executor` (headlab/study/executor.py, e.g. RayExecutor) runs the stages concurrently instead of one
        after another here; each stage still goes through `reuse` and `_run_stage`, under this run's lock."""
        with run_folder_lock(self.root):
            shutil.rmtree(self.root / ".trash", ignore_errors=True)  # old folders a killed swap left aside
            if executor is not None:
                return executor.run(self, progress=progress, log=log)
            return self._run_locked(progress, log)

    def reuse(self, stage: Stage, fp: str, digests: dict[str, str],
              log: Callable[[str], None] | None = None) -> str | None:
        """The digest of a finished stage's outputs when it can be reused as it is, else None (and, when it
        had finished but no longer checks out, one line saying why)."""
        done, why = self.check_done(stage, fp, digests)
        if done is None:
            # A run killed between writing a stage's stage.json and moving it into place left it whole in
            # scratch: verified like any finished stage, it is moved in instead of recomputed.
            scratch = self._scratch(stage.name)
            # a link planted there is never moved in: only a real folder this run wrote can be
            done, _ = (None, None) if scratch.is_symlink() else self.check_done(stage, fp, digests, scratch)
            if done is not None:
                self._swap_in(stage.name, scratch)
                shutil.rmtree(self._work(stage.name, fp), ignore_errors=True)
        if done is None and why and log is not None:
            log(f"[study] {stage.name}: {why}; recomputing it and what depends on it")
        return done

    def _run_locked(self, progress: bool, log: Callable[[str], None]) -> dict[str, str]:
        for private in (".scratch", ".work", ".trash", ".locks"):  # a planted link would send writes elsewhere
            if (self.root / private).is_symlink():
                (self.root / private).unlink()
        fps = self.fingerprints()
        digests: dict[str, str] = {}
        status: dict[str, str] = {}
        bar = progress_bar(self.stages.values(), desc="study", unit="stage", disable=not progress)
        for stage in bar:
            bar.set_postfix_str(stage.name)
            fp = fps[stage.name]
            done = self.reuse(stage, fp, digests, log)
            if done is not None:
                digests[stage.name] = done
                status[stage.name] = "skipped"
                continue
            seconds, digests[stage.name] = self._run_stage(stage, fp, digests)
            status[stage.name] = f"{seconds:.1f}s"
            log(f"[study] {stage.name}: done in {status[stage.name]}")
        return status

    def _scratch(self, name: str) -> Path:
        return self.root / ".scratch" / name

    def _work(self, name: str, fp: str) -> Path:
        return self.root / ".work" / f"{name}-{fp}"

    def _run_stage(self, stage: Stage, fp: str, digests: dict[str, str]) -> tuple[float, str]:
        scratch = self._scratch(stage.name)
        work = self._work(stage.name, fp)
        remove_path(scratch)
        scratch.mkdir(parents=True)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        stage.run(StageContext(scratch, work, {d: self.folder(d) for d in stage.deps}, stage.inputs))
        seconds = time.perf_counter() - start
        atomic_write_json(scratch / CONFIG_FILE, {"stage": stage.name, "inputs": stage.inputs, "deps": stage.deps})
        outputs = output_hashes(scratch)
        # stage.json is the last file written: a scratch folder holding one is whole.
        atomic_write_json(scratch / STAGE_FILE, {"fingerprint": fp, "seconds": round(seconds, 2),
                                                 "deps": {d: digests[d] for d in stage.deps}, "outputs": outputs})
        self._swap_in(stage.name, scratch)
        shutil.rmtree(work, ignore_errors=True)
        return seconds, digest(outputs)

    def _swap_in(self, name: str, scratch: Path) -> None:
        # The old folder goes aside first, so at no moment is a stale stage.json visible under the final
        # name with new contents half-moved; a kill between the two renames leaves the new stage whole in
        # scratch, where the next run finds it.
        final = self.folder(name)
        if final.exists():
            trash = self.root / ".trash" / f"{name}-{time.time_ns()}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(final)
