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
