"""DuoAttention gates: the gated student against eager attention under an explicit per-head mask, a planted
head found, and a killed training resumed."""

from __future__ import annotations

import pytest
import torch
from tiny import CONFIGS, VOCAB, WINDOW, build_model, same_weights

from headlab.core.errors import HeadlabError
from headlab.data.probes import Probe
from headlab.experiments.duo_gates import CHECKPOINT, DuoConfig, GatedAttention, train_gates
from headlab.model.seam import Seam

SINK, RECENT, LENGTH = 2, 4, 20  # recent < WINDOW: a streaming head sees less than a sliding-window one


def _additive(keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, 0.0, torch.finfo(torch.float32).min)


def _reference_mask(model, gate_of_head: list[int], n: int):
    """The eager model's attention_mask for per-head gates in {0, 1}, the same in every layer: a full head sees
    what its layer lets it see, a streaming one also only the first SINK and last RECENT keys."""
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    causal = k <= q
    streaming = (k < SINK) | (q - k < RECENT)

    def per_head(visible):
        return _additive(torch.stack([visible if g else visible & streaming for g in gate_of_head]))[None]

    window = causal & (q - k < WINDOW)
    types = set(getattr(model.config, "layer_types", None) or [])
    if len(types) > 1:
        return {"full_attention": per_head(causal), "sliding_attention": per_head(window)}
    sliding = types == {"sliding_attention"} or (getattr(model.config, "sliding_window", None) and not types)
    return per_head(window if sliding else causal)


def _ids(seed=0, n=LENGTH):
    return torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_binary_gates_equal_eager_attention_under_a_per_head_mask(arch):
    model = build_model(arch)
    g = Seam.attach(model).geometry
    kv_gates = [1 if k % 2 == 0 else 0 for k in range(g.n_kv_heads)]
    gates = torch.tensor([kv_gates] * g.n_layers, dtype=torch.float32)
    ids = _ids()
    with torch.no_grad(), GatedAttention(Seam.attach(model), gates, SINK, RECENT).applied():
        got = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    eager = same_weights(model, arch, "eager")
    groups = g.n_heads // g.n_kv_heads
    mask = _reference_mask(eager, [kv_gates[h // groups] for h in range(g.n_heads)], LENGTH)
    with torch.no_grad():
        want = eager(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        plain = eager(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-3  # the streaming heads did change the model


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3", "gpt-oss"])
def test_gates_of_one_leave_the_model_as_it_is(arch):
    model = build_model(arch)
    g = Seam.attach(model).geometry
    ids = _ids(seed=1)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with GatedAttention(Seam.attach(model), torch.ones(g.n_layers, g.n_kv_heads), SINK, RECENT).applied():
            gated = model(input_ids=ids).logits
    torch.testing.assert_close(gated, plain, atol=1e-5, rtol=0)


def _probes(n=4, length=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [Probe(f"p{i}", torch.randint(3, VOCAB, (length,), generator=gen).tolist(), 8, 18) for i in range(n)]


def _planted(layer=1, kv_head=2, quiet=0.02):
    """A tiny Llama where only one kv head's output reaches the residual stream at full strength."""
    model = build_model("llama")
    g = Seam.attach(model).geometry
    with torch.no_grad():
        for i, (attn, _) in enumerate(Seam.attach(model).layers):
            weight = attn.o_proj.weight.view(-1, g.n_heads, g.head_dim)  # columns: one block per query head
            for h in range(g.n_heads):
                if (i, h) != (layer, kv_head):  # llama's tiny config has a kv head per query head
                    weight[:, h].mul_(quiet)
    return model


def test_a_planted_head_that_needs_the_whole_context_gets_the_largest_gate():
    model = _planted()
    config = DuoConfig(steps=40, lr=0.05, reg_weight=0.05, sink=SINK, recent=RECENT, save_every=0)
    result = train_gates(model, _probes(), config)
    ranked = sorted(result.gates, key=result.gates.get, reverse=True)
    assert ranked[0] == "1-2", result.gates
    assert result.gates["1-2"] > max(v for k, v in result.gates.items() if k != "1-2") + 0.1
    assert result.unit == "kv head" and len(result.losses) == 40
    assert all(p.grad is None for p in model.parameters())  # only the gates trained
    assert all(p.requires_grad for p in model.parameters())  # and the model's own flags are given back


class Killed(Exception):
    pass


def test_a_killed_training_resumes_from_its_checkpoint(tmp_path):
    config = DuoConfig(steps=6, lr=0.05, sink=SINK, recent=RECENT, save_every=1)
    straight = train_gates(build_model("llama"), _probes(n=3), config)
    calls = []

    def kill_at_third(n):
        calls.append(n)
        if len(calls) == 3:
            raise Killed

    with pytest.raises(Killed):
        train_gates(build_model("llama"), _probes(n=3), config, tmp_path, progress=kill_at_third)
    assert (tmp_path / CHECKPOINT).is_file()
    seen = []
    resumed = train_gates(build_model("llama"), _probes(n=3), config, tmp_path, progress=seen.append)
    assert seen[0] == 3 and len(seen) == 4  # the three steps done, then the three left
    assert resumed.gates == pytest.approx(straight.gates, abs=1e-6)
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)
    with pytest.raises(HeadlabError, match="checkpoint of other settings"):
        train_gates(build_model("llama"), _probes(n=3), DuoConfig(steps=7, sink=SINK, recent=RECENT), tmp_path)


def test_a_foreign_checkpoint_is_one_line(tmp_path):
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(HeadlabError, match="not a duo gates checkpoint"):
        train_gates(build_model("llama"), _probes(n=1), DuoConfig(steps=1), tmp_path)


@pytest.mark.parametrize("field, value", [("steps", 0), ("lr", 0), ("sink", -1), ("recent", 0), ("init", 1.5),
                                          ("save_every", -1)])
def test_bad_settings_name_their_field(field, value):
    with pytest.raises(HeadlabError, match=f"field '{field}'"):
        DuoConfig(**{field: value})
