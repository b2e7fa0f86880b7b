import pytest
import torch
from tiny import CONFIGS, build_model, padded_batch, same_weights
from transformers import MambaConfig, MambaForCausalLM

from headlab.core.errors import HeadlabError
from headlab.model.geometry import HeadGeometry, head_geometry
from headlab.model.seam import Seam


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_geometry(arch):
    g = Seam.attach(build_model(arch)).geometry
    kv = 4 if arch in ("llama", "gpt2", "olmo2") else 2
    assert g == HeadGeometry(n_layers=3, n_heads=4, n_kv_heads=kv, head_dim=16)
    assert g.n_groups == 4 // kv


@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_top1_matches_eager_attention_weights(arch, attn):
    model = build_model(arch, attn=attn)
    reference = same_weights(model, arch, "eager")
    seam = Seam.attach(model)
    ids, mask, pos = padded_batch()
    with torch.no_grad(), seam.capture_top1() as rec:
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
        ref = reference(input_ids=ids, attention_mask=mask, position_ids=pos, output_attentions=True)
    top1 = rec.pop()  # (B, L, H)
    expected = torch.stack([a[:, :, -1].argmax(-1) for a in ref.attentions], dim=1)
    assert torch.equal(top1, expected)
    assert (top1[1] >= 5).all(), "padded keys must never be the top-1"
    torch.testing.assert_close(out.logits[:, -1], ref.logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "mistral-gqa", "gpt2"])
def test_z_hook_reads_and_replaces_head_output(arch):
    model = build_model(arch)
    seam = Seam.attach(model)
    ids, mask, pos = padded_batch()
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        seen = []
        with seam.z_hook(1, lambda z: seen.append(z.clone())):
            same = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        assert seen[0].shape == (2, 24, 4, 16)
        torch.testing.assert_close(same, base)

        def zero_head_2(z):
            z = z.clone()
            z[:, :, 2] = 0
            return z

        with seam.z_hook(1, zero_head_2):
            hooked = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        # Reference: zero the output projection's input columns of head 2 in layer 1.
        proj = seam.layers[1][1]
        with torch.no_grad():
            saved = proj.weight.clone()
            if arch == "gpt2":  # Conv1D stores (in, out)
                proj.weight[32:48, :] = 0
            else:
                proj.weight[:, 32:48] = 0
            zeroed = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            proj.weight.copy_(saved)
        torch.testing.assert_close(hooked, zeroed, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(hooked, base)
        after = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        torch.testing.assert_close(after, base)  # hooks undo themselves
        assert seam._z_handles[1] is None


def test_query_hook_changes_attention_and_undoes():
    model = build_model("mistral-gqa")
    seam = Seam.attach(model)
    ids, mask, pos = padded_batch()
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        with seam.query_hook(0, torch.zeros_like):
            hooked = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        again = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert not torch.allclose(hooked, base)
    torch.testing.assert_close(again, base)


def test_attach_is_idempotent():
    model = build_model("llama")
    assert Seam.attach(model) is Seam.attach(model)
    assert model.config._attn_implementation == "headlab_sdpa"


def test_attach_follows_a_later_change_of_attention_implementation():
    model = build_model("llama")
    ids, mask, pos = padded_batch()
    tops = []
    for attn in ("sdpa", "eager", "sdpa"):
        if attn != "sdpa" or tops:
            model.set_attn_implementation(attn)  # as a user or a benchmark switching a live model does
        seam = Seam.attach(model)
        assert (seam.inner_implementation, model.config._attn_implementation) == (attn, f"headlab_{attn}")
        with torch.no_grad(), seam.capture_top1() as rec:
            model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)
        tops.append(rec.pop())
    assert torch.equal(tops[0], tops[1]) and torch.equal(tops[0], tops[2])


def test_unsupported_architecture_names_what_is_missing():
    model = MambaForCausalLM(MambaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1))
    with pytest.raises(HeadlabError, match="families.py has no row"):
        Seam.attach(model)  # the family table refuses it before its geometry is read
    with pytest.raises(HeadlabError, match="num_attention_heads"):
        head_geometry(model.config)


def test_head_geometry_prefers_config_head_dim():
    _, config = CONFIGS["llama"]()
    config.head_dim = 8
    assert head_geometry(config).head_dim == 8
    with pytest.raises(HeadlabError, match="out of range"):
        head_geometry(config).check_head(3, 0)
