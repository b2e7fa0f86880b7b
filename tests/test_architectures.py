"""Architecture parity on tiny random configs of every family headlab supports (docs/architectures.md).

For each family: detection scores equal the no-cache reference of docs/definitions.md#retrieval-score, the z hook
reads the slice of the output projection's input that belongs to the head, and the uniform knockout equals zeroed
queries.
Families with sliding-window layers get the deeper checks in tests/test_sliding_window.py."""

import pytest
import torch
from arch_reference import attention_module, check_uniform_knockout_all_positions, zero_output_columns
from test_detect import _Tok, echo_probes, reference_scores, token_probes
from tiny import CONFIGS, build_model, build_tokenizer, padded_batch, same_weights
from transformers import BloomConfig, BloomForCausalLM, MambaConfig, MambaForCausalLM

from headlab.core.errors import HeadlabError
from headlab.experiments.detect import DetectConfig, detect_retrieval_heads
from headlab.model.geometry import HeadGeometry
from headlab.model.loading import load_model
from headlab.model.seam import Seam

ARCHS = list(CONFIGS)
D = 16


@pytest.mark.parametrize("arch", ARCHS)
def test_geometry_and_output_projection(arch):
    model = build_model(arch)
    seam = Seam.attach(model)
    cfg = model.config
    assert seam.geometry == HeadGeometry(3, 4, getattr(cfg, "num_key_value_heads", None) or 4, D)
    for layer, (attn, proj) in enumerate(seam.layers):
        assert attn is attention_module(model, layer)
        assert proj is getattr(attn, "o_proj", None) or proj is getattr(attn, "c_proj", None)


@pytest.mark.parametrize("arch", ARCHS)
def test_detect_scores_equal_the_no_cache_reference(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    probes = token_probes(2) + echo_probes(model, 2)
    result = detect_retrieval_heads(model, _Tok(), probes, DetectConfig(max_new_tokens=8, keep_failed=True,
                                                                         progress=False))
    total = 0.0
    for probe, outcome in zip(probes, result.outcomes, strict=True):
        response, scores = reference_scores(reference, probe, 8, {2})
        assert outcome.response_ids == response
        assert torch.equal(outcome.scores, scores), f"{arch} {probe.id}"
        total += float(scores.sum())
    assert total > 0, "the probes must produce some copies, or the comparison proves nothing"


@pytest.mark.parametrize("arch", ARCHS)
def test_z_hook_reads_the_heads_slice(arch):
    model = build_model(arch)
    seam = Seam.attach(model)
    ids, mask, pos = padded_batch()
    layer, head = 1, 2

    def zero_head(z):
        assert z.shape == (2, 24, 4, D)
        z = z.clone()
        z[:, :, head] = 0
        return z

    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        with seam.z_hook(layer, zero_head):
            hooked = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        reference = same_weights(model, arch, "eager")
        zero_output_columns(reference, layer, head, D)
        want = reference(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    torch.testing.assert_close(hooked[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hooked[1, 5:], want[1, 5:], atol=1e-5, rtol=1e-5)
    assert (hooked - base).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_knockout_equals_zeroed_queries(arch):
    model = build_model(arch)
    reference = same_weights(model, arch, "eager")
    ids, mask, pos = padded_batch()
    heads = ["0-1", "1-2", "1-3", "2-0"]
    check_uniform_knockout_all_positions(model, reference, heads, ids, mask, pos, pad=5)


def test_unsupported_families_get_one_line_naming_the_architecture():
    bloom = BloomForCausalLM(BloomConfig(vocab_size=32, hidden_size=16, n_layer=1, n_head=2))
    with pytest.raises(HeadlabError, match=r"^unsupported architecture bloom \(BloomForCausalLM\): .*families.py"):
        Seam.attach(bloom)
    mamba = MambaForCausalLM(MambaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1))
    with pytest.raises(HeadlabError, match=r"^unsupported architecture mamba \(MambaForCausalLM\)") as err:
        Seam.attach(mamba)
    assert "\n" not in str(err.value)


def test_a_family_whose_attention_bypasses_the_interface_is_refused(monkeypatch):
    model = build_model("llama")  # a row, but a model class that computes attention on its own
    monkeypatch.setattr(type(model), "_supports_attention_backend", False)
    with pytest.raises(HeadlabError, match=r"^unsupported architecture llama \(LlamaForCausalLM\): .*Interface"):
        Seam.attach(model)


def test_an_implementation_the_row_rules_out_is_refused():
    model = build_model("gemma2", attn="eager")
    # transformers now refuses sdpa for Gemma 2 itself; 5.0 took it and silently skipped the logit soft-capping
    model.config._attn_implementation = "sdpa"
    with pytest.raises(HeadlabError, match=r"^Gemma 2: attention implementation sdpa .*use eager$"):
        Seam.attach(model)


def test_load_model_falls_back_to_eager_where_sdpa_is_missing(tmp_path):
    build_model("gemma2").save_pretrained(tmp_path)  # Gemma 2 soft-caps attention logits: no sdpa
    build_tokenizer().save_pretrained(tmp_path)
    model, _ = load_model(tmp_path)
    assert model.config._attn_implementation == "eager"
    assert Seam.attach(model).inner_implementation == "eager"
