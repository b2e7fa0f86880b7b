import pytest

from headlab.core.errors import HeadlabError
from headlab.study.config import REAL, build_config


def test_presets_and_overrides(tmp_path):
    quick = build_config("quick")
    assert quick.tasks == ["mdqa"] and quick.models[0] == REAL and len(quick.variants) == 3
    path = tmp_path / "study.yaml"
    path.write_text("base_model: /models/llama\ntasks: [mdqa, citation]\ntop_k: 20\n")
    config = build_config("default", path, seed=7)
    assert (config.base_model, config.tasks, config.top_k, config.seed) == ("/models/llama", ["mdqa", "citation"],
                                                                           20, 7)


@pytest.mark.parametrize("text,fragment", [
    ("top_kk: 3\n", "field 'top_kk' is not a study setting"),
    ("tasks: [summaries]\n", "field 'tasks' must be"),
    ("variants: [real-diverse-x]\n", "field 'variants' must be"),
    ("variants: [symbolic-symbolic, symbolic-symbolic]\n", "field 'variants' must be distinct"),
    ("real_data: {musique: x.jsonl}\n", "field 'real_data'"),
    ("length: 1000\ncontext_length: 512\n", "field 'length' must be at most"),
    ("top_k: 0\n", "field 'top_k' must be a positive integer"),
    ("tasks: [mdqa\n", "cannot parse"),
    ("- a list\n", "expected a mapping"),
])
def test_bad_config_names_file_and_field(tmp_path, text, fragment):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(HeadlabError, match="study.yaml") as err:
        build_config("default", path)
    assert fragment in str(err.value)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(HeadlabError, match="file not found"):
        build_config("default", tmp_path / "nope.yaml")
    with pytest.raises(HeadlabError, match="unknown preset"):
        build_config("huge")


def test_shipped_example_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "examples"
    for name in ("study_smollm2.yaml", "study_smollm2_short.yaml"):
        config = build_config("default", root / name)
        assert config.base_model.endswith("smollm2-135m-instruct") and config.length + config.max_new_tokens <= 8192
    for preset in ("default", "quick", "full"):
        build_config(preset)


def test_curve_models_and_patch_sets_are_checked(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("curve_models: [nobody]\n")
    with pytest.raises(HeadlabError, match="field 'curve_models'"):
        build_config("default", path)
    path.write_text("patch_sets: [everything]\n")
    with pytest.raises(HeadlabError, match="field 'patch_sets'"):
        build_config("default", path)


@pytest.mark.parametrize("text,message", [
    ("finetune: {lr: fast}\n", "field 'finetune.lr' must be a finite number (got 'fast')"),
    ("finetune: {lora_dropout: 5}\n", "field 'finetune.lora_dropout' must be in [0, 1) (got 5)"),
    ("finetune: {xyz: 1}\n", "field 'finetune.xyz' is not a fine-tune setting"),
    ("finetune: {model: m}\n", "field 'finetune.model' is set by the study itself"),
    ("finetune: {seed: 3}\n", "field 'finetune.seed' is set by the study itself"),
    ("finetune: [lr]\n", "field 'finetune' must be a mapping"),
])
def test_finetune_settings_are_checked_as_headlab_finetune_checks_them(tmp_path, text, message):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(HeadlabError) as err:
        build_config("default", path)
    assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


def test_finetune_is_the_finetune_commands_dataclass_written_as_before(tmp_path):
    import json

    from headlab.core.io import atomic_write_json
    from headlab.experiments.finetune import FinetuneConfig
    from headlab.study.config import finetune_mapping, finetune_settings
    from headlab.study.stages import build_study

    config = build_config("default")
    assert isinstance(config.finetune, FinetuneConfig) and config.finetune.lr == 2e-3
    # The mapping the default study wrote before the settings were typed: its stages and report must not change.
    old = {"method": "lora", "lora_rank": 8, "lora_alpha": 16.0, "lr": 2e-3, "steps": 16, "batch_size": 4}
    atomic_write_json(tmp_path / "config.json", config.to_dict())
    written = json.loads((tmp_path / "config.json").read_text())
    assert list(written["finetune"].items()) == list(old.items())
    stages = build_study(config, tmp_path / "run").stages
    models = [s for name, s in stages.items() if name.startswith("models/")]
    assert len(models) == 24 and all(s.inputs["finetune"] == old for s in models)  # 2 tasks x 6 models x 2 seeds
    assert stages["report"].inputs["study"]["finetune"] == old
    # A file's mapping replaces the study's whole (what it leaves out is the command's default), and round-trips.
    path = tmp_path / "study.yaml"
    path.write_text("finetune: {epochs: 1, lora_alpha: 32, warmup_steps: 0}\n")
    settings = build_config("default", path).finetune
    assert (settings.steps, settings.lr, settings.epochs) == (None, FinetuneConfig.lr, 1)
    assert finetune_mapping(settings) == {"lora_alpha": 32, "epochs": 1, "warmup_steps": 0}
    assert finetune_settings(finetune_mapping(settings)) == settings
