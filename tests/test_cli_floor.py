"""The CLI floor: flags, defaults and help come from dataclass fields; config files; shared options declared once."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from headlab.cli import GROUPS, commands, main
from headlab.core.cli_floor import Cli, Command, build, given
from headlab.core.errors import HeadlabError
from headlab.experiments.detect import DetectConfig
from headlab.experiments.finetune import FinetuneConfig
from headlab.model.options import ModelOptions


def _parse(argv: list[str]):
    return Cli("headlab", "test", commands(), GROUPS).parse(argv)


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare words


def test_a_flag_not_given_takes_the_config_default(tmp_path):
    command, values, _ = _parse(["detect", "--out", str(tmp_path / "d")])
    assert "batch_size" not in values  # not given: the dataclass decides
    assert build(DetectConfig, values).batch_size == DetectConfig().batch_size == 8
    _, values, _ = _parse(["detect", "--batch-size", "3", "--top-k", "2", "--out", str(tmp_path / "d")])
    config = build(DetectConfig, values)
    assert (config.batch_size, config.top_k) == (3, 2) and given(config) == {"batch_size", "top_k"}


def test_help_text_and_defaults_come_from_the_fields(capsys):
    text = _help(capsys, "heads", "show")
    assert "how many heads to print (default: 20)" in text  # Selection.show's comment and default
    text = _help(capsys, "detect")
    assert "probes per batch (scores do not depend on it) (default: 8)" in text
    assert "--attn ATTN, --attn-implementation ATTN" in text
    text = _help(capsys, "finetune")
    assert "--lora-rank LORA_RANK default: 8" in text and "--data DATA task-example JSONL" in text


def test_config_file_gives_the_fields_and_flags_override_it(tmp_path):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"data: {tmp_path / 'd.jsonl'}\nout: {tmp_path / 'run'}\nlr: 1e-3\nlora_rank: 4\n"
                   "target_modules: [q_proj, v_proj]\nrope_scaling: {rope_type: linear, factor: 2}\nmerge: true\n")
    _, values, _ = _parse(["finetune", "--config", str(cfg), "--lr", "0.01", "--dtype", "bfloat16"])
    config = build(FinetuneConfig, values)
    assert config.lr == 0.01 and config.lora_rank == 4 and config.merge is True  # the flag wins over the file
    assert config.target_modules == ["q_proj", "v_proj"] and config.rope_scaling == {"rope_type": "linear",
                                                                                     "factor": 2}
    assert config.dtype == "bfloat16" and config.data == str(tmp_path / "d.jsonl")
    assert build(ModelOptions, values).dtype == "bfloat16"  # one --dtype fills both


@pytest.mark.parametrize("text,fragments", [
    ("lora_rank: 0\n", ["field 'lora_rank'", ">= 1"]),
    ("lr: fast\n", ["field 'lr'", "a number"]),
    ("method: sgd\n", ["field 'method'", "one of lora, full"]),
    ("warp: 2\n", ["unknown field 'warp'"]),
    ("merge: 1\n", ["field 'merge'", "true or false"]),
    ("target_modules: q_proj\n", ["field 'target_modules'", "list"]),
    ("- just a list\n", ["expected a mapping"]),
    ("lr: [\n", ["cannot parse"]),
])
def test_config_file_errors_name_the_file_and_field(tmp_path, capsys, text, fragments):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(text)
    assert main(["finetune", "--config", str(cfg), "--data", "d.jsonl", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ft.yaml" in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "run").exists()


def test_required_fields_may_come_from_the_file_but_must_come(tmp_path, capsys):
    assert main(["finetune", "--out", str(tmp_path / "run")]) == 2
    assert "finetune: the following arguments are required: --data" in capsys.readouterr().err


@dataclass
class _Eight:
    batch_size: int = 8


@dataclass
class _One:
    batch_size: int = 1


def _disagreeing(a: _Eight, b: _One) -> None:
    """a command whose two configs disagree on a shared field's default"""


def test_two_parameters_sharing_a_field_must_agree_on_its_default():
    with pytest.raises(TypeError, match="batch_size"):
        Cli("x", "x", [Command("cmd", _disagreeing)], {})


def test_gguf_file_folds_into_model(tmp_path):
    assert ModelOptions(model=str(tmp_path), gguf_file="m.gguf").model == str(tmp_path / "m.gguf")
    assert ModelOptions(gguf_file="/x/m.gguf").model == "/x/m.gguf"
    with pytest.raises(HeadlabError, match="ending in .gguf"):
        ModelOptions(gguf_file="m.bin")


def test_heads_compare_is_compare_with_a_reference(tmp_path, capsys):
    a, r = tmp_path / "a.json", tmp_path / "r.json"
    a.write_text(json.dumps({"0-0": [0.8], "0-1": [0.0], "1-0": [0.3]}))
    r.write_text(json.dumps({"0-0": [0.9], "0-1": [0.5], "1-0": [0.0]}))
    assert main(["heads", "compare", str(a), str(r), "--top-k", "2"]) == 0
    alias = capsys.readouterr().out
    assert main(["compare", str(a), "--reference", str(r), "--top-k", "2"]) == 0
    assert capsys.readouterr().out == alias and "recall 0.500  jaccard 0.333  shared 1" in alias


def test_toy_evaluate_calls_the_library_once_with_its_options(monkeypatch, capsys):
    import headlab.toy.evaluate as toy_evaluate
    from headlab.model.loading import default_model_dir

    calls = []
    monkeypatch.setattr(toy_evaluate, "evaluate_and_record", lambda *a: calls.append(a) or {"ok": 1})
    assert main(["toy", "evaluate", "--lengths", "64", "96", "--n", "2", "--write"]) == 0
    assert calls == [(str(default_model_dir()), [64, 96], 2, True)]
    assert "{'ok': 1}" in capsys.readouterr().out


def test_study_passes_device_and_dtype_only_when_given(monkeypatch, tmp_path, capsys):
    import headlab.study.config as study_config

    seen = []

    def fake_build(preset, path, **overrides):
        seen.append(overrides)
        raise HeadlabError("stop")

    monkeypatch.setattr(study_config, "build_config", fake_build)
    assert main(["study", "--out", str(tmp_path / "s")]) == 2
    assert main(["study", "--out", str(tmp_path / "s"), "--dtype", "bfloat16", "--seed", "3"]) == 2
    assert seen[0]["device"] is None and seen[0]["dtype"] is None and seen[0]["seed"] is None
    assert seen[1]["dtype"] == "bfloat16" and seen[1]["device"] is None and seen[1]["seed"] == 3


def test_every_command_builds_and_model_options_are_the_shared_ones():
    """--dtype and --device come from ModelOptions (one declaration): the same choices and checks everywhere."""
    from headlab.core.inputs import check_device

    cli = Cli("headlab", "test", commands(), GROUPS)
    assert len(cli.built) >= 22
    with_dtype = [path for path, built in cli.built.items() if "dtype" in built.options]
    assert len(with_dtype) == 13  # heads score joined the commands that load weights
    for path in with_dtype:
        options = cli.built[path].options
        assert options["dtype"].flag.choices == ("float32", "bfloat16", "float16"), path
        assert path == "finetune" or options["device"].convert is check_device, path  # finetune: the Trainer's


# Every command and option of headlab before the CLI floor (0c976d0); each must still be accepted.
OLD_FLAGS = {
    "detect": ("--allow-long-context --allow-pickle --attn --batch-size --device --device-map --dtype "
              "--gguf-file --keep-failed --max-memory --max-new-tokens --model --out --probes --seed "
              "--show --threshold --top-k --trust-remote-code"),
    "heads show": "--allow-pickle --gguf-file --model --show --threshold --top-k",
    "heads import": "--allow-pickle --gguf-file --model --out --show --threshold --top-k",
    "heads compare": "--show --threshold --top-k",
    "data make": ("--depth --doc-sentences --haystack --length --llm-api-key-env --llm-cache --llm-model "
              "--llm-url --max-support --n --needle --out --seed --split --task --tokenizer"),
    "data convert": ("--docs --exact-docs --format --gold-position --heldout-fraction --limit --max-docs "
              "--max-tokens --out --seed --split --task --tokenizer"),
    "data show": "--full --n",
    "toy pretrain": ("--allow-pickle --answer-weight --batch-size --init --lr --max-filler --out --pool-size "
              "--seed --steps --task-share --threads --warmup"),
    "toy evaluate": "--allow-pickle --gguf-file --lengths --model --n --write",
    "lofit select": ("--allow-pickle --batch-size --beta --data --device --dtype --epochs --format --fraction "
              "--gguf-file --l1 --limit --lr --model --out --seed --top-k"),
    "lofit tune": ("--allow-pickle --batch-size --beta --data --device --dtype --epochs --format --gguf-file "
              "--heads --limit --lr --method --model --out --rank --scales --seed"),
    "lofit merge": "--adapter --allow-pickle --device --dtype --gguf-file --model --out --tolerance",
    "lofit eval": ("--adapter --allow-pickle --data --device --device-map --dtype --format --gguf-file --limit "
              "--lora --max-memory --max-new-tokens --model --out"),
    "knockout": ("--allow-pickle --attn --batch-size --curve --data --device --device-map --dtype "
              "--gguf-file --heads --k --limit --max-memory --max-new-tokens --mode --model --out --seed "
              "--seeds --trust-remote-code --where"),
    "patch": ("--allow-pickle --attn --batch-size --data --device --device-map --dtype --heads --k "
              "--limit --max-memory --max-new-tokens --out --seed --seeds --source --target "
              "--trust-remote-code"),
    "compare": "--out --reference --scores --threshold --top-k",
    "finetune": ("--allow-pickle --batch-size --context-length --data --dtype --epochs --gguf-file "
              "--grad-accum --gradient-checkpointing --logging-steps --lora-alpha --lora-dropout "
              "--lora-rank --loss-on --lr --merge --method --model --out --resume --rope-scaling "
              "--rope-theta --save-steps --save-total-limit --seed --steps --target-modules "
              "--trust-remote-code --warmup-steps --weight-decay"),
    "evaluate": ("--allow-long-context --allow-pickle --batch-size --data --depth-bins --device --device-map "
              "--dtype --gguf-file --max-memory --max-new-tokens --model --out --trust-remote-code"),
    "niah": ("--allow-pickle --batch-size --depths --device --device-map --dtype --gguf-file --lengths "
              "--max-memory --max-new-tokens --model --needles --out --seed --spec --trust-remote-code"),
    "study": ("--address --allow-pickle --config --cpus-per-stage --device --dtype --executor --gguf-file "
              "--model --no-progress --num-cpus --out --preset --seed"),
    "cot run": ("--allow-pickle --batch-size --cache --category --cot-max-new-tokens --data --device "
              "--direct-max-new-tokens --dtype --endpoint --gguf-file --limit --model --modes --out "
              "--plan-max-new-tokens --resamples --seed --shots --threads"),
    "cot report": "--resamples",
}


def test_every_old_command_and_option_is_still_accepted():
    cli = Cli("headlab", "test", commands(), GROUPS)
    assert set(OLD_FLAGS) <= set(cli.built)
    for path, flags in OLD_FLAGS.items():
        accepted = cli.built[path].parser._option_string_actions
        missing = [f for f in flags.split() if f not in accepted]
        assert not missing, (path, missing)
