"""The task registry: one record per synthetic task, holding everything that differs between tasks.

    spec = task_spec("citation")
    spec.score("[2][5]", example.answers, example.gold_doc_ids)   # the headline score of one response

A record says how a task's examples are planned (needles.py), the instruction appended to its question, its
headline score and its detail metrics, and whether its answer is the gold documents' ids. The generator,
the prompt, evaluation, detection, fine-tuning and the study look a task up here by name; adding a task is
adding one record to `REGISTRY` (its name then joins `headlab.data.example.TASKS`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from headlab.core.errors import HeadlabError
from headlab.data.metrics import citation_prf, exact_match, parse_citations, substring_match, token_f1
from headlab.data.needles import Plan, citation_plan, mdqa_plan, multihop_plan
from headlab.data.world import World

# (world, needle realism, rng, max_support) -> the plan of one example; max_support bounds citation support.
PlanFn = Callable[[World, str, random.Random, int], Plan]
# (prediction, gold answers, gold document ids) -> a score, or named detail metrics in report order.
ScoreFn = Callable[[str, Sequence[str], Sequence[int]], float]
DetailFn = Callable[[str, Sequence[str], Sequence[int]], dict[str, float]]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    plan: PlanFn
    instruction: str     # appended to the question on its own line; short, the tiny model is tuned on it too
    score: ScoreFn       # the headline score: the success filter of the task retrieval score, the study's score
    details: DetailFn    # evaluation's per-record metrics beside "score"
    cites: bool = False  # the answer is the gold documents' ids ("[2][5]"), listed in context order


def _qa_score(prediction: str, answers: Sequence[str], gold_doc_ids: Sequence[int]) -> float:
    # Substring match, because chatty models answer "The answer is Paris."; the lost-in-the-middle metric.
    return substring_match(prediction, answers)


def _qa_details(prediction: str, answers: Sequence[str], gold_doc_ids: Sequence[int]) -> dict[str, float]:
    return {"exact_match": exact_match(prediction, answers), "f1": token_f1(prediction, answers)}


def _citation_score(prediction: str, answers: Sequence[str], gold_doc_ids: Sequence[int]) -> float:
    return citation_prf(parse_citations(prediction), gold_doc_ids)["f1"]


def _citation_details(prediction: str, answers: Sequence[str],
                      gold_doc_ids: Sequence[int]) -> dict[str, float]:
    prf = citation_prf(parse_citations(prediction), gold_doc_ids)
    return {f"citation_{k}": v for k, v in prf.items()}


_QA_INSTRUCTION = "Answer with a short phrase from the documents."

# In this order everywhere tasks are listed (TASKS, the full study preset, the toy model's quality table).
REGISTRY: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("mdqa", lambda world, realism, rng, max_support: mdqa_plan(world, realism, rng),
             _QA_INSTRUCTION, _qa_score, _qa_details),
    TaskSpec("multihop", lambda world, realism, rng, max_support: multihop_plan(world, realism, rng),
             _QA_INSTRUCTION, _qa_score, _qa_details),
    TaskSpec("citation", citation_plan, "Answer with the ids of the supporting documents, like [2][5].",
             _citation_score, _citation_details, cites=True),
)}


def task_spec(task: str) -> TaskSpec:
    """The record of `task`; a HeadlabError naming it and the known tasks when there is none."""
    spec = REGISTRY.get(task)
    if spec is None:
        raise HeadlabError(f"unknown task {task!r} (known tasks: {', '.join(REGISTRY)})")
    return spec


def task_score(task: str, prediction: str, answers: Sequence[str], gold_doc_ids: Sequence[int]) -> float:
    """The headline score of one response to `task`: substring match for QA tasks, citation F1 for citation."""
    return task_spec(task).score(prediction, answers, gold_doc_ids)
