"""Who answers the prompts: a Hugging Face causal LM or an OpenAI-compatible endpoint, behind a disk cache.

Decoding is greedy everywhere. Every reply is stored in the cache folder under the hash of (backend, model,
prompt, decoding settings) as soon as its batch finishes, so an interrupted run resumes where it stopped and a
re-run asks the backend nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from headlab.core.io import atomic_write_json
from headlab.cot.prompts import render_plain
from headlab.data.prompts import apply_chat_template


@dataclass
class Request:
    messages: list[dict]
    max_new_tokens: int


@dataclass
class Reply:
    text: str
    tokens: int | None  # tokens generated (None when an endpoint does not report usage)


class Backend(Protocol):
    def identity(self) -> dict:
        """What names the model and its numerics in the cache key (backend, model, weights, dtype...)."""

    def prompt(self, messages: list[dict]) -> str | list[dict]:
        """The exact prompt the model sees (rendered text for a local model, the messages for an endpoint)."""

    def generate(self, requests: list[Request]) -> list[Reply]:
        """Greedy replies, in order."""


class HFBackend:
    """A local causal LM through headlab's loader and batched greedy decoder (left-padded, KV cache)."""

    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 8,
                 trust_remote_code: bool = False):
        from headlab.model.loading import load_model

        self.model_path, self.dtype, self.batch_size = str(model_path), dtype, batch_size
        self.model, self.tokenizer = load_model(model_path, device=device, dtype=dtype,
                                                trust_remote_code=trust_remote_code)
        self.has_template = bool(getattr(self.tokenizer, "chat_template", None))

    def identity(self) -> dict:
        return {"backend": "hf", "model": self.model_path, "weights": weights_fingerprint(self.model_path),
                "dtype": self.dtype}

    def prompt(self, messages: list[dict]) -> str:
        if self.has_template:
            return apply_chat_template(self.tokenizer, messages)
        return render_plain(messages)

    def generate(self, requests: list[Request]) -> list[Reply]:
        from headlab.data.prompts import encode_prompt
        from headlab.mech.generate import greedy_generate

        replies: list[Reply | None] = [None] * len(requests)
        for cap in sorted({r.max_new_tokens for r in requests}):
            idx = [i for i, r in enumerate(requests) if r.max_new_tokens == cap]
            ids = [encode_prompt(self.tokenizer, self.prompt(requests[i].messages)) for i in idx]
            # Multi-line answers: stop at EOS (the chat template's end of turn), never at a newline.
            out = greedy_generate(self.model, self.tokenizer, ids, max_new_tokens=cap, batch_size=self.batch_size,
                                  stop_at_newline=False)
            for i, gen in zip(idx, out, strict=True):
                replies[i] = Reply(self.tokenizer.decode(gen, skip_special_tokens=True), len(gen))
        return replies  # type: ignore[return-value]


def weights_fingerprint(model_path: str) -> str:
    """Size and mtime of the weight files: a cache entry dies with the weights it came from."""
    folder = Path(model_path)
    if not folder.is_dir():
        return "hub"
    stats = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in sorted(folder.glob("*.safetensors"))]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


class EndpointBackend:
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, ...), via headlab's client."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 300.0):
        from headlab.data.llm_docs import LLMDocWriter

        self.model = model
        self.client = LLMDocWriter(base_url, model, cache_dir=os.devnull, api_key=api_key, timeout=timeout)

    def identity(self) -> dict:
        return {"backend": "endpoint", "model": self.model}

    def prompt(self, messages: list[dict]) -> list[dict]:
        return messages

    def generate(self, requests: list[Request]) -> list[Reply]:
        replies = []
        for r in requests:
            body = {"model": self.model, "messages": r.messages, "temperature": 0.0, "max_tokens": r.max_new_tokens,
                    "seed": 0}
            text, reply = self.client.post(body)
            usage = reply.get("usage") if isinstance(reply, dict) else None
            tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
            replies.append(Reply(text, tokens if isinstance(tokens, int) else None))
        return replies


class ResponseCache:
    """One JSON file per reply, `<folder>/<key[:2]>/<key>.json`, written atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @staticmethod
    def key(identity: dict, prompt: str | list[dict], settings: dict) -> str:
        blob = json.dumps({"id": identity, "prompt": prompt, "settings": settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Reply | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
            return Reply(obj["text"], obj["tokens"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            return None  # a damaged entry is asked again and overwritten

    def put(self, key: str, reply: Reply, record: dict) -> None:
        atomic_write_json(self._path(key), {**record, "text": reply.text, "tokens": reply.tokens})


def decoding_settings(max_new_tokens: int) -> dict:
    return {"decoding": "greedy", "max_new_tokens": max_new_tokens, "stop": "eos"}


def answer_all(backend: Backend, cache: ResponseCache, requests: list[Request], chunk: int = 32,
               progress: Callable[[int, int], None] | None = None) -> list[Reply]:
    """Replies to every request, from the cache where it has them; new ones are cached chunk by chunk."""
    identity = backend.identity()
    prompts = [backend.prompt(r.messages) for r in requests]
    keys = [cache.key(identity, p, decoding_settings(r.max_new_tokens)) for p, r in zip(prompts, requests, strict=True)]
    replies: list[Reply | None] = [cache.get(k) for k in keys]
    # One length cap per chunk, longest prompts first: a batch shares its cap and has little padding.
    pending = sorted((i for i, r in enumerate(replies) if r is None),
                     key=lambda i: (requests[i].max_new_tokens, -len(json.dumps(prompts[i]))))
    for lo in range(0, len(pending), chunk):
        idx = pending[lo:lo + chunk]
        for i, reply in zip(idx, backend.generate([requests[i] for i in idx]), strict=True):
            cache.put(keys[i], reply, {"identity": identity, "prompt": prompts[i],
                                       "settings": decoding_settings(requests[i].max_new_tokens)})
            replies[i] = reply
        if progress:
            progress(min(lo + chunk, len(pending)), len(pending))
    return replies  # type: ignore[return-value]
