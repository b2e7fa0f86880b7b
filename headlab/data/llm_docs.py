"""Documents written by an LLM behind an OpenAI-compatible endpoint (e.g. a local vLLM server).

Off by default: pass an `LLMDocWriter` to `generate_examples` to replace the toy world's filler prose with
LLM-written paragraphs around each needle sentence. Every completion is cached on disk, keyed by the request,
so a dataset regenerates identically and offline. Only the standard library is used (urllib).
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json
from headlab.data.spans import sentence_spans

DOC_PROMPT = ("Write one short encyclopedia-style paragraph (4 to 6 sentences) about {title}. It must "
              "contain this sentence word for word: \"{sentence}\" Do not state any other fact of the same "
              "kind about {title}. Write only the paragraph.")


@dataclass
class LLMDocWriter:
    base_url: str                 # e.g. "http://127.0.0.1:8000/v1"
    model: str
    cache_dir: str | Path
    api_key: str | None = None
    temperature: float = 0.7
    max_tokens: int = 400
    seed: int = 0
    timeout: float = 120.0

    def _request(self, prompt: str) -> dict:
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed}

    def complete(self, prompt: str) -> str:
        """The endpoint's reply to one user message (cached by request)."""
        body = self._request(prompt)
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        cache = Path(self.cache_dir) / f"{key}.json"
        if cache.is_file():
            try:
                return json.loads(cache.read_text(encoding="utf-8"))["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a damaged cache entry is refetched and overwritten
        text = self._post(body)
        atomic_write_json(cache, {"request": body, "text": text})
        return text

    def _post(self, body: dict) -> str:
        return self.post(body)[0]

    def post(self, body: dict) -> tuple[str, dict]:
        """Send one chat-completions request body (uncached): the reply's text and the whole parsed reply
        (its `usage` counts tokens). headlab.cot uses it too, with greedy settings and its own cache."""
        url = self.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                reply = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise HeadlabError(f"{url}: LLM endpoint answered HTTP {e.code} ({e.reason})") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise HeadlabError(f"{url}: cannot reach the LLM endpoint ({e})") from None
        except json.JSONDecodeError:
            raise HeadlabError(f"{url}: LLM endpoint returned invalid JSON") from None
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise HeadlabError(f"{url}: field 'choices[0].message.content' is missing") from None
        if not isinstance(content, str):
            raise HeadlabError(f"{url}: field 'choices[0].message.content' is not a string")
        return content, reply

    def document(self, title: str, sentence: str) -> str:
        """A paragraph about `title` that contains `sentence` verbatim (inserted mid-paragraph if the LLM
        dropped or reworded it), on one line so the context keeps one document per paragraph."""
        text = re.sub(r"\s+", " ", self.complete(DOC_PROMPT.format(title=title, sentence=sentence))).strip()
        if sentence in text:
            return text
        spans = sentence_spans(text)
        if not spans:
            return sentence
        cut = spans[len(spans) // 2][0]
        return f"{text[:cut]}{sentence} {text[cut:]}".strip()
