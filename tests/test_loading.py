"""The one loader: an unmerged LoRA folder trained under a context extension is the same model as the same adapter
saved with --merge, in the library and in every command; `inspect` reads it without weights."""

import json
import random

import pytest
import torch

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.data.example import save_examples
from headlab.data.tasks import GenConfig, generate_examples
from headlab.experiments.finetune import FinetuneConfig, finetune
from headlab.model.loading import inspect, load_model, load_tokenizer

SHIPPED_POSITIONS = 256  # the shipped toy model: it retrieves, so detection and knockout scores are not all zero
EXTENDED = 512  # every probe below is longer than the shipped model's positions
ROPE = {"rope_type": "linear", "factor": 2.0}


@pytest.fixture(scope="module")
def base_dir():
    from headlab.model.loading import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="module")
def adapters(base_dir, tmp_path_factory):
    """(unmerged adapter folder, merged folder) of one fine-tune: the same seed, data and extension."""
    root = tmp_path_factory.mktemp("adapters")
    data = root / "train.jsonl"
    save_examples(generate_examples(GenConfig("mdqa", "symbolic", "repetitive", n=4, length=300, seed=0,
                                              doc_sentences=(0, 1)), load_tokenizer(base_dir)), data)
    folders = []
    for merge in (False, True):
        out = root / ("merged" if merge else "adapter")
        finetune(FinetuneConfig(model=str(base_dir), data=str(data), out=str(out), context_length=EXTENDED,
                                rope_scaling=ROPE, lr=1e-3, steps=2, batch_size=2, save_steps=2, seed=3,
                                merge=merge))
        folders.append(out / "model")
    assert (folders[0] / "adapter_config.json").is_file() and (folders[0] / "extension.json").is_file()
    assert (folders[1] / "model.safetensors").is_file()
    return folders


def test_inspect_reads_an_adapter_without_weights(adapters, base_dir, monkeypatch):
    monkeypatch.setattr("headlab.model.loading._from_pretrained", lambda *a, **k: pytest.fail("inspect loaded weights"))
    adapter, merged = adapters
    info, base = inspect(adapter), inspect(base_dir)
    assert info.adapter == adapter and info.base.name == str(base_dir.resolve())
    assert info.max_positions == EXTENDED and base.max_positions == SHIPPED_POSITIONS
    assert info.config.rope_parameters == inspect(merged).config.rope_parameters != base.config.rope_parameters
    assert info.geometry == base.geometry
    assert info.tokenizer.get_vocab() == base.tokenizer.get_vocab()


def test_unmerged_adapter_loads_as_the_merged_model(adapters):
    (adapter, tok_a), (merged, _) = (load_model(path) for path in adapters)
    assert not hasattr(adapter, "peft_config") and not adapter.training
    assert adapter.config.max_position_embeddings == EXTENDED
    ids = torch.tensor([random.Random(0).choices(range(3, 2000), k=400)])  # past the base's 256 positions
    with torch.no_grad():
        torch.testing.assert_close(adapter(ids).logits, merged(ids).logits, rtol=0, atol=1e-6)
    merged_state = merged.state_dict()
    assert all(torch.allclose(t, merged_state[n], rtol=0, atol=1e-6) for n, t in adapter.state_dict().items())


def _long_probes(path, tokenizer):
    from headlab.data.world_niah import niah_records

    records = niah_records(tokenizer, n=3, context_tokens=SHIPPED_POSITIONS + 64, seed=1)
    path.write_text("".join(json.dumps({k: r[k] for k in ("context", "needle", "question", "answer")}) + "\n"
                            for r in records))
    return path


def test_commands_give_the_merged_models_scores(adapters, tmp_path):
    adapter, merged = adapters
    probes = _long_probes(tmp_path / "probes.jsonl", load_tokenizer(adapter))
    for name, folder in (("adapter", adapter), ("merged", merged)):
        assert main(["detect", "--model", str(folder), "--probes", str(probes), "--max-new-tokens", "16",
                     "--keep-failed", "--out", str(tmp_path / f"detect-{name}")]) == 0
        assert main(["knockout", "--model", str(folder), "--heads", str(tmp_path / f"detect-{name}"),
                     "--data", str(probes), "--k", "2", "--seeds", "2", "--max-new-tokens", "16",
                     "--out", str(tmp_path / f"knockout-{name}")]) == 0
    results = {}
    for file in ("detect-{}/retrieval_scores.json", "knockout-{}/knockout.json"):
        a, m = (json.loads((tmp_path / file.format(name)).read_text()) for name in ("adapter", "merged"))
        assert a == m, file
        results[file.split("-")[0]] = a
    assert any(any(v) for v in results["detect"].values())  # scores that a wrong model would change


def test_adapter_refusals_are_one_line(adapters, tmp_path):
    adapter, _ = adapters
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(HeadlabError, match="base_model_name_or_path"):
        inspect(broken)
    with pytest.raises(HeadlabError, match="--device-map needs a model folder"):
        load_model(adapter, device_map="auto")


def test_loads_show_no_library_bar_unless_verbose(tiny_model_dir, capfd, monkeypatch):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a library session that never called quiet_libraries
    monkeypatch.setattr("headlab.core.quiet._verbose", False)
    load_model(tiny_model_dir)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored for the caller's own bars
    monkeypatch.setattr("headlab.core.quiet._verbose", True)
    load_model(tiny_model_dir)
    assert "Loading weights" in capfd.readouterr().err


def test_an_adapter_is_a_base_to_fine_tune_again(adapters, tmp_path):
    adapter, _ = adapters
    data = tmp_path / "train.jsonl"
    save_examples(generate_examples(GenConfig("mdqa", "symbolic", "repetitive", n=2, length=400, seed=1,
                                              doc_sentences=(0, 1)), load_tokenizer(adapter)), data)
    finetune(FinetuneConfig(model=str(adapter), data=str(data), out=str(tmp_path / "again"), lr=1e-3, steps=1,
                            batch_size=2, save_steps=1, seed=4))
    again = tmp_path / "again" / "model"
    info = inspect(again)
    assert info.base.adapter == adapter and info.max_positions == EXTENDED  # the first extension carries over
    model, _ = load_model(again)
    first, _ = load_model(adapter)
    changed = [n for n, t in model.state_dict().items() if not torch.equal(t, first.state_dict()[n])]
    assert changed and all(".self_attn." in n for n in changed)


def test_an_adapter_that_is_its_own_base_is_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(loop)}))
    with pytest.raises(HeadlabError, match="leads back to this adapter"):
        inspect(loop)
