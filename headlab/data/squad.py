"""SQuAD v1.1 -> the paper's multi-document QA and citation examples (lost-in-the-middle style).

    examples, report = convert_squad("dev-v1.1.json", SquadConfig(task="mdqa", n_docs=10, gold_position="middle"))

Each answerable question becomes one example: its own paragraph (the gold document) among paragraphs drawn from
other articles, one article per document, so no distractor can answer the question by accident. The gold
position is controllable (first, middle, last, a 0-based index, or random), as in "Lost in the Middle".
Articles can be split into train / held-out sets by a stable hash of their title, so a held-out file shares no
article (gold or distractor) with a training file whatever the seeds. With a tokenizer and `max_tokens`,
distractors are dropped from the end of the draw until the rendered prompt fits. Example `qid` depends only
on (config, qid, file, tokenizer), so limits and file order do not change it. Format: docs/data.md.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError, check_fields, where
from headlab.core.io import read_json, require
from headlab.data.example import DATASET, Document, TaskExample, document_header, render_context
from headlab.data.loaders import _sub
from headlab.data.needles import citation_question
from headlab.data.spans import sentence_spans
from headlab.data.task_prompts import encode_prompt, render_task_prompt
from headlab.data.task_registry import task_spec

SQUAD_TASKS = ("mdqa", "citation")
POSITIONS = ("first", "middle", "last", "random")
SPLITS = ("all", "train", "heldout")


@dataclass
class SquadConfig:
    task: str = "mdqa"               # mdqa (answer the question) or citation (which document supports it)
    n_docs: int = 10                 # documents per example, gold included (K); fewer only to fit max_tokens
    gold_position: str = "random"    # first, middle, last, random, or a 0-based index as a string ("4")
    seed: int = 0
    limit: int | None = None         # at most this many examples (questions taken in a seeded order)
    max_tokens: int | None = None    # prompt tokens (template and instruction included); needs a tokenizer
    split: str = "all"               # all articles, or the train / held-out part of them
    heldout_fraction: float = 0.25   # share of articles held out (by a stable hash of the title)
    exact_docs: bool = False         # with max_tokens: skip a question rather than give it fewer documents

    def check(self) -> None:
        """Raise a HeadlabError naming the first invalid field."""
        index_ok = self.gold_position.isdigit() and int(self.gold_position) < self.n_docs
        checks = [
            ("task", self.task in SQUAD_TASKS, f"one of {', '.join(SQUAD_TASKS)}"),
            ("n_docs", self.n_docs >= 2, ">= 2 (the gold paragraph and at least one distractor)"),
            ("gold_position", self.gold_position in POSITIONS or index_ok,
             f"one of {', '.join(POSITIONS)} or a 0-based index below n_docs ({self.n_docs})"),
            ("limit", self.limit is None or self.limit >= 0, "a count >= 0"),
            ("max_tokens", self.max_tokens is None or self.max_tokens > 0, "a positive number of tokens"),
            ("split", self.split in SPLITS, f"one of {', '.join(SPLITS)}"),
            ("heldout_fraction", 0.0 < self.heldout_fraction < 1.0, "a fraction strictly between 0 and 1"),
        ]
        check_fields("squad conversion", self, checks)


@dataclass
class SquadQuestion:
    qid: str
    question: str
    answers: list[str]              # distinct answer texts, in file order
    answer_spans: list[tuple[int, int]]  # where each listed answer sits in the paragraph


@dataclass
class SquadArticle:
    index: int
    title: str
    paragraphs: list[str]
    questions: list[tuple[int, SquadQuestion]]  # (paragraph index, question)


# ---- reading ----------------------------------------------------------------------------------------------

def _locate(context: str, text: str, start: int) -> int:
    """Offset of `text` in `context` nearest `start`, or -1. A few SQuAD v1.1 dev answers are off by one
    character (their text begins with a space), so the stated offset is a hint, not the truth."""
    best, pos = -1, context.find(text)
    while pos >= 0:
        if best < 0 or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def _read_question(qa: Any, context: str, path: Path, parent: str) -> SquadQuestion | None:
    qid = _sub(qa, "id", str, path, None, parent)
    question = _sub(qa, "question", str, path, None, parent)
    raw = _sub(qa, "answers", list, path, None, parent)
    if qa.get("is_impossible") is True or not raw:
        return None  # SQuAD 2.0's unanswerable questions have nothing to retrieve
    answers: list[str] = []
    spans: list[tuple[int, int]] = []
    for m, ans in enumerate(raw):
        apath = f"{parent}.answers[{m}]"
        text = _sub(ans, "text", str, path, None, apath).strip()
        start = _sub(ans, "answer_start", int, path, None, apath)
        pos = _locate(context, text, start) if text else -1
        if pos < 0:
            raise HeadlabError(f"{where(path, None, apath + '.text')} does not occur in the paragraph's context")
        if text not in answers:
            answers.append(text)
            spans.append((pos, pos + len(text)))
    return SquadQuestion(qid, question.strip(), answers, spans)


def read_squad(path: str | Path) -> list[SquadArticle]:
    """Every article of a SQuAD-format file, validated; errors name the field, e.g. data[1].paragraphs[2].context."""
    path = Path(path)
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise HeadlabError(f"{path}: expected a JSON object with a 'data' list (SQuAD format)")
    articles = []
    for i, art in enumerate(require(obj, "data", list, path, None)):
        parent = f"data[{i}]"
        title = _sub(art, "title", str, path, None, parent)
        paragraphs, questions = [], []
        for j, par in enumerate(_sub(art, "paragraphs", list, path, None, parent)):
            ppath = f"{parent}.paragraphs[{j}]"
            context = _sub(par, "context", str, path, None, ppath)
            paragraphs.append(context)
            for k, qa in enumerate(_sub(par, "qas", list, path, None, ppath)):
                q = _read_question(qa, context, path, f"{ppath}.qas[{k}]")
                if q is not None:
                    questions.append((j, q))
        articles.append(SquadArticle(i, title, paragraphs, questions))
    return articles


def heldout_titles(articles: list[SquadArticle], fraction: float) -> set[str]:
    """The held-out articles: the first round(fraction * n) titles in order of their SHA-256.

    A hash of the title, not the seed or the file order, decides, so train and held-out files made with any
    seeds never share an article."""
    titles = sorted({a.title for a in articles}, key=lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest())
    n = min(max(1, round(fraction * len(titles))), len(titles) - 1) if len(titles) > 1 else 0
    return set(titles[:n])


# ---- building ---------------------------------------------------------------------------------------------

def _gold_index(position: str, n: int, u: float) -> int | None:
    """0-based gold position among n documents; None when a fixed index does not fit in n."""
    if position == "first":
        return 0
    if position == "last":
        return n - 1
    if position == "middle":
        return (n - 1) // 2
    if position == "random":
        return min(int(u * n), n - 1)
    index = int(position)
    return index if index < n else None


def _title(article: SquadArticle) -> str:
    return article.title.replace("_", " ")


def _gold_span(paragraph: str, answer: tuple[int, int]) -> tuple[int, int]:
    """The sentences of the paragraph that cover the answer (several when the splitter cuts inside it,
    e.g. at "3.2 billion"); the answer itself when no sentence does."""
    spans = [s for s in sentence_spans(paragraph) if s[1] > answer[0] and s[0] < answer[1]]
    if not spans:
        return answer
    return min(answer[0], spans[0][0]), max(answer[1], spans[-1][1])


def citation_statement(question: str, answer: str) -> str:
    """A checkable statement from a question and its answer (SQuAD states each fact in one paragraph only,
    so citation examples have one supporting document; the question form keeps it from being a string match
    with the gold sentence)."""
    return f"The answer to '{question}' is {answer}."


def _example(config: SquadConfig, article: SquadArticle, par: int, q: SquadQuestion,
             distractors: list[tuple[SquadArticle, int]], pos: int) -> TaskExample:
    picked = [(a, p) for a, p in distractors]
    picked.insert(pos, (article, par))
    docs = [Document(i + 1, _title(a), a.paragraphs[p]) for i, (a, p) in enumerate(picked)]
    context, starts = render_context(docs)
    s, e = _gold_span(article.paragraphs[par], q.answer_spans[0])
    spans = [(starts[pos] + s, starts[pos] + e)]
    gold_ids = [pos + 1]
    answer_spans = [[starts[pos] + a, starts[pos] + b] for a, b in q.answer_spans]
    meta = {"source": "squad", "source_id": q.qid, "article": article.title, "split": config.split,
            "seed": config.seed, "gold_position": pos, "n_documents": len(docs),
            "source_titles": [a.title for a, _ in picked], "answer_spans": answer_spans}
    if task_spec(config.task).cites:
        question = citation_question(citation_statement(q.question, q.answers[0]))
        answers = ["".join(f"[{g}]" for g in gold_ids)]
    else:
        question, answers = q.question, list(q.answers)
    return TaskExample(f"squad-{config.task}-{q.qid}", config.task, DATASET, DATASET, context, question,
                       answers, docs, gold_ids, spans, meta)


class _Sizer:
    """Fits an example under max_tokens: estimates from per-paragraph token counts, then checks exactly."""

    def __init__(self, tokenizer: Any, max_tokens: int) -> None:
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self._cost: dict[tuple[int, int], int] = {}

    def cost(self, article: SquadArticle, par: int) -> int:
        key = (article.index, par)
        if key not in self._cost:
            # 99 stands for any id: ids are assigned after placement and cost about the same tokens.
            text = "\n\n" + document_header(Document(99, _title(article), "")) + article.paragraphs[par]
            self._cost[key] = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._cost[key]

    def tokens(self, example: TaskExample) -> int:
        return len(encode_prompt(self.tokenizer, render_task_prompt(example, self.tokenizer))["input_ids"])


def _fit(config: SquadConfig, sizer: _Sizer | None, article: SquadArticle, par: int, q: SquadQuestion,
         distractors: list[tuple[SquadArticle, int]], u: float) -> TaskExample | None:
    """The example with as many of `distractors` (in draw order) as fit; None if not even one does (or, with
    exact_docs, not all of them)."""
    n_dist = len(distractors)
    if sizer is not None:
        # Estimate from the bare prompt (gold only) plus each further paragraph's cost, then confirm.
        bare = _example(config, article, par, q, [], 0)
        used = sizer.tokens(bare)
        n_dist = 0
        for a, p in distractors:
            used += sizer.cost(a, p)
            if used > config.max_tokens:
                break
            n_dist += 1
    floor = len(distractors) if config.exact_docs else 1
    while n_dist >= floor:
        pos = _gold_index(config.gold_position, n_dist + 1, u)
        if pos is not None:
            ex = _example(config, article, par, q, distractors[:n_dist], pos)
            if sizer is None:
                return ex
            n_tokens = sizer.tokens(ex)
            if n_tokens <= config.max_tokens:
                ex.metadata.update(prompt_tokens=n_tokens, max_tokens=config.max_tokens)
                return ex
        n_dist -= 1  # estimates can be off by a token or two at joins; a fixed index may need more documents
    return None


def convert_squad(path: str | Path, config: SquadConfig,
                  tokenizer: Any | None = None) -> tuple[list[TaskExample], dict[str, Any]]:
    """Examples from a SQuAD-format file (see the module docstring) and a report of what was made.

    The report holds the config, the articles used, and how many questions were skipped because their
    prompt could not fit `max_tokens` with at least one distractor (all of them with exact_docs; enough of
    them to reach a fixed gold index)."""
    config.check()
    if config.max_tokens is not None and tokenizer is None:
        raise HeadlabError("squad conversion: field 'max_tokens' needs a tokenizer to count tokens")
    articles = read_squad(path)
    held = heldout_titles(articles, config.heldout_fraction)
    if config.split == "all":
        pool = articles
    else:
        pool = [a for a in articles if (a.title in held) == (config.split == "heldout")]
    pool = [a for a in pool if a.paragraphs]
    if len(pool) < config.n_docs:
        which = "" if config.split == "all" else f" in split '{config.split}'"
        raise HeadlabError(f"{where(path, None, 'data')} has {len(pool)} articles with paragraphs{which}, "
                           f"fewer than the {config.n_docs} documents per example (each from its own article)")
    items = [(a, par, q) for a in pool for par, q in a.questions]
    # A seeded order, so a --limit takes questions from across the file rather than its first articles.
    random.Random(f"squad-order-{config.seed}").shuffle(items)
    sizer = _Sizer(tokenizer, config.max_tokens) if config.max_tokens is not None else None
    examples, skipped = [], 0
    for article, par, q in items:
        if config.limit is not None and len(examples) >= config.limit:
            break
        # The same documents for mdqa and citation: the two tasks pair up question by question.
        rng = random.Random(f"squad-{config.seed}-{q.qid}")
        others = rng.sample([a for a in pool if a.index != article.index], config.n_docs - 1)
        distractors = [(a, rng.randrange(len(a.paragraphs))) for a in others]
        ex = _fit(config, sizer, article, par, q, distractors, rng.random())
        if ex is None:
            skipped += 1
        else:
            examples.append(ex)
    if items and not examples and skipped:
        raise HeadlabError(f"squad conversion: field 'max_tokens' ({config.max_tokens}) is too short for any "
                           "question's paragraph with one distractor under this tokenizer")
    report = {**asdict(config), "file": str(path), "examples": len(examples), "skipped_too_long": skipped,
              "articles": sorted(a.title for a in pool)}
    return examples, report
