"""Resumable stages over a run folder.

A stage is named by a path inside the run folder (`models/mdqa/real`), has the inputs that decide its
output (a JSON-serialisable dict) and the stages it reads. Its fingerprint hashes its inputs and its
dependencies' fingerprints, so changing an earlier stage's config recomputes that stage and everything
downstream of it, and nothing else.

A stage writes into a scratch folder; only when it returns are `config.json` and `stage.json` (the
fingerprint) added and the folder moved into place. A killed run leaves no half-written stage behind, and
re-running skips every stage whose `stage.json` matches. Stages that checkpoint their own progress (a
fine-tune) get a persistent work folder that survives interruption.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from headlab.errors import HeadlabError
from headlab.io import atomic_write_json

STAGE_FILE = "stage.json"
CONFIG_FILE = "config.json"


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

    def is_done(self, name: str, fp: str) -> bool:
        marker = self.folder(name) / STAGE_FILE
        if not marker.is_file():
            return False
        try:
            return json.loads(marker.read_text()).get("fingerprint") == fp
        except json.JSONDecodeError:
            return False

    def run(self, progress: bool = True, log: Callable[[str], None] = print, executor=None) -> dict[str, str]:
        """Run every stage not already done; returns name -> 'skipped' | seconds taken.

        `executor` (headlab/study/executor.py, e.g. RayExecutor) runs the stages concurrently instead of one
        after another here; each stage still goes through `_run_stage`."""
        if executor is not None:
            return executor.run(self, progress=progress, log=log)
        fps = self.fingerprints()
        status: dict[str, str] = {}
        bar = tqdm(self.stages.values(), desc="study", unit="stage", disable=not progress)
        for stage in bar:
            bar.set_postfix_str(stage.name)
            fp = fps[stage.name]
            if self.is_done(stage.name, fp):
                status[stage.name] = "skipped"
                continue
            status[stage.name] = f"{self._run_stage(stage, fp):.1f}s"
            log(f"[study] {stage.name}: done in {status[stage.name]}")
        return status

    def _run_stage(self, stage: Stage, fp: str) -> float:
        final = self.folder(stage.name)
        scratch = self.root / ".scratch" / stage.name
        work = self.root / ".work" / f"{stage.name}-{fp}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        stage.run(StageContext(scratch, work, {d: self.folder(d) for d in stage.deps}, stage.inputs))
        seconds = time.perf_counter() - start
        atomic_write_json(scratch / CONFIG_FILE, {"stage": stage.name, "inputs": stage.inputs, "deps": stage.deps})
        atomic_write_json(scratch / STAGE_FILE, {"fingerprint": fp, "seconds": round(seconds, 2)})
        # Swap into place: the old folder goes aside first, so at no moment is a stale stage.json visible
        # under the final name with new contents half-moved.
        if final.exists():
            trash = self.root / ".trash" / f"{stage.name}-{time.time_ns()}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(final)
        shutil.rmtree(work, ignore_errors=True)
        return seconds
