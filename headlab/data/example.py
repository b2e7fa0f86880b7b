"""The task example (one long-context input with gold answers and gold spans) and its JSONL format.

Documents are numbered from 1 in context order and rendered one per paragraph as
"Document [3] (Title: ...) text", so a citation "[3]" means the third document of the context.
`gold_spans` are [start, end) character offsets into `context`: the text a model has to read to answer.
The format is documented in docs/data.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError, where
from headlab.core.io import atomic_write_text, iter_jsonl, require
from headlab.data.task_registry import REGISTRY

TASKS = tuple(REGISTRY)  # the task names, in registry order: a task is one record in task_registry.py
NEEDLE_REALISMS = ("real", "templated", "symbolic")
HAYSTACK_DIVERSITIES = ("diverse", "repetitive", "symbolic")
# Examples read from real datasets (MDQA, MuSiQue, SummHay) carry this value on both axes.
DATASET = "dataset"
DOC_SEPARATOR = "\n\n"


@dataclass
class Document:
    id: int
    title: str
    text: str


@dataclass
class TaskExample:
    id: str
    task: str
    needle_realism: str
    haystack_diversity: str
    context: str
    question: str
    answers: list[str]
    documents: list[Document]
    gold_doc_ids: list[int]
    gold_spans: list[tuple[int, int]]
    metadata: dict[str, Any] = field(default_factory=dict)

    def span_texts(self) -> list[str]:
        """The text of each gold span, in order."""
        return [self.context[s:e] for s, e in self.gold_spans]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gold_spans"] = [list(s) for s in self.gold_spans]
        return d


def document_header(doc: Document) -> str:
    return f"Document [{doc.id}] (Title: {doc.title}) "


def render_context(documents: Sequence[Document]) -> tuple[str, list[int]]:
    """Join documents one per paragraph; return the context and the character offset of each document's text.

    The offsets let callers turn a span inside a document's text into a span of the context.
    """
    parts: list[str] = []
    starts: list[int] = []
    pos = 0
    for i, doc in enumerate(documents):
        if i:
            parts.append(DOC_SEPARATOR)
            pos += len(DOC_SEPARATOR)
        header = document_header(doc)
        parts.append(header + doc.text)
        starts.append(pos + len(header))
        pos += len(header) + len(doc.text)
    return "".join(parts), starts


def _is_span(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def example_from_dict(obj: dict, path: str | Path = "<example>", lineno: int | None = None) -> TaskExample:
    """Build and validate a TaskExample from a JSON object; errors name path, line and field."""
    def err(fld: str, msg: str) -> HeadlabError:
        return HeadlabError(f"{where(path, lineno, fld)} {msg}")

    ex_id = require(obj, "id", str, path, lineno)
    task = require(obj, "task", str, path, lineno)
    if task not in TASKS:
        raise err("task", f"must be one of {', '.join(TASKS)} (got {task!r})")
    realism = require(obj, "needle_realism", str, path, lineno)
    if realism not in (*NEEDLE_REALISMS, DATASET):
        allowed = ", ".join((*NEEDLE_REALISMS, DATASET))
        raise err("needle_realism", f"must be one of {allowed} (got {realism!r})")
    diversity = require(obj, "haystack_diversity", str, path, lineno)
    if diversity not in (*HAYSTACK_DIVERSITIES, DATASET):
        raise err("haystack_diversity",
                  f"must be one of {', '.join((*HAYSTACK_DIVERSITIES, DATASET))} (got {diversity!r})")
    context = require(obj, "context", str, path, lineno)
    question = require(obj, "question", str, path, lineno)
    answers = require(obj, "answers", list, path, lineno)
    if not answers or not all(isinstance(a, str) for a in answers):
        raise err("answers", "must be a non-empty list of strings")
    raw_docs = require(obj, "documents", list, path, lineno)
    documents = []
    for i, d in enumerate(raw_docs):
        fld = f"documents[{i}]"
        if not isinstance(d, dict):
            raise err(fld, "must be an object with id, title, text")
        doc_id = d.get("id")
        if not isinstance(doc_id, int) or isinstance(doc_id, bool):
            raise err(f"{fld}.id", "must be an integer")
        for key in ("title", "text"):
            if not isinstance(d.get(key), str):
                raise err(f"{fld}.{key}", "must be a string")
        documents.append(Document(doc_id, d["title"], d["text"]))
    doc_ids = [d.id for d in documents]
    if len(set(doc_ids)) != len(doc_ids):
        raise err("documents", "has duplicate ids")
    gold_doc_ids = require(obj, "gold_doc_ids", list, path, lineno)
    for g in gold_doc_ids:
        if not isinstance(g, int) or isinstance(g, bool) or g not in doc_ids:
            raise err("gold_doc_ids", f"names a document that does not exist ({g!r})")
    raw_spans = require(obj, "gold_spans", list, path, lineno)
    spans = []
    for i, s in enumerate(raw_spans):
        if not _is_span(s) or not 0 <= s[0] < s[1] <= len(context):
            raise err(f"gold_spans[{i}]",
                      f"must be [start, end] with 0 <= start < end <= {len(context)} (got {s!r})")
        spans.append((s[0], s[1]))
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise err("metadata", "must be an object")
    return TaskExample(ex_id, task, realism, diversity, context, question, list(answers), documents,
                       list(gold_doc_ids), spans, metadata)


def load_examples(path: str | Path) -> list[TaskExample]:
    """Read a task-example JSONL file, validating every line; a file with no example is an error, not []."""
    examples = [example_from_dict(obj, path, lineno) for lineno, obj in iter_jsonl(path)]
    if not examples:
        raise HeadlabError(f"{path}: no examples (the file is empty)")
    return examples


def save_examples(examples: Iterable[TaskExample], path: str | Path) -> None:
    """Write examples as JSONL atomically (the whole file or nothing), each checked by the loader first: a
    converter never writes a file that `load_examples` would reject."""
    lines = []
    examples = list(examples)
    if not examples:  # load_examples refuses an empty file, so none is written
        raise HeadlabError(f"no examples to write, so {path} was not written (is the input empty?)")
    for ex in examples:
        record = ex.to_dict()
        try:
            example_from_dict(record, f"example {ex.id}", None)
        except HeadlabError as e:
            raise HeadlabError(f"{e}; it would not load back, so {path} was not written") from None
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
