"""Links, locks, dead-process scratch and misplaced needles (issue #21): every case gives a whole result or one
line, and nothing outside the folder headlab owns is touched."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny import build_tokenizer

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.core.io import staged_folder
from headlab.data.probes import text_probe
from headlab.study.pipeline import LOCK_FILE, Pipeline, Stage, run_folder_lock


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_text("do not truncate me\n")
    return path


def test_a_lock_linked_to_a_file_elsewhere_is_refused_and_the_file_kept(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).symlink_to(victim)
    with pytest.raises(HeadlabError, match="lock file is a symbolic link"):
        with run_folder_lock(run):
            pass
    assert victim.read_text() == "do not truncate me\n"


def test_a_lock_hard_linked_to_a_file_elsewhere_is_refused(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    os.link(victim, run / LOCK_FILE)
    with pytest.raises(HeadlabError, match="not a plain file"):
        with run_folder_lock(run):
            pass
    assert victim.read_text() == "do not truncate me\n"


def test_the_lock_is_written_in_place_never_truncated(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("x" * 1000)
    with run_folder_lock(run):
        held = (run / LOCK_FILE).read_text()
    assert held.startswith(f"pid {os.getpid()} on ") and len(held) == 1000  # record overwritten, length kept


@pytest.mark.parametrize("kind", ["dangling", "folder", "file"])
def test_a_linked_out_is_one_line_and_nothing_written(tmp_path, victim, capsys, kind):
    target = {"dangling": tmp_path / "nowhere", "folder": victim.parent, "file": victim}[kind]
    out = tmp_path / "out"
    out.symlink_to(target)
    before = sorted(p.name for p in victim.parent.iterdir())
    with pytest.raises(HeadlabError, match="symbolic link"):
        with staged_folder(out):
            pass
    code = main(["heads", "import", str(write_scores(tmp_path)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("headlab: error: ") and err.count("\n") == 1 and "symbolic link" in err
    assert sorted(p.name for p in victim.parent.iterdir()) == before
    assert victim.read_text() == "do not truncate me\n"


def write_scores(tmp_path: Path) -> Path:
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"0-0": [0.5], "0-1": [0.25]}))
    return path


def test_scratch_of_a_killed_run_is_removed_by_the_next(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.partial-{dead}"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "half.json").write_text("{")
    with staged_folder(out) as scratch:
        scratch.mkdir()
        (scratch / "result.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no scratch, no lock file left
    assert (out / "result.json").read_text() == "{}"


HOLD = textwrap.dedent('''
    import sys, time
    from headlab.core.io import staged_folder
    with staged_folder(sys.argv[1]) as scratch:
        print("held", flush=True)
        time.sleep(60)
''')


def test_two_commands_on_one_out_the_loser_names_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(HeadlabError, match=f"run folder in use by pid {holder.pid} on "):
            with staged_folder(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with staged_folder(out) as scratch:  # the kernel dropped the dead holder's lock
        scratch.mkdir()
        (scratch / "r.json").write_text("1")
    assert (out / "r.json").read_text() == "1"


def test_a_scratch_stage_linked_to_a_decoy_is_replaced_not_followed(tmp_path):
    root, decoy = tmp_path / "run", tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "keep.txt").write_text("decoy")

    def run(ctx):
        (ctx.out / "v.json").write_text("1")

    pipeline = Pipeline(root)
    pipeline.add(Stage("a", {}, run))
    pipeline.run(progress=False)
    (root / "a" / "v.json").write_text("2")  # the output edited: the stage is recomputed
    (root / ".scratch").mkdir(exist_ok=True)
    (root / ".scratch" / "a").symlink_to(decoy, target_is_directory=True)
    pipeline.run(progress=False)
    assert (root / "a" / "v.json").read_text() == "1" and not (root / "a").is_symlink()
    assert sorted(p.name for p in decoy.iterdir()) == ["keep.txt"]


def test_a_needle_only_in_the_question_is_not_found():
    tok = build_tokenizer()
    needle = "Mara Quill was born in Tovesk."
    with pytest.raises(HeadlabError, match="p3: needle not found in the context"):
        text_probe(tok, "The grass is green. The sky is blue.", needle, f"Is it true that {needle}", probe_id="p3")
    probe = text_probe(tok, f"The grass is green. {needle}", needle, f"Is it true that {needle}")
    assert probe.needle_end <= len(tok(f"The grass is green. {needle}")["input_ids"]) + 1


@pytest.mark.parametrize("name,text", [("spec.json", "[" * 100_000 + "]" * 100_000),
                                       ("spec.yaml", "[" * 100_000 + "]" * 100_000)])
def test_documents_nested_too_deeply_are_one_line(tmp_path, name, text):
    from headlab.data.niah import load_niah_spec

    (tmp_path / name).write_text(text)
    with pytest.raises(HeadlabError, match=f"{name}: cannot parse spec \\(nested too deeply\\)"):
        load_niah_spec(tmp_path / name)


def test_a_config_nested_too_deeply_is_one_line(tmp_path, capsys):
    config = tmp_path / "deep.yaml"
    config.write_text("lr: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["detect", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "deep.yaml: cannot parse (nested too deeply)" in err
    assert not (tmp_path / "out").exists()


def test_a_path_with_a_newline_stays_one_line(tmp_path, capsys):
    odd = tmp_path / "probes\nsecond.jsonl"
    assert main(["detect", "--probes", str(odd), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("headlab: error: ") and err.count("\n") == 1 and "probes\\nsecond.jsonl" in err


def test_a_chat_template_reaching_for_os_is_one_line_naming_it(tiny_model_dir):
    from headlab.data.prompts import render_prompt
    from headlab.model.loading import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = "{{ ''.__class__.__mro__[1].__subclasses__() }}{{ cycler.__init__.__globals__.os }}"
    with pytest.raises(HeadlabError, match="chat template (refused by the sandbox|failed)"):
        render_prompt(tok, "The sky is blue.", "What colour?")


def test_a_context_too_large_for_any_tokenization_is_refused_before_tokenizing(tmp_path, monkeypatch):
    from headlab.data import probes
    from headlab.data.probe_files import load_probes

    tok = build_tokenizer()
    path = tmp_path / "huge.jsonl"
    record = {"context": "x" * (probes.MAX_CHARS_PER_TOKEN * 16 + 1), "needle": "x", "question": "q?"}
    path.write_text(json.dumps(record) + "\n")
    monkeypatch.setattr(probes, "text_probe", lambda *a, **k: pytest.fail("tokenized"))
    with pytest.raises(HeadlabError, match=r"huge.jsonl:1: field 'context': 1,025 characters cannot fit"):
        load_probes(path, tok, max_positions=16)


def test_a_stage_lock_linked_elsewhere_is_refused_by_the_distributed_executor(tmp_path, victim):
    from headlab.study.executor import run_locked

    pipeline = Pipeline(tmp_path / "run")
    pipeline.add(Stage("a", {}, lambda ctx: (ctx.out / "v.json").write_text("1")))
    (pipeline.root / ".locks").mkdir(parents=True)
    (pipeline.root / ".locks" / "a.lock").symlink_to(victim)
    with pytest.raises(HeadlabError, match="lock file is a symbolic link"):
        run_locked(pipeline, "a", pipeline.fingerprints()["a"], {})
    assert victim.read_text() == "do not truncate me\n" and not (pipeline.root / "a").exists()
