"""The family table (headlab/model/families.py): every row is exercised by a tiny config, and what it says about
a family is what the model's modules hold."""

import pytest
from tiny import CONFIGS, build_model
from transformers import BloomConfig, BloomForCausalLM

from headlab.core.errors import HeadlabError
from headlab.experiments.finetune import attention_projection_names
from headlab.model.families import FAMILIES, family_of
from headlab.model.seam import Seam


def test_every_row_has_a_tiny_config_and_every_config_a_row():
    covered = {family_of(make()[1]).model_type for make in CONFIGS.values()}
    assert covered == set(FAMILIES)


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_the_row_names_the_modules_the_model_holds(arch):
    model = build_model(arch)
    family = family_of(model)
    seam = Seam.attach(model)
    for attn, proj in seam.layers:
        assert proj is getattr(attn, family.out_proj)
        assert all(hasattr(attn, name) for name in family.qkv)
        assert (type(proj).__name__ == "Conv1D") == family.conv1d
    assert seam.inner_implementation == family.attention[0]
    if family.out_bias is True:
        assert all(proj.bias is not None for _, proj in seam.layers)
    elif family.out_bias is False:
        assert all(proj.bias is None for _, proj in seam.layers)
    else:  # a config flag: off in these configs, so no bias yet
        assert hasattr(model.config, family.out_bias)


def test_lora_targets_follow_the_row():
    assert attention_projection_names(build_model("llama")) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert attention_projection_names(build_model("phi3")) == ["o_proj", "qkv_proj"]
    assert family_of(build_model("phi3")).lora_qv == ("qkv_proj",)
    assert family_of(build_model("llama")).lora_qv == ("q_proj", "v_proj")


def test_a_family_without_a_row_is_one_line():
    bloom = BloomForCausalLM(BloomConfig(vocab_size=32, hidden_size=16, n_layer=1, n_head=2))
    with pytest.raises(HeadlabError, match=r"^unsupported architecture bloom \(BloomForCausalLM\): .*"
                                           r"families.py has no row for it") as err:
        family_of(bloom)
    assert "\n" not in str(err.value)
    with pytest.raises(HeadlabError, match=r"no row for it .*; pass --target-modules to fine-tune it$"):
        attention_projection_names(bloom)
