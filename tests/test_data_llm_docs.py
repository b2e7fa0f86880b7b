"""The optional LLM document writer against a fake OpenAI-compatible server on 127.0.0.1."""

import pytest
from bpe import train_byte_level_bpe
from fake_openai import chat_reply, fake_chat_server

from headlab.core.errors import HeadlabError
from headlab.data.llm_docs import LLMDocWriter
from headlab.data.tasks import GenConfig, generate_examples


class _Fake:
    """What the fake endpoint answers, set by each test, and what it was asked."""
    status = 200
    mode = "echo"  # echo: include the required sentence; drop: omit it
    requests: list = []

    @classmethod
    def reply(cls, body: dict) -> tuple[int, dict]:
        prompt = body["messages"][0]["content"]
        sentence = prompt.split('word for word: "', 1)[-1].split('" Do not', 1)[0]
        if cls.mode == "echo":
            return cls.status, chat_reply(f"An opening line.\n\nSome more words here. {sentence} A closing remark.")
        return cls.status, chat_reply("First point. Second point. Third point.")


@pytest.fixture
def server():
    _Fake.status, _Fake.mode = 200, "echo"
    with fake_chat_server(_Fake.reply) as (url, requests):
        _Fake.requests = requests
        yield url


def test_document_contains_sentence_and_is_cached(server, tmp_path):
    writer = LLMDocWriter(server, "fake-model", tmp_path / "cache", api_key="k")
    text = writer.document("Mara Quill", "Mara Quill was born in Tovesk.")
    assert "Mara Quill was born in Tovesk." in text and "\n" not in text
    assert len(_Fake.requests) == 1
    req = _Fake.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
    assert req["body"]["model"] == "fake-model" and req["body"]["seed"] == 0
    # Same request again: served from disk, even by a new writer (a later run).
    again = LLMDocWriter(server, "fake-model", tmp_path / "cache").document("Mara Quill",
                                                                            "Mara Quill was born in Tovesk.")
    assert again == text and len(_Fake.requests) == 1
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1


def test_missing_sentence_is_inserted(server, tmp_path):
    _Fake.mode = "drop"
    text = LLMDocWriter(server, "m", tmp_path).document("Ivo", "Ivo lives in Brask.")
    assert text == "First point. Ivo lives in Brask. Second point. Third point."


def test_errors_are_one_line(server, tmp_path):
    _Fake.status = 500
    with pytest.raises(HeadlabError, match="HTTP 500"):
        LLMDocWriter(server, "m", tmp_path).complete("hi")
    assert not list(tmp_path.glob("*.json"))  # failures are not cached
    with pytest.raises(HeadlabError, match="cannot reach"):
        LLMDocWriter("http://127.0.0.1:9/v1", "m", tmp_path, timeout=2).complete("hi")


def test_generator_uses_writer(server, tmp_path):
    text = "An opening line. Some more words here. A closing remark. The value of key"
    tok = train_byte_level_bpe([text] * 20, vocab_size=400)
    writer = LLMDocWriter(server, "m", tmp_path)
    cfg = GenConfig("mdqa", "templated", "diverse", n=1, length=400, seed=0)
    (ex,) = generate_examples(cfg, tok, writer=writer)
    assert all(d.text.startswith("An opening line.") for d in ex.documents)
    assert ex.span_texts()[0] in ex.documents[ex.gold_doc_ids[0] - 1].text
    with pytest.raises(HeadlabError, match="haystack 'diverse' only"):
        generate_examples(GenConfig("mdqa", "templated", "repetitive", n=1), tok, writer=writer)
