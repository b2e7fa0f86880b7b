"""The optional LLM document writer against a fake OpenAI-compatible server on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from bpe import train_byte_level_bpe

from headlab.data.llm_docs import LLMDocWriter
from headlab.data.tasks import GenConfig, generate_examples
from headlab.errors import HeadlabError


class _Fake(BaseHTTPRequestHandler):
    # Class-level knobs set by each test: what to answer and what was asked.
    status = 200
    mode = "echo"  # echo: include the required sentence; drop: omit it
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization")
        type(self).requests.append({"path": self.path, "auth": auth, "body": body})
        prompt = body["messages"][0]["content"]
        sentence = prompt.split('word for word: "', 1)[-1].split('" Do not', 1)[0]
        if self.mode == "echo":
            text = f"An opening line.\n\nSome more words here. {sentence} A closing remark."
        else:
            text = "First point. Second point. Third point."
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Fake.status, _Fake.mode, _Fake.requests = 200, "echo", []
    httpd = HTTPServer(("127.0.0.1", 0), _Fake)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


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
