"""Toy tokenizer, corpus, probes and the pretraining step, on a very small config (seconds)."""

import random

import pytest
import torch

from headlab.core.errors import HeadlabError
from headlab.data.prompts import encode_prompt, render_prompt
from headlab.data.world import World
from headlab.data.world_niah import niah_records
from headlab.toy.corpus import document
from headlab.toy.pretrain import DocumentPacker, PretrainConfig, pretrain
from headlab.toy.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(seed=0, vocab_size=400, n_docs=150)


def test_tokenizer_round_trips_and_keeps_newline_a_single_token(tok):
    text = document(World(0), random.Random(0), 3)
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(nl) == 1
    assert tok("\n\n", add_special_tokens=False)["input_ids"] == nl * 2
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"


def test_documents_answer_by_copying_a_stated_fact():
    w, rng = World(0), random.Random(5)
    for _ in range(50):
        doc = document(w, rng, rng.randint(0, 10))
        context, *qas = doc.split("\n\nQuestion: ")
        assert qas and doc.endswith("\n")
        for qa in qas:
            question, ans = qa.split("\nAnswer: ")
            ans = ans.rstrip("\n")
            assert ans.endswith(".") and ans in context  # the answer is a sentence of the context


def test_packed_rows_hold_whole_documents_and_mask_padding(tok):
    ids, mask = DocumentPacker(World(0), tok, random.Random(0), 128, 4).rows(4)
    assert ids.shape == mask.shape == (4, 128)
    eos = tok.eos_token_id
    for r in range(4):
        n = int(mask[r].sum())
        assert mask[r, :n].all() and not mask[r, n:].any()  # padding only at the end
        assert ids[r, n - 1] == eos  # the last packed document is complete


def test_buffered_packing_fills_rows_better_and_keeps_every_document(tok):
    def packer(buffer_size):
        return DocumentPacker(World(0), tok, random.Random(5), 256, 16, buffer_size=buffer_size)

    first_come, buffered = packer(1), packer(16)
    fill = {name: float((p.rows(24)[1] > 0).float().mean()) for name, p in [("first", first_come), ("buf", buffered)]}
    assert fill["buf"] > fill["first"] + 0.03
    # No document is cut or dropped: what was placed plus what waits is exactly the drawn stream.
    ids, mask = buffered.rows(12)
    placed = []
    for r in range(12):
        row = ids[r][mask[r] > 0].tolist()
        while row:
            end = row.index(tok.eos_token_id) + 1
            placed.append(row[:end])
            row = row[end:]
    stream_source = packer(16)
    stream_source.rows(24)  # the same draws as `buffered` made before this call
    drawn = [stream_source._draw() for _ in range(len(placed) + len(buffered.waiting) - len(stream_source.waiting))]
    assert sorted(placed + buffered.waiting) == sorted(stream_source.waiting + drawn)


def test_niah_records_have_the_asked_length_and_needle(tok):
    probes = niah_records(tok, 5, 160, seed=3)
    assert probes == niah_records(tok, 5, 160, seed=3)
    assert [p["depth"] for p in probes] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for p in probes:
        n = len(encode_prompt(tok, render_prompt(tok, p["context"], p["question"])))
        assert 145 <= n <= 160
        assert p["needle"] in p["context"] and p["short_answer"] in p["needle"] and p["answer"] == p["needle"]
    assert probes[0]["context"].startswith(probes[0]["needle"])
    assert probes[-1]["context"].endswith(probes[-1]["needle"])
    with pytest.raises(HeadlabError, match="context_tokens"):
        niah_records(tok, 2, 10, seed=0)


def test_a_few_training_steps_lower_the_loss(tok, tmp_path):
    cfg = PretrainConfig(seed=0, steps=30, batch_size=4, seq_len=96, lr=3e-3, warmup=5, hidden_size=32,
                         n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=64, max_filler=3,
                         task_share=0.0)
    model, _, summary = pretrain(cfg, tmp_path, tok=tok)
    losses = summary["losses_every_50"]
    assert summary["loss_last10"] < losses[0] - 0.7
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "tokenizer.json").is_file()
    assert model.config.max_position_embeddings == 96
    # Same seed, same weights.
    model2, _, _ = pretrain(cfg, None, tok=tok)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))


def test_answer_tokens_get_the_answer_weight(tok):
    ids, w = DocumentPacker(World(0), tok, random.Random(1), 200, 3, answer_weight=4.0).rows(2)
    for r in range(2):
        weighted = tok.decode(ids[r][w[r] == 4.0])
        answers = [line[len("Answer: "):] for line in tok.decode(ids[r][w[r] > 0]).split("\n")
                   if line.startswith("Answer: ")]
        assert answers and weighted == "".join(" " + a + "\n" for a in answers)


def test_task_documents_are_packed_whole_with_their_answer_weighted(tok):
    ids, w = DocumentPacker(World(0), tok, random.Random(2), 256, 3, answer_weight=4.0, task_share=1.0).rows(3)
    for r in range(3):
        text = tok.decode(ids[r][w[r] > 0])
        assert text.startswith("Document [1] (Title: ")
        weighted = tok.decode(ids[r][w[r] == 4.0])
        answer_lines = [line for line in text.split("\n") if line.startswith("Answer: ")]
        assert answer_lines and weighted == "".join(line[len("Answer:"):] + "\n" for line in answer_lines)


@pytest.mark.parametrize("field,value", [("steps", 0), ("batch_size", 0), ("task_share", 1.5), ("task_share", -0.1)])
def test_bad_pretrain_settings_name_the_field(field, value, tmp_path):
    with pytest.raises(HeadlabError, match=field):
        pretrain(PretrainConfig(**{field: value}), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written
