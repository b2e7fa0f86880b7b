"""LoFiT adapter and merge: parity with a literal per-head reference, gradients, save/load, merged checkpoints."""

import pytest
import torch
from tiny import build_model
from transformers import AutoModelForCausalLM

from headlab.core.errors import HeadlabError
from headlab.lofit.adapter import LofitAdapter, apply_adapters, load_adapter
from headlab.lofit.merge import max_logit_difference, merge_into_model, save_merged
from headlab.model.seam import Seam

ARCHS = ["llama", "mistral-gqa", "qwen2", "gpt2"]


def _ids(seed=0):
    return torch.randint(3, 96, (2, 20), generator=torch.Generator().manual_seed(seed))


def _adapters(geometry):
    a = LofitAdapter([(0, 1), (2, 3), (2, 0)], geometry, scale=True, offset=True, init_std=0.3, seed=1)
    b = LofitAdapter([(1, 1), (2, 3)], geometry, scale=False, offset=True, init_std=0.3, seed=2)
    return a, b


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hook_matches_per_head_loop_reference(arch):
    model = build_model(arch)
    seam = Seam.attach(model)
    adapter, _ = _adapters(seam.geometry)
    ids = _ids()

    def reference(layer):  # the definition, one head at a time
        def fn(z):
            z = z.clone()
            for i, (lay, h) in enumerate(adapter.heads):
                if lay == layer:
                    z[:, :, h] = (1 + adapter.A[i]) * z[:, :, h] + adapter.v[i]
            return z
        return fn

    with torch.no_grad():
        with apply_adapters(model, adapter):
            hooked = model(ids).logits
        with seam.z_hook(0, reference(0)), seam.z_hook(2, reference(2)):
            expected = model(ids).logits
        base = model(ids).logits
    torch.testing.assert_close(hooked, expected, atol=1e-6, rtol=1e-6)
    assert (hooked - base).abs().max() > 1e-2
    assert all(h is None for h in seam._z_handles), "removing the adapter must remove its hooks"


def test_gradients_reach_only_adapter_rows():
    model = build_model("llama")
    for p in model.parameters():
        p.requires_grad_(False)
    adapter = LofitAdapter([(0, 1), (2, 3)], Seam.attach(model).geometry, scale=True, offset=True)
    with apply_adapters(model, adapter):
        model(_ids()).logits.square().mean().backward()
    assert adapter.A.grad is not None and adapter.v.grad is not None
    assert (adapter.A.grad.abs().sum(-1) > 0).all() and (adapter.v.grad.abs().sum(-1) > 0).all()
    assert all(p.grad is None for p in model.parameters())


def test_several_adapters_compose_and_remove_independently():
    model = build_model("llama")
    a, b = _adapters(Seam.attach(model).geometry)
    ids = _ids()
    with torch.no_grad():
        base = model(ids).logits
        ha = apply_adapters(model, a)
        only_a = model(ids).logits
        hb = apply_adapters(model, b)
        both = model(ids).logits
        ha.remove()
        only_b = model(ids).logits
        hb.remove()
        after = model(ids).logits
        with apply_adapters(model, b):
            ref_b = model(ids).logits
    assert not torch.allclose(only_a, both) and not torch.allclose(only_b, both)
    torch.testing.assert_close(only_b, ref_b)
    torch.testing.assert_close(after, base)


def test_save_load_roundtrip(tmp_path):
    model = build_model("mistral-gqa")
    adapter, _ = _adapters(Seam.attach(model).geometry)
    adapter.info["task"] = "mdqa"
    adapter.save(tmp_path / "a.safetensors")
    back = load_adapter(tmp_path / "a.safetensors")
    assert back.heads == adapter.heads and back.geometry == adapter.geometry and back.info == {"task": "mdqa"}
    torch.testing.assert_close(back.A, adapter.A)
    torch.testing.assert_close(back.v, adapter.v)
    assert (tmp_path / "a.safetensors").stat().st_size < 4096


def test_bad_adapters(tmp_path):
    geometry = Seam.attach(build_model("llama")).geometry
    with pytest.raises(HeadlabError, match="out of range"):
        LofitAdapter([(3, 0)], geometry)
    with pytest.raises(HeadlabError, match="twice"):
        LofitAdapter([(0, 0), (0, 0)], geometry)
    with pytest.raises(HeadlabError, match="needs scales, offsets"):
        LofitAdapter([(0, 0)], geometry, scale=False, offset=False)
    with pytest.raises(HeadlabError, match="not found"):
        load_adapter(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(HeadlabError, match="junk.safetensors: not a safetensors"):
        load_adapter(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"v": torch.zeros(2, 16)}, tmp_path / "foreign.safetensors")
    with pytest.raises(HeadlabError, match="field 'format'"):
        load_adapter(tmp_path / "foreign.safetensors")
    gpt2 = build_model("gpt2")
    other = LofitAdapter([(0, 0)], Seam.attach(gpt2).geometry)
    object.__setattr__(other, "geometry", type(geometry)(3, 8, 8, 8))
    with pytest.raises(HeadlabError, match="does not match"):
        apply_adapters(gpt2, other)


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_checkpoint_equals_hooked_model(arch, tmp_path):
    model = build_model(arch)
    adapters = _adapters(Seam.attach(model).geometry)
    ids = _ids(3)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    merged = merge_into_model(model, adapters)
    assert max_logit_difference(model, merged, adapters, ids, mask) < 1e-5
    save_merged(merged, None, tmp_path / "merged")
    text = (tmp_path / "merged" / "config.json").read_text()
    assert "headlab" not in text
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # no headlab code involved
    assert not hasattr(plain, "_headlab_seam")
    with torch.no_grad(), apply_adapters(model, *adapters):
        hooked = model(ids, attention_mask=mask).logits
    with torch.no_grad():
        reloaded = plain(ids, attention_mask=mask).logits
    assert (hooked - reloaded).abs().max() < 1e-5
    assert (model(ids).logits - reloaded).abs().max() > 1e-2  # the adapter did change the model


def test_scale_only_merge_keeps_architecture_without_bias():
    model = build_model("mistral-gqa")
    adapter = LofitAdapter([(1, 2)], Seam.attach(model).geometry, scale=True, offset=False, init_std=0.3)
    merged = merge_into_model(model, [adapter])
    assert type(merged).__name__ == "MistralForCausalLM"
    assert max_logit_difference(model, merged, [adapter], _ids()) < 1e-5


def test_merge_refuses_sliding_window_mistral():
    model = build_model("mistral-gqa")
    model.config.sliding_window = 8
    adapter = LofitAdapter([(1, 2)], Seam.attach(model).geometry)
    with pytest.raises(HeadlabError, match="sliding window"):
        merge_into_model(model, [adapter])


def _other_arch(name):
    from transformers import GemmaConfig, GemmaForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cls, cfg = {"gemma": (GemmaForCausalLM, GemmaConfig(**common, head_dim=16)),
                "qwen3": (Qwen3ForCausalLM, Qwen3Config(**common, head_dim=16)),
                "phi3": (Phi3ForCausalLM, Phi3Config(**common))}[name]
    torch.manual_seed(0)
    return cls._from_config(cfg, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("arch", ["gemma", "qwen3"])
def test_merge_with_attention_bias_flag(arch):
    model = _other_arch(arch)
    adapters = _adapters(Seam.attach(model).geometry)
    merged = merge_into_model(model, adapters)
    assert type(merged) is type(model) and merged.config.attention_bias
    assert max_logit_difference(model, merged, adapters, _ids()) < 1e-5


def test_merge_refuses_architecture_without_bias_route():
    model = _other_arch("phi3")
    with pytest.raises(HeadlabError, match="cannot merge offsets into a Phi-3 model"):
        merge_into_model(model, _adapters(Seam.attach(model).geometry))
