"""A fake OpenAI-compatible chat endpoint on 127.0.0.1 for tests: it records every request and answers with what
the test's `reply(body)` returns."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

Reply = Callable[[dict], tuple[int, dict]]  # request body -> (HTTP status, response JSON)


def chat_reply(text: str, **extra) -> dict:
    """The JSON of a chat completion answering `text`."""
    return {"choices": [{"message": {"role": "assistant", "content": text}}], **extra}


@contextmanager
def fake_chat_server(reply: Reply) -> Iterator[tuple[str, list[dict]]]:
    """(base URL ending in /v1, the list every request is appended to: path, auth header and body)."""
    requests: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status, answer = reply(body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
