"""LoFiT training: losses against plain references, DPO, step 1 selection, step 2 offsets, LoRA baseline."""

import math

import pytest
import torch
from lofit_util import completions, preferences
from tiny import build_model, build_tokenizer

from headlab.core.errors import HeadlabError
from headlab.lofit.baselines import train_lora
from headlab.lofit.datasets import MultipleChoice
from headlab.lofit.evaluate import choice_logprobs, evaluate_multiple_choice
from headlab.lofit.select import SelectConfig, select_heads
from headlab.lofit.train import (
    TrainConfig,
    collate,
    dpo_loss,
    encode_pair,
    reference_logprobs,
    sequence_logprob,
    supervised_loss,
)
from headlab.lofit.tune import tune_offsets
from headlab.mech.heads import random_heads
from headlab.model.seam import Seam

TOK = build_tokenizer()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_answer_only_loss_matches_transformers_labels():
    model = build_model("llama")
    ids, n_prompt = encode_pair(TOK, "Question: Where was Bob Stone born?\nAnswer:", "Halden")
    batch = collate([(ids, n_prompt)], 0, "cpu")
    labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], labels=labels).loss
        got = supervised_loss(model, batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sequence_logprob_is_padding_invariant_and_matches_a_loop():
    model = build_model("gpt2")
    pairs = [encode_pair(TOK, "Question: Where?\nAnswer:", "Tovesk is far"), encode_pair(TOK, "Q:", "x")]
    with torch.no_grad():
        both = sequence_logprob(model, collate(pairs, 0, "cpu"))
        for i, (ids, n_prompt) in enumerate(pairs):
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
            expected = sum(logp[t - 1, ids[t]] for t in range(n_prompt, len(ids)))
            torch.testing.assert_close(both[i], expected, atol=1e-4, rtol=1e-5)


def test_dpo_loss_reference_values():
    z = torch.zeros(3)
    assert float(dpo_loss(z, z, z, z, 0.1)) == pytest.approx(math.log(2))
    pc, pr, rc, rr = torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5])
    expected = -math.log(1 / (1 + math.exp(-0.5 * ((-1 + 2) - (-3 + 2.5)))))
    assert float(dpo_loss(pc, pr, rc, rr, 0.5)) == pytest.approx(expected, rel=1e-6)


def test_select_keeps_top_k_by_norm_and_leaves_model_unchanged():
    model = build_model("llama")
    before = _state(model)
    cfg = SelectConfig(l1=0.0, top_k=3, init_std=1e-3, train=TrainConfig(epochs=4, lr=1e-2, batch_size=12))
    result = select_heads(model, TOK, completions(), cfg)
    assert len(result.heads) == 3 and len(result.norms) == 12
    ranked = sorted(result.norms, key=lambda n: -result.norms[n])
    assert result.heads == ranked[:3]
    assert result.losses[-1] < result.losses[0]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    assert SelectConfig().k(Seam.attach(model).geometry) == 1  # 3% of 12 heads, at least one


def test_select_with_huge_lambda_selects_nothing_and_says_so():
    model = build_model("llama")
    cfg = SelectConfig(l1=1e3, top_k=3, train=TrainConfig(epochs=1, lr=1e-2, batch_size=12))
    result = select_heads(model, TOK, completions(), cfg)
    assert result.heads == [] and result.n_nonzero == 0
    assert "selected no heads" in result.message()


@pytest.mark.parametrize("arch", ["mistral-gqa", "gpt2"])
def test_tune_trains_only_offsets(arch):
    model = build_model(arch)
    before = _state(model)
    adapter, losses = tune_offsets(model, TOK, completions(), ["0-1", "2-3"], TrainConfig(epochs=8, lr=5e-2))
    assert adapter.A is None and adapter.v.shape == (2, 16)
    # Per-batch losses are noisy (and the tiny BPE differs between processes): compare the first epoch with the
    # last two.
    assert sum(losses[-4:]) / 4 < sum(losses[:2]) / 2 - 0.03
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(h is None for h in Seam.attach(model)._z_handles)


def test_tune_with_dpo_raises_chosen_over_rejected():
    model = build_model("llama")
    prefs = preferences()
    ref = reference_logprobs(model, TOK, prefs, 4)
    adapter, losses = tune_offsets(model, TOK, prefs, ["0-0", "1-2", "2-1"], TrainConfig(epochs=4, lr=5e-2))
    assert losses[0] == pytest.approx(math.log(2), abs=1e-2)
    from headlab.lofit.adapter import apply_adapters
    with apply_adapters(model, adapter):
        after = reference_logprobs(model, TOK, prefs, 4)
    assert ((after[:, 0] - after[:, 1]) > (ref[:, 0] - ref[:, 1])).all()


def test_empty_heads_and_bad_config():
    model = build_model("llama")
    with pytest.raises(HeadlabError, match="empty"):
        tune_offsets(model, TOK, completions(), [], TrainConfig())
    with pytest.raises(HeadlabError, match="'epochs'"):
        tune_offsets(model, TOK, completions(), ["0-0"], TrainConfig(epochs=0))
    with pytest.raises(HeadlabError, match="reference"):
        from headlab.lofit.train import train
        train(model, TOK, [], preferences(), TrainConfig())


def test_random_heads_same_k_outside_the_set():
    g = Seam.attach(build_model("llama")).geometry
    picked = random_heads(g, 3, seed=1, exclude=["0-0", "0-1", "0-2"])
    assert len(picked) == 3 and not set(picked) & {"0-0", "0-1", "0-2"}
    assert picked == random_heads(g, 3, seed=1, exclude=["0-0", "0-1", "0-2"])
    with pytest.raises(HeadlabError):
        random_heads(g, 12, exclude=["0-0"])


def test_lora_baseline_trains():
    model = build_model("llama")
    peft_model, losses = train_lora(model, TOK, completions(), TrainConfig(epochs=3, lr=1e-2), rank=2)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == 3 * 2 * (2 * 64 + 64 * 2)  # layers x (q, v) x (A [2, 64] + B [64, 2])
    assert losses[-1] < losses[0]


def test_multiple_choice_scores_match_a_plain_computation():
    model = build_model("llama")
    item = MultipleChoice("Question: Where was Mara Quill born?\nAnswer:", ["Tovesk", "green", "Halden"],
                          [0, 0, 1], [1, 0, 1])
    lp = choice_logprobs(model, TOK, item)
    mc1_only = MultipleChoice(item.prompt, item.choices, item.mc1_labels, [])
    mc2_only = MultipleChoice(item.prompt, item.choices, [], item.mc2_labels)
    scores = evaluate_multiple_choice(model, TOK, [mc1_only, mc2_only])
    assert scores["mc1"] == float(int(lp.argmax()) == 2)
    p = lp.double().exp()
    assert scores["mc2"] == pytest.approx(float((p[0] + p[2]) / p.sum()), rel=1e-6)
