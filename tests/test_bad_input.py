"""Every command against every class of bad input: exit 2, one stderr line naming the file and line or the
field/option, and the output path untouched (not created; an existing file keeps its bytes).

Cases are (id, argv built from the fixture files, fragments the one line must contain). The inputs are
tiny; every case fails before a model's weights are used, most before they are loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from headlab.cli import main
from headlab.core.errors import HeadlabError

BAD_UTF8 = b'{"id": "a", "text": "caf\xe9"}\n'


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir) -> dict[str, str]:
    from headlab.data.example import save_examples
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.model.loading import load_tokenizer

    root = tmp_path_factory.mktemp("bad-input")
    model = Path(tiny_model_dir)
    files: dict[str, Path] = {"model": model}
    save_examples(generate_examples(GenConfig("mdqa", "symbolic", "repetitive", n=2, length=200, seed=0,
                                              doc_sentences=(0, 1)), load_tokenizer(model)), root / "data.jsonl")
    files["data"] = root / "data.jsonl"
    first = (root / "data.jsonl").read_bytes().splitlines(keepends=True)[0]  # a valid record, then a bad byte
    (root / "latin1.jsonl").write_bytes(first + BAD_UTF8)
    (root / "latin1-first.jsonl").write_bytes(BAD_UTF8)
    (root / "latin1.json").write_bytes(BAD_UTF8)
    (root / "latin1.yaml").write_bytes(b"tasks: [caf\xe9]\n")
    (root / "latin1.txt").write_bytes(b"caf\xe9 au lait. " * 20)
    (root / "heads.json").write_text(json.dumps({"0-0": [0.5], "1-2": [0.9], "2-3": [0.1]}))
    (root / "zeros.json").write_text(json.dumps({"05-00": [0.5], "1-2": [0.9]}))
    (root / "arabic.json").write_text(json.dumps({"\u0665-\u0660": [0.5]}))
    (root / "text.txt").write_text("The sky is blue. Grass is green. " * 40)
    (root / "blank.txt").write_text("  \n\n ")
    niah = {"needles": [{"needle": "The code is 7.", "question": "What is the code?", "answer": "7"}],
            "depths": [0.5]}
    for name, hay, lengths in (("long", "text.txt", [100_000_000]), ("empty", "blank.txt", [200]),
                               ("nonutf8", "latin1.txt", [200]), ("short", "text.txt", [3]),
                               ("absolute", str(root / "*.txt"), [100_000_000])):
        (root / f"{name}.json").write_text(json.dumps({**niah, "haystack": [hay], "lengths": lengths}))
    (root / "badspec.yaml").write_text("haystack: [text.txt]\nneedles: [\n")
    (root / "file.txt").write_text("I am a file")
    # Found by tools/hostile_campaign.py: readers that bypassed the one text reader, empty inputs, a cache path.
    (root / "bb" / "nav").mkdir(parents=True)
    (root / "bb" / "nav" / "task.json").write_bytes(b'{"examples": [{"input": "caf\xe9", "target": "1"}]}')
    (root / "mmlu_test.csv").write_bytes(b"What is caf\xe9?,a,b,c,d,A\n")
    (root / "huge_test.csv").write_text('q,a,b,c,d,A\n"' + "x" * 200_000 + '",a,b,c,d,A\n')  # past csv's field limit
    (root / "empty.jsonl").write_bytes(b"")
    (root / "lofit.jsonl").write_text("".join(json.dumps({"prompt": f"Sky {w}. Sky", "completion": f" {w}"}) + "\n"
                                              for w in ("blue", "grey")))
    (root / "gsm8k.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    # Model folders broken in each way a download or a copy breaks them.
    for name in ("noconfig", "badconfig", "truncated", "pickle", "badtype"):
        shutil.copytree(model, root / name)
    config = json.loads((root / "badtype" / "config.json").read_text())
    (root / "badtype" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": "six"}))
    (root / "noconfig" / "config.json").unlink()
    (root / "badconfig" / "config.json").write_text("{not json")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "pickle" / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, root / "pickle" / "pytorch_model.bin")
    (root / "lora").mkdir()
    (root / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    torch.save({"w": torch.zeros(1)}, root / "lora" / "adapter_model.bin")
    files["task.json"] = root / "bb" / "nav" / "task.json"
    return {**{k: str(v) for k, v in files.items()}, "root": str(root),
            **{p.stem if p.is_dir() else p.name: str(p) for p in root.iterdir()}}


# (id, argv with {placeholders} from env, fragments of the one error line). {out} is a fresh path.
CASES = [
    # -- non-UTF-8 input files: named with the byte
    ("utf8-evaluate", "evaluate --model {model} --data {latin1.jsonl} --out {out}",
     ["latin1.jsonl:2", "not UTF-8 text (byte "]),
    ("utf8-finetune", "finetune --model {model} --data {latin1.jsonl} --out {out}", ["latin1.jsonl:2", "UTF-8"]),
    ("utf8-detect", "detect --model {model} --probes {latin1-first.jsonl} --out {out}",
     ["latin1-first.jsonl:1", "byte 24"]),
    ("utf8-knockout", "knockout --model {model} --heads {heads.json} --data {latin1.jsonl} --out {out}",
     ["latin1.jsonl:2", "UTF-8"]),
    ("utf8-heads-show", "heads show {latin1.json}", ["latin1.json", "byte 24"]),
    ("utf8-heads-import", "heads import {latin1.json} --out {out}", ["latin1.json", "UTF-8"]),
    ("utf8-compare", "compare {latin1.json} {heads.json} --out {out}", ["latin1.json", "UTF-8"]),
    ("utf8-data-show", "data show {latin1.jsonl}", ["latin1.jsonl:2", "UTF-8"]),
    ("utf8-data-convert", "data convert {latin1-first.jsonl} --format mdqa --out {out}",
     ["latin1-first.jsonl:1", "UTF-8"]),
    ("utf8-lofit", "lofit select --model {model} --data {latin1.jsonl} --out {out}", ["latin1.jsonl:2", "UTF-8"]),
    ("utf8-study", "study --config {latin1.yaml} --out {out}", ["latin1.yaml", "byte 11"]),
    ("utf8-haystack", "detect --model {model} --probes {nonutf8.json} --out {out}", ["latin1.txt", "byte 3"]),
    # -- --out that cannot be written: refused before any work
    ("out-file-detect", "detect --model {model} --out {file.txt}", ["--out", "file.txt", "not a folder"]),
    ("out-file-knockout", "knockout --heads {heads.json} --out {file.txt}", ["--out", "not a folder"]),
    ("out-file-evaluate", "evaluate --data {data} --out {file.txt}", ["--out", "not a folder"]),
    ("out-under-file", "niah --out {file.txt}/sub", ["--out", "file.txt is a file"]),
    ("out-dir-convert", "data convert {data} --format mdqa --out {root}", ["--out", "is a folder"]),
    ("out-file-study", "study --out {file.txt}", ["--out", "not a folder"]),
    # -- numbers: ranges, NaN/inf, non-ASCII digits
    ("batch-size-0", "detect --batch-size 0 --out {out}", ["--batch-size", ">= 1"]),
    ("batch-size-neg", "evaluate --data {data} --batch-size -2 --out {out}", ["--batch-size", ">= 1"]),
    ("max-new-0", "evaluate --data {data} --max-new-tokens 0 --out {out}", ["--max-new-tokens", ">= 1"]),
    ("max-new-neg", "niah --max-new-tokens -1 --out {out}", ["--max-new-tokens"]),
    ("limit-0", "knockout --heads {heads.json} --limit 0 --out {out}", ["--limit", ">= 1"]),
    ("limit-lofit", "lofit select --data {data} --limit -1 --out {out}", ["--limit"]),
    ("data-limit", "data convert {data} --format mdqa --limit 0 --out {out}", ["--limit"]),
    ("depth-bins-0", "evaluate --data {data} --depth-bins 0 --out {out}", ["--depth-bins"]),
    ("rank-0", "finetune --data {data} --lora-rank 0 --out {out}", ["--lora-rank"]),
    ("lofit-rank-0", "lofit tune --data {data} --method lora --rank 0 --out {out}", ["--rank"]),
    ("dropout-5", "finetune --data {data} --lora-dropout 5 --out {out}", ["--lora-dropout", "[0, 1)"]),
    ("dropout-1", "finetune --data {data} --lora-dropout 1 --out {out}", ["--lora-dropout"]),
    ("warmup-neg", "finetune --data {data} --warmup-steps -5 --out {out}", ["--warmup-steps"]),
    ("lr-nan", "finetune --data {data} --lr nan --out {out}", ["--lr", "finite"]),
    ("threshold-nan", "heads show {heads.json} --threshold nan", ["--threshold", "finite"]),
    ("threshold-inf", "detect --threshold inf --out {out}", ["--threshold", "finite"]),
    ("scores-nan", "compare {heads.json} {heads.json} {heads.json} --scores nan inf 1 --out {out}",
     ["--scores", "finite"]),
    ("curve-neg", "knockout --heads {heads.json} --curve -1 --out {out}", ["--curve"]),
    ("depth-2", "niah --depths 2 --out {out}", ["--depths"]),
    ("arabic-digit", "detect --batch-size \u0665 --out {out}", ["--batch-size", "ASCII"]),
    ("int-garbage", "detect --batch-size many --out {out}", ["--batch-size", "integer"]),
    ("seed-neg", "data make --task mdqa --n 2 --seed -1 --out {out}", ["--seed"]),
    # -- devices
    ("device-bogus", "detect --device bogus --out {out}", ["--device", "bogus"]),
    ("device-tpu", "evaluate --data {data} --device tpu9 --out {out}", ["--device", "tpu9"]),
    # -- model folders
    ("model-missing", "detect --model {root}/nope --out {out}", ["nope", "model folder not found"]),
    ("model-typo", "evaluate --model {root}/runs/model --data {data} --out {out}", ["model folder not found"]),
    ("model-relative", "knockout --model ./no/such/model --heads {heads.json} --out {out}",
     ["./no/such/model", "not found"]),
    ("model-noconfig", "detect --model {noconfig} --out {out}", ["noconfig", "no config.json"]),
    ("model-badconfig", "evaluate --model {badconfig} --data {data} --out {out}", ["badconfig/config.json:1",
                                                                                  "invalid JSON"]),
    ("model-truncated", "detect --model {truncated} --out {out}", ["model.safetensors", "truncated"]),
    ("model-truncated-ft", "finetune --model {truncated} --data {data} --steps 1 --out {out}",
     ["model.safetensors", "truncated"]),
    ("model-pickle", "detect --model {pickle} --out {out}", ["pytorch_model.bin", "pickle", "--allow-pickle"]),
    ("model-pickle-eval", "evaluate --model {pickle} --data {data} --out {out}", ["pytorch_model.bin", "pickle"]),
    ("model-pickle-ft", "finetune --model {pickle} --data {data} --out {out}", ["pytorch_model.bin", "pickle"]),
    ("lora-pickle", "evaluate --model {lora} --data {data} --out {out}", ["adapter_model.bin", "pickle"]),
    ("lora-pickle-lofit", "lofit eval --data {data} --lora {lora} --out {out}/s.json",
     ["adapter_model.bin", "pickle"]),
    ("geometry-noconfig", "heads show {heads.json} --model {noconfig}", ["no config.json"]),
    # -- needle-in-a-haystack specs
    ("niah-too-long-detect", "detect --model {model} --probes {long.json} --out {out}",
     ["long.json", "'lengths'", "100000000"]),
    ("niah-too-long-knockout", "knockout --model {model} --heads {heads.json} --data {long.json} --out {out}",
     ["long.json", "'lengths'"]),
    ("niah-too-long-sweep", "niah --model {model} --spec {long.json} --out {out}", ["long.json", "'lengths'"]),
    ("niah-too-short-sweep", "niah --model {model} --spec {short.json} --out {out}",
     ["short.json", "field 'lengths'", "too short"]),
    ("niah-lengths-flag", "niah --model {model} --lengths 100000000 --out {out}", ["lengths", "too long"]),
    ("niah-empty", "detect --model {model} --probes {empty.json} --out {out}", ["empty.json", "'haystack'"]),
    ("niah-yaml-line", "detect --model {model} --probes {badspec.yaml} --out {out}", ["badspec.yaml:3"]),
    ("niah-too-short", "detect --model {model} --probes {short.json} --out {out}",
     ["short.json", "field 'lengths'", "too short"]),
    ("niah-absolute-glob", "detect --model {model} --probes {absolute.json} --out {out}",
     ["absolute.json", "'lengths'"]),  # the absolute glob is read (no NotImplementedError), then refused
    ("curve-too-big", "knockout --model {model} --heads {heads.json} --k 2 --curve 50 --out {out}",
     ["field 'curve'", "got 50"]),
    # -- head names
    ("head-zeros", "heads show {zeros.json}", ["zeros.json", "'05-00'"]),
    ("head-arabic", "heads import {arabic.json} --out {out}", ["arabic.json", "head name"]),
    ("head-zeros-knockout", "knockout --heads {zeros.json} --out {out}", ["zeros.json", "'05-00'"]),
    # -- found by tools/hostile_campaign.py
    ("utf8-cot-bigbench", "cot run --model {model} --data {task.json} --out {out}", ["task.json", "byte 28"]),
    ("utf8-cot-mmlu", "cot run --model {model} --data {mmlu_test.csv} --out {out}", ["mmlu_test.csv", "UTF-8"]),
    ("csv-cot-mmlu", "cot run --model {model} --data {huge_test.csv} --out {out}", ["huge_test.csv:2", "CSV"]),
    ("empty-data-show", "data show {empty.jsonl}", ["empty.jsonl", "no examples"]),
    ("empty-data-evaluate", "evaluate --model {model} --data {empty.jsonl} --out {out}", ["empty.jsonl"]),
    ("empty-convert-mdqa", "data convert {empty.jsonl} --format mdqa --out {out}", ["empty.jsonl", "no examples"]),
    ("empty-convert-musique", "data convert {empty.jsonl} --format musique --out {out}",
     ["empty.jsonl", "no answerable question"]),
    ("model-field-type", "detect --model {badtype} --out {out}", ["badtype", "num_hidden_layers"]),
    ("model-field-type-heads", "heads show {heads.json} --model {badtype}", ["badtype", "num_hidden_layers"]),
    ("cot-cache-file", "cot run --model {model} --data {gsm8k.jsonl} --cache {file.txt} --out {out}",
     ["--cache", "file.txt"]),
    ("lora-rank-huge", "finetune --model {model} --data {data} --lora-rank 100000000 --out {out}",
     ["'lora_rank'", "hidden size"]),
    ("lofit-lora-rank-huge", "lofit tune --model {model} --data {lofit.jsonl} --method lora --rank 100000000 "
     "--out {out}", ["'rank'", "hidden size"]),
    ("cot-resamples-0", "cot report {root} --resamples 0", ["--resamples", ">= 1"]),
    ("study-num-cpus-0", "study --executor ray --num-cpus 0 --out {out}", ["--num-cpus", ">= 1"]),
    ("study-ray-option-sequential", "study --cpus-per-stage 2 --out {out}", ["--cpus-per-stage", "--executor ray"]),
    ("compare-scores-count", "compare {heads.json} {heads.json} {heads.json} --reference {heads.json} "
     "--scores 0.1 0.2 --out {out}",
     ["--scores", "2 scores given for 3"]),
    ("toy-eval-lengths-huge", "toy evaluate --model {model} --lengths 64 100000000", ["'lengths'", "too long"]),
    ("data-make-length-huge", "data make --task mdqa --length 100000000 --out {out}", ["'length'", "at most"]),
]


def _argv(template: str, env: dict[str, str], out: str) -> list[str]:
    names = {**env, "out": out}
    return [re.sub(r"\{([^}]+)\}", lambda m: names[m.group(1)], part) for part in template.split()]


@pytest.mark.parametrize("case,template,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(env, tmp_path, capsys, case, template, fragments):
    out = tmp_path / "out"
    before = Path(env["file.txt"]).read_bytes()
    assert main(_argv(template, env, str(out))) == 2
    err = capsys.readouterr().err
    assert err.startswith("headlab: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists()
    assert Path(env["file.txt"]).read_bytes() == before
    assert not list(Path(env["root"]).glob("**/*.tmp"))


def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["detect", "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["niah", "--out", str(locked / "run")]) == 2
    assert "not writable" in capsys.readouterr().err


@pytest.mark.parametrize("text,fragment", [
    ("tasks: 5\n", "field 'tasks'"), ("seed: abc\n", "field 'seed'"), ("finetune: {lr: fast}\n", "'finetune.lr'"),
    ("finetune: {lora_dropout: 5}\n", "'finetune.lora_dropout'"), ("finetune: {warp: 2}\n", "'finetune.warp'"),
    ("device: tpu9\n", "field 'device'"), ("niah_lengths: [-5]\n", "field 'niah_lengths'"),
    ("niah_lengths: [100000000]\n", "field 'niah_lengths'"), ("dtype: float8\n", "field 'dtype'"),
    ("niah_depths: [.nan]\n", "field 'niah_depths'"), ("real_data: {mdqa: nope.jsonl}\n", "field 'real_data'"),
    ("[[[[[[[[[[[[[[[[[[[[\n", "cannot parse"),
])
def test_study_config_is_checked_whole_before_the_first_stage(tmp_path, capsys, text, fragment):
    (tmp_path / "s.yaml").write_text(text)
    assert main(["study", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s.yaml" in err and fragment in err, err
    assert not (tmp_path / "run").exists()


def test_allow_pickle_opts_in(env, tmp_path, capsys):
    # With the flag the pickle folder passes the check (the load itself then goes to transformers).
    from headlab.model.model_check import allow_pickle, check_model_source

    allow_pickle()
    try:
        check_model_source(env["pickle"], weights=True)
    finally:
        allow_pickle(False)


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    import headlab.cli as cli
    import headlab.mech.heads

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(headlab.mech.heads, "load_scores", interrupted)  # Ctrl-C while `heads show` reads its file
    (tmp_path / "h.json").write_text(json.dumps({"0-0": [1.0]}))
    assert cli.main(["heads", "show", str(tmp_path / "h.json")]) == 130
    assert capsys.readouterr().err == "headlab: interrupted\n"


@pytest.mark.parametrize("raised, code, last", [(KeyboardInterrupt(), 130, "headlab: interrupted"),
                                                (HeadlabError("h.json: broken"), 2, "headlab: error: h.json: broken")])
def test_a_line_left_mid_progress_bar_is_ended_before_the_message(monkeypatch, capsys, tmp_path, raised, code,
                                                                   last):
    import sys

    import headlab.cli as cli
    import headlab.mech.heads

    def half_a_bar(*_, **__):
        sys.stderr.write("\rreading:  50%|#####     | 1/2")  # a progress bar leaves the cursor mid-line
        raise raised

    monkeypatch.setattr(headlab.mech.heads, "load_scores", half_a_bar)
    (tmp_path / "h.json").write_text(json.dumps({"0-0": [1.0]}))
    assert cli.main(["heads", "show", str(tmp_path / "h.json")]) == code
    assert capsys.readouterr().err.splitlines()[-1] == last


def test_converter_never_writes_a_file_its_loader_rejects(tmp_path, capsys):
    src = tmp_path / "mdqa.jsonl"
    src.write_text(json.dumps({"question": "q?", "answers": ["a"], "ctxs": [
        {"title": "", "text": "", "isgold": True}, {"title": "t", "text": "x y", "isgold": False}]}) + "\n")
    assert main(["data", "convert", str(src), "--format", "mdqa", "--out", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "example mdqa-1: field 'gold_spans[0]'" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_token_ids_outside_the_vocabulary_are_refused(tiny_model_dir, tmp_path, capsys):
    probes = tmp_path / "p.jsonl"
    probes.write_text(json.dumps({"input_ids": [5, 6, 100000, 7], "needle_start": 1, "needle_end": 3}) + "\n")
    assert main(["detect", "--model", str(tiny_model_dir), "--probes", str(probes), "--out",
                 str(tmp_path / "out")]) == 2
    assert "p.jsonl:1: field 'input_ids': token id 100000 is outside" in capsys.readouterr().err


@pytest.mark.parametrize("scaling,fragment", [
    ('{"rope_type": "warp"}', "field 'rope_scaling.rope_type' must be one of"),
    ('{"rope_type": "linear", "factor": -2}', "field 'rope_scaling.factor' must be positive"),
    ('{"rope_type": "linear", "factor": "big"}', "field 'rope_scaling.factor' must be a finite number"),
])
def test_bad_rope_scaling_is_named(env, tmp_path, capsys, scaling, fragment):
    argv = ["finetune", "--model", env["model"], "--data", env["data"], "--out", str(tmp_path / "out"),
            "--context-length", "1024", "--rope-scaling", scaling]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_names_that_look_local_never_reach_the_hub(tmp_path, monkeypatch):
    from headlab.core.errors import HeadlabError
    from headlab.model.model_check import check_model_source

    asked = []
    monkeypatch.setattr("headlab.model.model_check.hub_reachable", lambda: asked.append(1) or True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for name in ("runs/model", "./model", "~/nope/model", "a/b/c", "model", "C:\\models\\x"):
        with pytest.raises(HeadlabError, match="model folder not found"):
            check_model_source(name)
    assert asked == []
    check_model_source("some-org/some-model")  # a hub id, reachable: left to transformers
    assert asked == [1]


def test_hub_id_offline_is_one_line_or_the_cached_copy(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from headlab.core.errors import HeadlabError
    from headlab.model.model_check import check_model_source

    monkeypatch.setattr("headlab.model.model_check.hub_reachable", lambda: False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name: None)
    with pytest.raises(HeadlabError, match="hub cannot be reached and holds no cached copy") as e:
        check_model_source("some-org/some-model")
    assert "\n" not in str(e.value) and not constants.HF_HUB_OFFLINE
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name: str(tmp_path / "config.json"))
    check_model_source("some-org/some-model")
    assert constants.HF_HUB_OFFLINE  # the cached copy is used without asking the hub (no retries)
