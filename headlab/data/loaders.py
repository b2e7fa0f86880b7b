"""Readers for the real long-context datasets, from files the user supplies (nothing is downloaded).

- MDQA: the lost-in-the-middle NQ files (JSONL, optionally .gz): question, answers, ctxs with `isgold`.
- MuSiQue: its JSONL (paragraphs with `is_supporting`, answer, answer_aliases, question_decomposition).
- SummHay: one topic JSON (subtopics with insights; documents with `insights_included`).

Every reader returns TaskExamples (see example.py) with needle_realism = haystack_diversity = "dataset"; the
formats and how gold spans are chosen are documented in docs/data.md.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError, where
from headlab.core.io import iter_jsonl, read_json, require
from headlab.data.example import DATASET, Document, TaskExample, render_context
from headlab.data.needles import citation_question
from headlab.data.spans import answer_sentence_span, best_overlap_sentence_span


def _str_list(obj: dict, fld: str, path: Path | str, lineno: int | None) -> list[str]:
    value = require(obj, fld, list, path, lineno)
    if not all(isinstance(v, str) for v in value):
        raise HeadlabError(f"{where(path, lineno, fld)} must be a list of strings")
    return value


def _sub(item: Any, fld: str, kind: type, path: Path | str, lineno: int | None, parent: str) -> Any:
    """A field of a nested object, with the error naming its full path (e.g. ctxs[3].title)."""
    if not isinstance(item, dict):
        raise HeadlabError(f"{where(path, lineno, parent)} must be an object")
    if fld not in item:
        raise HeadlabError(f"{where(path, lineno, f'{parent}.{fld}')} is missing")
    value = item[fld]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        loc = where(path, lineno, f"{parent}.{fld}")
        raise HeadlabError(f"{loc} has the wrong type ({type(value).__name__})")
    return value


def _build(ex_id: str, task: str, question: str, answers: list[str], docs: list[Document],
           gold_spans_in_docs: list[tuple[int, int, int]], metadata: dict) -> TaskExample:
    """Render the context and shift per-document spans (doc index, start, end) into context offsets."""
    context, starts = render_context(docs)
    spans = [(starts[i] + s, starts[i] + e) for i, s, e in gold_spans_in_docs]
    gold_ids = sorted({docs[i].id for i, _, _ in gold_spans_in_docs})
    return TaskExample(ex_id, task, DATASET, DATASET, context, question, answers, docs, gold_ids, spans,
                       metadata)


def _some(examples: list[TaskExample], path: str | Path, why: str) -> list[TaskExample]:
    """A converter's input that yields nothing is bad input, named here rather than as an empty output file."""
    if not examples:
        raise HeadlabError(f"{path}: {why}")
    return examples


def load_mdqa(path: str | Path, limit: int | None = None) -> list[TaskExample]:
    """Lost-in-the-middle MDQA: the gold span is the gold document's first sentence naming an answer."""
    out = []
    for lineno, obj in iter_jsonl(path):
        question = require(obj, "question", str, path, lineno)
        answers = _str_list(obj, "answers", path, lineno)
        if not answers:
            raise HeadlabError(f"{where(path, lineno, 'answers')} is empty")
        ctxs = require(obj, "ctxs", list, path, lineno)
        docs, spans = [], []
        for i, c in enumerate(ctxs):
            parent = f"ctxs[{i}]"
            title = _sub(c, "title", str, path, lineno, parent)
            text = _sub(c, "text", str, path, lineno, parent)
            docs.append(Document(i + 1, title, text))
            if c.get("isgold", False) is True:
                spans.append((i, *answer_sentence_span(text, answers)))
        if not spans:
            raise HeadlabError(f"{where(path, lineno, 'ctxs')} has no document with isgold true")
        meta = {"source": "mdqa", "source_line": lineno}
        out.append(_build(f"mdqa-{lineno}", "mdqa", question, answers, docs, spans, meta))
        if limit is not None and len(out) >= limit:
            break
    return _some(out, path, "no examples (the file is empty)")


def load_musique(path: str | Path, limit: int | None = None) -> list[TaskExample]:
    """MuSiQue multi-hop QA; unanswerable questions (answerable: false) are skipped.

    Gold spans: in each supporting paragraph, the sentence naming the answer of the hop it supports (from
    question_decomposition when present, else the final answer); the whole paragraph if none does.
    """
    out = []
    for lineno, obj in iter_jsonl(path):
        if obj.get("answerable", True) is False:
            continue
        ex_id = require(obj, "id", str, path, lineno)
        question = require(obj, "question", str, path, lineno)
        answer = require(obj, "answer", str, path, lineno)
        aliases = _str_list(obj, "answer_aliases", path, lineno) if "answer_aliases" in obj else []
        answers = [answer] + [a for a in aliases if a != answer]
        # Which hop answer each supporting paragraph should contain.
        hop_answers: dict[int, list[str]] = {}
        for j, step in enumerate(obj.get("question_decomposition") or []):
            idx = _sub(step, "paragraph_support_idx", int, path, lineno, f"question_decomposition[{j}]")
            hop = _sub(step, "answer", str, path, lineno, f"question_decomposition[{j}]")
            hop_answers.setdefault(idx, []).append(hop)
        paragraphs = require(obj, "paragraphs", list, path, lineno)
        docs, spans = [], []
        for i, p in enumerate(paragraphs):
            parent = f"paragraphs[{i}]"
            title = _sub(p, "title", str, path, lineno, parent)
            text = _sub(p, "paragraph_text", str, path, lineno, parent)
            supporting = _sub(p, "is_supporting", bool, path, lineno, parent)
            docs.append(Document(i + 1, title, text))
            if supporting:
                idx = p.get("idx", i)
                spans.append((i, *answer_sentence_span(text, hop_answers.get(idx, answers))))
        if not spans:
            loc = where(path, lineno, "paragraphs")
            raise HeadlabError(f"{loc} has no paragraph with is_supporting true")
        meta = {"source": "musique", "source_id": ex_id, "source_line": lineno}
        out.append(_build(f"musique-{ex_id}", "multihop", question, answers, docs, spans, meta))
        if limit is not None and len(out) >= limit:
            break
    return _some(out, path, "no answerable question (the file is empty, or every one is unanswerable)")


def load_summhay(path: str | Path, max_docs: int | None = 20, seed: int = 0,
                 limit: int | None = None) -> list[TaskExample]:
    """SummHay as citation: one example per insight, the answer being the documents that include it.

    A full haystack is ~100k tokens; `max_docs` keeps every gold document plus random distractors (seeded)
    up to that many, in original order (None keeps all). The gold span in each gold document is the
    sentence sharing the most words with the insight (SummHay paraphrases insights; no exact match exists).
    """
    topic = read_json(path)
    if not isinstance(topic, dict):
        raise HeadlabError(f"{path}: expected a JSON object (one SummHay topic)")
    subtopics = require(topic, "subtopics", list, path, None)
    raw_docs = require(topic, "documents", list, path, None)
    docs_all = []
    for i, d in enumerate(raw_docs):
        parent = f"documents[{i}]"
        text = _sub(d, "document_text", str, path, None, parent)
        included = _sub(d, "insights_included", list, path, None, parent)
        doc_id = str(d.get("document_id", i))
        title = d.get("title") if isinstance(d.get("title"), str) else doc_id
        docs_all.append((doc_id, title, text, {str(x) for x in included}))
    rng = random.Random(seed)
    out = []
    for s, sub in enumerate(subtopics):
        insights = _sub(sub, "insights", list, path, None, f"subtopics[{s}]")
        for k, ins in enumerate(insights):
            parent = f"subtopics[{s}].insights[{k}]"
            ins_id = str(_sub(ins, "insight_id", (str, int), path, None, parent))
            statement = _sub(ins, "insight", str, path, None, parent)
            gold = [i for i, (*_, inc) in enumerate(docs_all) if ins_id in inc]
            if not gold:
                continue  # an insight no document carries cannot be cited
            others = [i for i in range(len(docs_all)) if i not in set(gold)]
            n_extra = len(others) if max_docs is None else max(0, max_docs - len(gold))
            keep = sorted(gold + rng.sample(others, min(n_extra, len(others))))
            docs = [Document(j + 1, docs_all[i][1], docs_all[i][2]) for j, i in enumerate(keep)]
            spans = [(j, *best_overlap_sentence_span(docs_all[i][2], statement))
                     for j, i in enumerate(keep) if i in gold]
            meta = {"source": "summhay", "insight_id": ins_id,
                    "source_doc_ids": [docs_all[i][0] for i in keep]}
            question = citation_question(statement)
            ex = _build(f"summhay-{ins_id}", "citation", question, [""], docs, spans, meta)
            ex.answers = ["".join(f"[{g}]" for g in ex.gold_doc_ids)]
            out.append(ex)
            if limit is not None and len(out) >= limit:
                return out
    return _some(out, path, "no insight is included in any document")
