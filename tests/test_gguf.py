"""GGUF input: a tiny random Llama written as a GGUF file (the `gguf` package's writer, float32 tensors) loads
through headlab's loader into the same model, tokenizer and logits; the CLI takes it as --model F.gguf or as
--model DIR --gguf-file F."""

import json

import numpy as np
import pytest
import torch
from tiny import COMMON, build_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from headlab.cli import main
from headlab.mech.heads import load_scores
from headlab.model.geometry import head_geometry
from headlab.model.loading import load_model, load_model_config, load_tokenizer

gguf = pytest.importorskip("gguf")

TEXT = "Mara Quill was born in Tovesk. The grass is green."
_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
          "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _rope_layout(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows with each head's two rotary halves interleaved; transformers undoes it."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model: LlamaForCausalLM, tokenizer, path) -> None:
    """The model and its byte-level BPE tokenizer as a float32 GGUF file, laid out as llama.cpp writes one."""
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if i in tokenizer.all_special_ids else 1 for _, i in vocab])  # 3: control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(c.num_hidden_layers):
        for hf, name in _NAMES.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if name in ("attn_q", "attn_k"):
                t = _rope_layout(t, c.num_attention_heads if name == "attn_q" else c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(original model, path of its GGUF file): grouped-query, so the k layout differs from q's."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**COMMON, num_key_value_heads=2)).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_gguf(model, build_tokenizer(), path)
    return model, path


@torch.no_grad()
def test_gguf_file_loads_as_the_same_model(tiny_gguf, capfd):
    original, path = tiny_gguf
    tokenizer = build_tokenizer()
    for model, tok in (load_model(path), load_model(path.parent, gguf_file=path.name)):
        assert getattr(model, "hf_quantizer", None) is None  # a plain model: fine-tuned or merged ones save
        assert tok(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]
        ids = torch.tensor([tokenizer(TEXT)["input_ids"]])
        assert torch.equal(model(ids).logits, original(ids).logits)
    assert head_geometry(load_model_config(path)) == head_geometry(original.config)
    assert load_tokenizer(path).eos_token_id == tokenizer.eos_token_id
    assert "warn" not in capfd.readouterr().err.lower()


def test_loaded_gguf_model_saves_as_safetensors(tiny_gguf, tmp_path):
    original, path = tiny_gguf
    model, _ = load_model(path)
    model.save_pretrained(tmp_path / "saved")
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    ids = torch.tensor([[5, 9, 17, 33]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, original(ids).logits)


def test_detect_cli_takes_a_gguf_file_either_way(tiny_gguf, tmp_path, capsys):
    _, path = tiny_gguf
    probes = tmp_path / "p.jsonl"
    probes.write_text(json.dumps({"input_ids": list(range(3, 60)), "needle_start": 10, "needle_end": 30}) + "\n")
    runs = {}
    for name, model_args in {"path": ["--model", str(path)],
                             "dir": ["--model", str(path.parent), "--gguf-file", path.name],
                             "file": ["--gguf-file", str(path)]}.items():
        out = tmp_path / name
        code = main(["detect", *model_args, "--probes", str(probes), "--out", str(out), "--max-new-tokens", "4",
                     "--keep-failed"])
        assert code == 0, capsys.readouterr().err
        runs[name] = load_scores(out / "retrieval_scores.json")
    assert runs["path"] == runs["dir"] == runs["file"] and len(runs["path"]) == 3 * 4


def test_bad_gguf_inputs_give_one_line(tiny_gguf, tmp_path, capsys):
    _, path = tiny_gguf
    base = ["detect", "--out", str(tmp_path / "out"), "--max-new-tokens", "2"]
    cases = [(["--model", str(tmp_path / "absent.gguf")], "absent.gguf: GGUF file not found"),
             (["--model", str(path.parent), "--gguf-file", "absent.gguf"], "absent.gguf: GGUF file not found"),
             (["--model", str(path.parent), "--gguf-file", "tiny.bin"], "expected a file ending in .gguf"),
             (["--model", str(path), "--gguf-file", "tiny.gguf"], "the folder holding the GGUF file")]
    for args, fragment in cases:
        assert main(base + args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()
