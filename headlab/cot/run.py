"""`headlab cot run`: every item answered directly and with chain of thought (and optionally plan + solve).

Writes into the run folder: config.json, examples.jsonl (one line per item: question, gold, and per mode the
response, tokens generated, extracted answer, extraction status and correctness), then the report. Replies
live in the cache folder (default `<out>/cache`), so a killed run resumes and a re-run costs no generation.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json, atomic_write_text
from headlab.cot.backends import Backend, Request, ResponseCache, answer_all
from headlab.cot.datasets import Item, load_dataset
from headlab.cot.extract import Extraction, extract, is_correct
from headlab.cot.prompts import MODES, messages, question_text
from headlab.cot.sandbox import SandboxLimits, SandboxResult, isolation_problem, solve


@dataclass
class CotConfig:
    data: list[str]
    model: str | None = None            # local folder / hub id (HF backend), or the model name at the endpoint
    endpoint: str | None = None         # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    modes: list[str] = field(default_factory=lambda: ["direct", "cot"])
    limit: int | None = None            # items per dataset: a seeded random subset
    shots: int = 0                      # few-shot demonstrations per dataset (held out of the evaluation)
    seed: int = 0
    direct_max_new_tokens: int = 32
    cot_max_new_tokens: int = 256       # the cap on a chain of thought
    plan_max_new_tokens: int = 256
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    categories: dict[str, str] = field(default_factory=dict)  # dataset -> category override
    cache: str | None = None            # reply cache folder (default: <out>/cache)
    sandbox_cpu_seconds: int = 5
    sandbox_memory_mb: int = 1024
    unsafe_exec: bool = False           # plan mode without OS isolation (where the machine has none): the guard only
    threads: int = 0                    # torch CPU threads (0: torch's default); 1 on a shared machine

    def check(self) -> None:
        if not self.data:
            raise HeadlabError("cot: give at least one --data file")
        if not self.model:
            raise HeadlabError("cot: --model is required (a model folder, or the model name at --endpoint)")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise HeadlabError(f"cot: field 'modes' must be some of {', '.join(MODES)}, got {self.modes}")
        for name in ("direct_max_new_tokens", "cot_max_new_tokens", "plan_max_new_tokens", "batch_size",
                     "sandbox_cpu_seconds", "sandbox_memory_mb"):
            if getattr(self, name) < 1:
                raise HeadlabError(f"cot: field '{name}' must be >= 1")
        if self.limit is not None and self.limit < 1 or self.shots < 0:
            raise HeadlabError("cot: field 'limit' must be >= 1 and 'shots' >= 0")

    def cap(self, mode: str) -> int:
        return getattr(self, f"{mode}_max_new_tokens")


def load_items(config: CotConfig) -> tuple[list[Item], dict[str, list[Item]]]:
    """(items to evaluate, few-shot demonstrations per dataset), every file checked before any model loads."""
    by_name: dict[str, list[Item]] = {}
    for path in config.data:
        items = load_dataset(path)
        name = items[0].dataset
        if name in by_name:
            raise HeadlabError(f"{path}: dataset name '{name}' is already taken by another --data file")
        by_name[name] = items
    unknown = sorted(set(config.categories) - set(by_name))
    if unknown:
        raise HeadlabError(f"--category {unknown[0]}=...: no dataset of that name (datasets: "
                           f"{', '.join(sorted(by_name))})")
    evaluate, demos = [], {}
    for name, items in by_name.items():
        for item in items:
            item.category = config.categories.get(name, item.category)
        order = list(range(len(items)))
        random.Random(f"{config.seed}:{name}").shuffle(order)  # BIG-bench files are often sorted by difficulty
        if config.shots >= len(items):
            raise HeadlabError(f"{name}: {config.shots} shots leave no item to evaluate ({len(items)} items)")
        demos[name] = [items[i] for i in order[:config.shots]]
        rest = order[config.shots:]
        evaluate.extend(items[i] for i in sorted(rest[:config.limit] if config.limit else rest))
    return evaluate, demos


def make_backend(config: CotConfig) -> Backend:
    import os

    from headlab.cot.backends import EndpointBackend, HFBackend

    if config.endpoint:
        return EndpointBackend(config.endpoint, config.model, api_key=os.environ.get("OPENAI_API_KEY"))
    from headlab.model.loading import model_or_default

    if config.threads:
        import torch

        torch.set_num_threads(config.threads)  # spinning thread pools on a busy machine cost more than they give
    return HFBackend(model_or_default(config.model), device=config.device, dtype=config.dtype,
                     batch_size=config.batch_size)


def _progress(done: int, total: int) -> None:
    print(f"cot: {done}/{total} new replies", file=sys.stderr, flush=True)


def run_cot(config: CotConfig, out: str | Path, backend: Backend | None = None) -> Path:
    """Evaluate every item in every mode; returns the path of examples.jsonl."""
    from headlab.core.inputs import check_out

    config.check()
    isolation = plan_isolation(config)
    out = Path(out)
    if config.cache:  # a cache path that cannot be a folder is refused before config.json is written
        check_out(config.cache, "folder", "--cache")
    items, demos = load_items(config)
    backend = backend or make_backend(config)
    atomic_write_json(out / "config.json", {**asdict(config), "backend": backend.identity(), "items": len(items),
                                            "plan_isolation": isolation})
    cache = ResponseCache(config.cache or out / "cache")
    pairs = [(item, mode) for item in items for mode in config.modes]
    requests = [Request(messages(mode, item, demos[item.dataset]), config.cap(mode)) for item, mode in pairs]
    replies = answer_all(backend, cache, requests, chunk=4 * config.batch_size, progress=_progress)
    limits = SandboxLimits(cpu_seconds=config.sandbox_cpu_seconds, wall_seconds=2.0 * config.sandbox_cpu_seconds + 5,
                           memory_bytes=config.sandbox_memory_mb << 20, isolation=isolation or "os")
    records: dict[str, dict] = {}
    for (item, mode), reply in zip(pairs, replies, strict=True):
        key = f"{item.dataset}\t{item.id}"  # ids come from the files: unique within a dataset only
        rec = records.setdefault(key, {**item.to_dict(), "eq_question": "=" in question_text(item)})
        rec[mode] = score_reply(mode, item, reply.text, reply.tokens, cache, limits, config.cap(mode))
    path = out / "examples.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()))
    return path


def plan_isolation(config: CotConfig) -> str | None:
    """How plan mode's programs will run: "os" (the operating system's isolation), "guard" (--unsafe-exec on a
    machine without it), None without plan mode. Refused in one line, before any model loads, where the machine
    offers no isolation and the user did not ask for the unsafe way."""
    if "plan" not in config.modes:
        return None
    problem = isolation_problem()
    if problem is None:
        return "os"
    if not config.unsafe_exec:
        raise HeadlabError(f"cot: --modes plan runs the model's programs, and this machine cannot isolate them "
                           f"({problem}); pass --unsafe-exec to run them under an in-process guard that a program "
                           f"written to escape can switch off")
    return "guard"


def score_reply(mode: str, item: Item, text: str, tokens: int | None, cache: ResponseCache,
                limits: SandboxLimits, cap: int | None = None) -> dict:
    """One mode's outcome for one item. A plan's program runs in the sandbox; its stdout is read as a direct answer.

    A chain of thought cut off by the length cap before any answer statement has no answer (status
    `truncated`): the last number of an unfinished derivation is not the model's answer."""
    result: dict = {"response": text, "tokens": tokens}
    if mode == "plan":
        run = cached_solve(text, cache, limits)
        result.update(program_status=run.status, stdout=run.stdout, program_error=run.error)
        text = run.stdout
    got = extract(text, item, "direct" if mode == "plan" else mode)
    if mode == "cot" and got.status in ("fallback", "none") and cap and tokens is not None and tokens >= cap:
        got = Extraction(None, "truncated")
    result.update(answer=got.answer, status=got.status, correct=is_correct(got.answer, item))
    return result


def cached_solve(response: str, cache: ResponseCache, limits: SandboxLimits) -> SandboxResult:
    """Sandbox outcomes are cached like replies: a re-run starts no subprocess."""
    key = hashlib.sha256(json.dumps({"sandbox": response, "limits": asdict(limits)}).encode()).hexdigest()
    path = cache.folder / "sandbox" / f"{key}.json"
    if path.is_file():
        try:
            return SandboxResult(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            pass
    result = solve(response, limits)
    if result.status != "timeout":  # a timeout may be the machine's load, not the program: try it again next time
        atomic_write_json(path, result.to_dict())
    return result
