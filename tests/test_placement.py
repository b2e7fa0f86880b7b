"""A model spread by a device map (layers on CPU and offloaded to disk through accelerate's hooks) gives the
numbers of a plain load for every seam computation: top-1 capture, query and z hooks, knockout, lockstep
patching and LoFiT offsets."""

import pytest
import torch
from tiny import build_model, build_tokenizer

from headlab.core.errors import HeadlabError
from headlab.data.probes import Probe
from headlab.experiments.detect import DetectConfig, detect_retrieval_heads
from headlab.lofit.adapter import LofitAdapter, apply_adapters
from headlab.mech.generate import greedy_generate
from headlab.mech.interventions import head_means, knockout, patch_from_model
from headlab.model.loading import load_model
from headlab.model.placement import parse_device_map, parse_max_memory
from headlab.model.seam import Seam, input_device

# Layer 1 and 2 live on disk: their weights are on the meta device and are loaded by accelerate's hooks at
# each forward; layer 0, the embeddings and the head stay on the CPU.
SPREAD = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
          "model.layers.1": "disk", "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "cpu"}
PROMPTS = [list(range(3, 40)), list(range(10, 30)) + [5, 6, 7]]


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-source")
    build_model("llama", seed=1).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    plain, tokenizer = load_model(tiny_model_dir)
    spread, _ = load_model(tiny_model_dir, device_map=SPREAD)
    return plain, spread, tokenizer


def _logits(model, ids=PROMPTS[0]):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_the_map_really_offloads(models):
    _, spread, _ = models
    assert spread.hf_device_map == SPREAD
    assert spread.model.layers[1].self_attn.o_proj.weight.device.type == "meta"
    assert input_device(spread) == torch.device("cpu")
    torch.testing.assert_close(_logits(spread), _logits(models[0]))


def test_detection_scores_match_a_plain_load(models):
    plain, spread, tokenizer = models
    probes = [Probe(f"p{i}", ids, 4, 12) for i, ids in enumerate(PROMPTS)]
    config = DetectConfig(max_new_tokens=6, batch_size=2, keep_failed=True, progress=False)
    a = detect_retrieval_heads(plain, tokenizer, probes, config)
    b = detect_retrieval_heads(spread, tokenizer, probes, config)
    assert a.retrieval_scores() == b.retrieval_scores()
    assert [o.response_ids for o in a.outcomes] == [o.response_ids for o in b.outcomes]


@pytest.mark.parametrize("mode", ["uniform", "zero", "mean"])
def test_knockout_matches_a_plain_load(models, mode):
    plain, spread, _ = models
    heads = ["0-1", "1-2", "2-0"]  # one on the CPU layer, two on offloaded layers
    logits = []
    for model in (plain, spread):
        means = head_means(model, [(torch.tensor([PROMPTS[0]]), None)]) if mode == "mean" else None
        with knockout(model, heads, mode, "all", means):
            logits.append(_logits(model))
    torch.testing.assert_close(logits[0], logits[1])
    assert not torch.allclose(logits[0], _logits(plain))  # the knockout did something


def test_lockstep_patching_matches_a_plain_load(models, source_dir, tiny_model_dir):
    plain, spread, tokenizer = models
    source_plain, _ = load_model(source_dir)
    source_spread, _ = load_model(source_dir, device_map=SPREAD)
    heads = ["0-0", "1-3", "2-1"]
    outs = []
    for target, source in ((plain, source_plain), (spread, source_spread)):
        with patch_from_model(target, source, heads):
            outs.append(greedy_generate(target, tokenizer, PROMPTS, max_new_tokens=5, stop_at_newline=False))
            logits = _logits(target)
        outs.append(logits)
    assert outs[0] == outs[2]
    torch.testing.assert_close(outs[1], outs[3])


def test_lofit_offsets_match_a_plain_load(models):
    plain, spread, _ = models
    adapter = LofitAdapter([(0, 1), (1, 2), (2, 3)], Seam.attach(plain).geometry, scale=True, offset=True)
    with torch.no_grad():
        adapter.A.normal_(0, 0.5)
        adapter.v.normal_(0, 0.5)
    logits = []
    for model in (plain, spread):
        with apply_adapters(model, adapter):
            logits.append(_logits(model))
    torch.testing.assert_close(logits[0], logits[1])
    assert not torch.allclose(logits[0], _logits(plain))


def test_auto_map_with_a_memory_limit(tiny_model_dir, models):
    # 400 KiB of CPU holds the embeddings and layer 0; the rest goes to disk.
    limits = parse_max_memory("cpu=400KiB")
    model, _ = load_model(tiny_model_dir, device_map=parse_device_map("auto"), max_memory=limits)
    assert {"cpu", "disk"} <= set(model.hf_device_map.values())
    torch.testing.assert_close(_logits(model), _logits(models[0]))


def test_bad_placement_options_are_one_line_errors(tmp_path):
    assert parse_max_memory("0=70GiB,cpu=200GiB") == {0: "70GiB", "cpu": "200GiB"}
    assert parse_device_map('{"model": 0}') == {"model": 0}
    with pytest.raises(HeadlabError, match="--max-memory"):
        parse_max_memory("70GiB")
    with pytest.raises(HeadlabError, match="--device-map"):
        parse_device_map("everywhere")
    with pytest.raises(HeadlabError, match="not found"):
        parse_device_map(str(tmp_path / "map.json"))
    with pytest.raises(HeadlabError, match="needs --device-map"):
        load_model(tmp_path, max_memory={"cpu": "1GiB"})


def test_a_map_that_leaves_nothing_off_disk_is_one_line(tiny_model_dir):
    with pytest.raises(HeadlabError, match="whole model on disk"):
        load_model(tiny_model_dir, device_map="auto", max_memory={"cpu": "60KiB"})


def test_detect_cli_with_a_device_map_writes_the_plain_scores(tiny_model_dir, tmp_path):
    from headlab.cli import main

    probes = tmp_path / "p.jsonl"
    probes.write_text('{"input_ids": ' + str(PROMPTS[0]) + ', "needle_start": 4, "needle_end": 12}\n')
    args = ["detect", "--model", str(tiny_model_dir), "--probes", str(probes), "--max-new-tokens", "5",
            "--keep-failed"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    assert main(args + ["--out", str(tmp_path / "spread"), "--device-map", "auto", "--max-memory", "cpu=400KiB"]) == 0
    name = "retrieval_scores.json"
    assert (tmp_path / "spread" / name).read_text() == (tmp_path / "plain" / name).read_text()
