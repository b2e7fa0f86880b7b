import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from headlab.core.errors import HeadlabError
from headlab.data.example import save_examples
from headlab.data.tasks import GenConfig, generate_examples
from headlab.data.training import IGNORE_INDEX, encode_all, load_task_data
from headlab.experiments.finetune import FinetuneConfig, PadCollator, attention_projection_names, finetune
from headlab.model.loading import load_model, load_tokenizer

LENGTH = 280


def tokenizer(model_dir):
    # Always the saved one: build_tokenizer() retrains BPE, and ties can break differently per call.
    return load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory, tiny_model_dir):
    path = tmp_path_factory.mktemp("ftdata") / "train.jsonl"
    save_examples(generate_examples(GenConfig("mdqa", "symbolic", "repetitive", n=4, length=LENGTH, seed=0,
                                              doc_sentences=(0, 1)),
                                    tokenizer(tiny_model_dir)), path)
    return path


def answer_loss(model, data: Path, answer_only: bool = True) -> float:
    """Mean cross-entropy on answer tokens (or all tokens): the quantity fine-tuning lowers."""
    rows = encode_all(load_task_data(data), tokenizer(model.name_or_path), 10_000, answer_only)
    batch = PadCollator(0)(rows)
    with torch.no_grad():
        return float(model(**batch).loss)


def cfg(model_dir, data, out, **kw) -> FinetuneConfig:
    base = dict(model=str(model_dir), data=str(data), out=str(out), lr=1e-2, steps=4, batch_size=2,
                save_steps=2, logging_steps=1, seed=3)
    return FinetuneConfig(**{**base, **kw})


def test_lora_lowers_loss_and_touches_attention_only(tiny_model_dir, train_file, tmp_path):
    summary = finetune(cfg(tiny_model_dir, train_file, tmp_path / "run", context_length=1024, merge=True))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert answer_loss(tuned, train_file) < answer_loss(base, train_file) - 0.05
    changed = {n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])}
    assert changed and all(n.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for n in changed)
    assert tuned.config.max_position_embeddings == 1024
    assert tuned.config.rope_parameters["rope_theta"] > base.config.rope_parameters["rope_theta"]
    assert summary["context_length"] == 1024 and summary["tokens_seen"] > 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["method"] == "lora"
    assert list((tmp_path / "run" / "checkpoints").glob("checkpoint-*/adapter_model.safetensors"))


def test_full_finetune_lowers_loss(tiny_model_dir, train_file, tmp_path):
    finetune(cfg(tiny_model_dir, train_file, tmp_path / "run", method="full", lr=3e-3, loss_on="all"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert answer_loss(tuned, train_file, False) < answer_loss(base, train_file, False) - 0.05
    # Full fine-tuning moves the MLPs too, which LoRA on attention never does.
    assert not torch.equal(tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
    assert tuned.config.max_position_embeddings == base.config.max_position_embeddings  # no extension asked


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_resume_reproduces_uninterrupted_run(tiny_model_dir, train_file, tmp_path):
    # Two epochs of 2 batches: the resumed run must replay the same shuffled order and RNG state.
    straight = cfg(tiny_model_dir, train_file, tmp_path / "a", lora_dropout=0.1)
    finetune(straight)
    broken = cfg(tiny_model_dir, train_file, tmp_path / "b", lora_dropout=0.1)
    assert finetune(broken, callbacks=[StopAt(2)]) == {"stopped_at_step": 2}
    assert not (tmp_path / "b" / "model").exists()
    counter = CountSteps()
    finetune(broken, resume=True, callbacks=[counter])
    assert counter.steps == [3, 4]  # it really continued from checkpoint-2, not from scratch
    a = load_file(tmp_path / "a" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # The adapter loads through from_pretrained's PEFT path and through headlab's loader.
    assert json.loads((tmp_path / "a" / "model" / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(Path(tiny_model_dir).resolve())
    model, _ = load_model(tmp_path / "a" / "model")
    assert not hasattr(model, "peft_config")


def test_attention_projection_names():
    from tiny import build_model

    assert attention_projection_names(build_model("llama")) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    gpt2 = attention_projection_names(build_model("gpt2"))  # c_proj is also an MLP name: full paths
    assert "transformer.h.0.attn.c_proj" in gpt2 and not any("mlp" in n for n in gpt2)


def test_labels_mask_prompt(train_file, tiny_model_dir):
    tok = tokenizer(tiny_model_dir)
    item = load_task_data(train_file)[0]
    row = encode_all([item], tok, 10_000)[0]
    answer = [t for t in row["labels"] if t != IGNORE_INDEX]
    assert answer == tok(" " + item.example.answers[0] + "\n", add_special_tokens=False)["input_ids"]
    assert tok.decode(answer).endswith("\n")
    assert row["labels"][: len(row["labels"]) - len(answer)] == [IGNORE_INDEX] * (len(row["labels"]) - len(answer))
    full = encode_all([item], tok, 10_000, answer_only=False)[0]
    assert full["labels"] == full["input_ids"] == row["input_ids"]


# ---- bad input -----------------------------------------------------------------------------------------

def test_data_longer_than_target_context(tiny_model_dir, train_file, tmp_path):
    with pytest.raises(HeadlabError, match=r"train.jsonl:1: example .* longer than the target context 100"):
        finetune(cfg(tiny_model_dir, train_file, tmp_path / "run", context_length=100))
    assert not (tmp_path / "run").exists()


def test_empty_data_file(tiny_model_dir, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(HeadlabError, match="empty.jsonl: no examples"):
        finetune(cfg(tiny_model_dir, tmp_path / "empty.jsonl", tmp_path / "run"))


def test_unknown_field(tiny_model_dir, train_file, tmp_path):
    lines = train_file.read_text().splitlines()
    obj = json.loads(lines[1])
    obj["answer"] = "typo for answers"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(obj)]) + "\n")
    with pytest.raises(HeadlabError, match=r"bad.jsonl:2: field 'answer' is not a task-example field"):
        finetune(cfg(tiny_model_dir, bad, tmp_path / "run"))


def test_bad_config_values(tiny_model_dir, train_file, tmp_path):
    with pytest.raises(HeadlabError, match="field 'method'"):
        finetune(cfg(tiny_model_dir, train_file, tmp_path / "r", method="qlora"))
    with pytest.raises(HeadlabError, match="rope_type"):
        finetune(cfg(tiny_model_dir, train_file, tmp_path / "r", rope_scaling={"factor": 4}))
    with pytest.raises(HeadlabError, match="nothing to resume"):
        finetune(cfg(tiny_model_dir, train_file, tmp_path / "r"), resume=True)


def test_extension_overrides():
    from tiny import CONFIGS

    from headlab.model.loading import extension_overrides, ntk_theta

    llama = CONFIGS["llama"]()[1]  # 512 positions, head dim 16, theta 10000
    ext = extension_overrides(llama, 2048)
    assert ext["max_position_embeddings"] == 2048
    assert ext["rope_parameters"]["rope_theta"] == pytest.approx(10000 * 4 ** (16 / 14))
    assert ntk_theta(10000, 1.0, 16) == 10000
    assert extension_overrides(llama, 2048, rope_theta=5e5)["rope_parameters"]["rope_theta"] == 5e5
    linear = extension_overrides(llama, 2048, rope_scaling={"rope_type": "linear", "factor": 4.0})
    assert linear["rope_parameters"] == {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}
    yarn = extension_overrides(llama, 2048, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    assert yarn["rope_parameters"]["original_max_position_embeddings"] == 512
    assert extension_overrides(llama, None) == {}
    with pytest.raises(HeadlabError, match="no rotary position embedding"):
        extension_overrides(CONFIGS["gpt2"]()[1], 2048)
