"""Fault injection on run folders: concurrent runs, kills at the worst moments, corrupted files.

Kills are simulated by raising KeyboardInterrupt (what SIGINT does) at the exact moment named, which a
real SIGKILL can only hit by luck; what is left on disk is the same, since nothing runs after the raise.
"""

import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file
from test_finetune import LENGTH, CountSteps, StopAt, cfg
from tiny import write_task_file

from headlab.core.errors import HeadlabError
from headlab.experiments.finetune import CHECKPOINT_MARKER, finetune
from headlab.study.pipeline import LOCK_FILE, Pipeline, Stage


@pytest.fixture(scope="module")
def train_file(tmp_path_factory, tiny_model_dir):
    return write_task_file(tmp_path_factory.mktemp("ftdata") / "train.jsonl", tiny_model_dir, 4, LENGTH, seed=0)


HOLD = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from headlab.study.pipeline import run_folder_lock
    with run_folder_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
''')


def _chain(root, calls, noise=None):
    """a -> b -> c; with `noise`, a's output differs on every run (a nondeterministic stage)."""
    p = Pipeline(root)

    def make(name, deps):
        def run(ctx):
            calls.append(name)
            v = 1 + sum(json.loads((ctx.deps[d] / "v.json").read_text()) for d in deps)
            if noise is not None and name == "a":
                v += next(noise)
            (ctx.out / "v.json").write_text(json.dumps(v))
        return run

    p.add(Stage("a", {}, make("a", [])))
    p.add(Stage("b/x", {}, make("b/x", ["a"]), deps=["a"]))
    p.add(Stage("c", {}, make("c", ["b/x"]), deps=["b/x"]))
    return p


def test_second_run_on_a_locked_folder_gets_one_line_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        calls = []
        with pytest.raises(HeadlabError, match=f"in use by pid {holder.pid} on ") as e:
            _chain(tmp_path, calls).run(progress=False, log=lambda s: None)
        assert calls == [] and "\n" not in str(e.value)
        assert not (tmp_path / "a").exists()
        # Through the CLI: exit 2, one line, before any stage.
        out = subprocess.run([sys.executable, "-m", "headlab.cli", "study", "--preset", "quick", "--no-progress",
                              "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and f"pid {holder.pid}" in out.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking: its lock is stale and simply taken over.
    assert "pid" in (tmp_path / LOCK_FILE).read_text()
    calls = []
    _chain(tmp_path, calls).run(progress=False, log=lambda s: None)
    assert calls == ["a", "b/x", "c"]


def test_kill_between_last_write_and_rename_reuses_the_whole_stage(tmp_path, monkeypatch):
    calls = []
    real_swap = Pipeline._swap_in

    def killed_at_b(self, name, scratch):
        if name == "b/x":
            raise KeyboardInterrupt
        real_swap(self, name, scratch)

    monkeypatch.setattr(Pipeline, "_swap_in", killed_at_b)
    with pytest.raises(KeyboardInterrupt):
        _chain(tmp_path, calls).run(progress=False, log=lambda s: None)
    assert calls == ["a", "b/x"] and not (tmp_path / "b" / "x").exists()
    monkeypatch.setattr(Pipeline, "_swap_in", real_swap)
    calls.clear()
    _chain(tmp_path, calls).run(progress=False, log=lambda s: None)
    assert calls == ["c"]  # b/x was whole in scratch: verified and moved in, not recomputed
    assert json.loads((tmp_path / "c" / "v.json").read_text()) == 3


def test_corrupted_output_recomputes_the_stage_and_what_read_it(tmp_path):
    calls, lines = [], []
    noise = iter(range(100))
    _chain(tmp_path, calls, noise).run(progress=False, log=lines.append)
    # A deterministic stage recomputed to the same files leaves its dependants valid ...
    (tmp_path / "b" / "x" / "v.json").write_text("99")  # a hand edit
    calls.clear(), lines.clear()
    _chain(tmp_path, calls, noise).run(progress=False, log=lines.append)
    assert calls == ["b/x"]
    assert [s for s in lines if "recomputing" in s] == [
        "[study] b/x: v.json does not match its recorded sha256; recomputing it and what depends on it"]
    assert json.loads((tmp_path / "b" / "x" / "v.json").read_text()) == 2
    # ... while one whose recomputed files differ takes every stage that read the old ones with it.
    (tmp_path / "a" / "v.json").unlink()
    calls.clear(), lines.clear()
    _chain(tmp_path, calls, noise).run(progress=False, log=lines.append)
    assert calls == ["a", "b/x", "c"]
    assert "[study] a: v.json is missing; recomputing it and what depends on it" in lines
    assert "[study] b/x: it read a, which has changed since; recomputing it and what depends on it" in lines
    assert json.loads((tmp_path / "c" / "v.json").read_text()) == 3 + 1


@pytest.mark.parametrize("content", [b"[]", b"\x80\x81\xff\x00binary", b'{"fingerprint": 5}', b""])
def test_corrupt_stage_json_means_not_finished(tmp_path, content):
    calls, lines = [], []
    _chain(tmp_path, calls).run(progress=False, log=lines.append)
    (tmp_path / "b" / "x" / "stage.json").write_bytes(content)
    calls.clear()
    _chain(tmp_path, calls).run(progress=False, log=lines.append)
    assert calls == ["b/x"]
    assert "[study] b/x: stage.json is unreadable or from an older headlab; recomputing it and what depends " \
           "on it" in lines


def test_kill_inside_a_checkpoint_save_resumes_from_the_last_complete_one(tiny_model_dir, train_file, tmp_path,
                                                                        monkeypatch):
    from transformers import Trainer

    straight = cfg(tiny_model_dir, train_file, tmp_path / "a", save_steps=1, lora_dropout=0.1)
    finetune(straight)
    real_save_rng = Trainer._save_rng_state

    def killed_in_save(self, output_dir):
        if self.state.global_step == 3:  # weights and optimizer written, RNG and trainer state not yet
            raise KeyboardInterrupt
        real_save_rng(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", killed_in_save)
    broken = cfg(tiny_model_dir, train_file, tmp_path / "b", save_steps=1, lora_dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        finetune(broken)
    monkeypatch.setattr(Trainer, "_save_rng_state", real_save_rng)
    ck = tmp_path / "b" / "checkpoints"
    assert (ck / "checkpoint-3").is_dir() and not (ck / "checkpoint-3" / CHECKPOINT_MARKER).exists()
    counter = CountSteps()
    finetune(broken, resume=True, callbacks=[counter])
    assert counter.steps == [3, 4]  # from checkpoint-2, the incomplete checkpoint-3 ignored
    a = load_file(tmp_path / "a" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_tampered_checkpoint_is_not_resumed(tiny_model_dir, train_file, tmp_path):
    run = cfg(tiny_model_dir, train_file, tmp_path / "b")
    assert finetune(run, callbacks=[StopAt(2)]) == {"stopped_at_step": 2}
    (tmp_path / "b" / "checkpoints" / "checkpoint-2" / "scheduler.pt").write_bytes(b"not what the run wrote")
    counter = CountSteps()
    finetune(run, resume=True, callbacks=[counter])
    assert counter.steps == [1, 2, 3, 4]


def _finetune_study(root, model_dir, data_file, config):
    """The study's real fine-tune stage after a stage that provides its data."""
    import shutil

    from headlab.study.stages import run_finetune

    p = Pipeline(root)
    p.add(Stage("data", {}, lambda ctx: shutil.copy(data_file, ctx.out / "examples.jsonl")))
    p.add(Stage("model", {"data": "data", "context_length": None, "seed": 3,
                          "finetune": {"method": "lora", "lr": 1e-2, "steps": 2, "batch_size": 2, "save_steps": 1}},
                lambda ctx: run_finetune(ctx, config), deps=["data"]))
    return p


@pytest.mark.parametrize("kill_at", ["swap", "summary"])
def test_finetune_stage_killed_after_its_model_moved_keeps_the_model(tiny_model_dir, train_file, tmp_path,
                                                                     monkeypatch, kill_at):
    from headlab.study import stages
    from headlab.study.config import StudyConfig

    config = StudyConfig(base_model=str(tiny_model_dir))
    real_swap, real_write = Pipeline._swap_in, stages.atomic_write_json

    def kill_swap(self, name, scratch):
        if name == "model":
            raise KeyboardInterrupt
        real_swap(self, name, scratch)

    def kill_write(path, obj):  # the model is in the stage folder, its summary not yet
        raise KeyboardInterrupt

    if kill_at == "swap":
        monkeypatch.setattr(Pipeline, "_swap_in", kill_swap)
    else:
        monkeypatch.setattr(stages, "atomic_write_json", kill_write)
    with pytest.raises(KeyboardInterrupt):
        _finetune_study(tmp_path / "run", tiny_model_dir, train_file, config).run(progress=False, log=print)
    monkeypatch.setattr(Pipeline, "_swap_in", real_swap)
    monkeypatch.setattr(stages, "atomic_write_json", real_write)
    trained = []
    monkeypatch.setattr("headlab.experiments.finetune.finetune", lambda *a, **k: trained.append(1))
    _finetune_study(tmp_path / "run", tiny_model_dir, train_file, config).run(progress=False, log=print)
    assert trained == []  # the trained model survived: nothing retrained
    assert (tmp_path / "run" / "model" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / ".work").exists() or not any((tmp_path / "run" / ".work").iterdir())


def test_copied_run_folder_resumes_an_interrupted_finetune(tiny_model_dir, train_file, tmp_path, monkeypatch):
    import shutil

    from headlab.study.config import StudyConfig

    config = StudyConfig(base_model=str(tiny_model_dir))
    stop = StopAt(1)
    real = finetune
    monkeypatch.setattr("headlab.experiments.finetune.finetune",
                        lambda c, resume=False: real(c, resume, callbacks=[stop]))
    with pytest.raises(HeadlabError, match="summary.json"):  # stopped early: no model, as a kill leaves it
        _finetune_study(tmp_path / "run", tiny_model_dir, train_file, config).run(progress=False, log=print)
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    shutil.rmtree(tmp_path / "run")
    counter = CountSteps()
    monkeypatch.setattr("headlab.experiments.finetune.finetune",
                        lambda c, resume=False: real(c, resume, callbacks=[counter]))
    _finetune_study(tmp_path / "copy", tiny_model_dir, train_file, config).run(progress=False, log=print)
    assert counter.steps == [2]  # resumed from checkpoint-1 of the original folder


def test_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text("pid 999999 on nowhere\n")
    calls = []
    start = time.time()
    _chain(tmp_path, calls).run(progress=False, log=lambda s: None)
    assert calls == ["a", "b/x", "c"] and time.time() - start < 60


def test_command_killed_while_drawing_leaves_its_old_outputs_whole(tmp_path, monkeypatch, capsys):
    from headlab.cli import main
    from headlab.core import plots

    out = tmp_path / "out"
    for name, score in (("a.json", 0.25), ("b.json", 0.75)):
        (tmp_path / name).write_text(json.dumps({"0-0": [score], "1-1": [0.5]}))
    assert main(["heads", "import", str(tmp_path / "a.json"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "head_heatmap", killed)
    assert main(["heads", "import", str(tmp_path / "b.json"), "--out", str(out)]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not b's scores beside a's summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "out"]
    monkeypatch.undo()
    assert main(["heads", "import", str(tmp_path / "b.json"), "--out", str(out)]) == 0
    assert json.loads((out / "retrieval_scores.json").read_text())["0-0"] == [0.75]
    assert f"into {out}" in capsys.readouterr().out  # messages name the real folder, not the scratch one


class _Planted:
    def __reduce__(self):  # what a malicious pickle does on load: call anything
        return (print, ("planted code ran",))


def test_a_planted_pickle_in_a_checkpoint_is_refused_in_one_line(tiny_model_dir, train_file, tmp_path):
    from headlab.core.io import atomic_write_json
    from headlab.experiments.finetune import _folder_hashes

    run = cfg(tiny_model_dir, train_file, tmp_path / "b")
    assert finetune(run, callbacks=[StopAt(2)]) == {"stopped_at_step": 2}
    folder = tmp_path / "b" / "checkpoints" / "checkpoint-2"
    torch.save({"python": _Planted()}, folder / "rng_state.pth")
    atomic_write_json(folder / CHECKPOINT_MARKER, _folder_hashes(folder))  # anyone can write the hashes too
    with pytest.raises(HeadlabError, match="checkpoint-2: a checkpoint file was refused by the weights-only"):
        finetune(run, resume=True)


HOLD_FINETUNE = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from headlab.core.io import folder_lock
    out = Path(sys.argv[1])
    with folder_lock(out.with_name(f".{out.name}.lock"), out, remove=True):
        print("held", flush=True)
        time.sleep(60)
''')


def test_a_second_finetune_on_the_same_out_names_the_holder_and_writes_nothing(tiny_model_dir, train_file,
                                                                               tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FINETUNE, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HeadlabError, match=f"run folder in use by pid {holder.pid} on "):
            finetune(cfg(tiny_model_dir, train_file, out))
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    finetune(cfg(tiny_model_dir, train_file, out, steps=1))
    assert (out / "model").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
