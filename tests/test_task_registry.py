"""The task registry is the one place a task's behaviour lives: generation, prompts and scoring read it."""

import random
from pathlib import Path

import pytest

from headlab.core.errors import HeadlabError
from headlab.data import task_registry
from headlab.data.example import TASKS, TaskExample
from headlab.data.needles import world_for
from headlab.data.task_prompts import render_task_prompt, task_question
from headlab.data.task_registry import REGISTRY, TaskSpec, task_spec
from headlab.data.tasks import GenConfig, generate_examples
from headlab.experiments.evaluate import score_prediction

SHIPPED = Path(__file__).resolve().parents[1] / "headlab" / "assets" / "tiny-llama" / "tokenizer.json"


def test_tasks_are_the_registry_in_order():
    assert TASKS == ("mdqa", "multihop", "citation")
    assert tuple(REGISTRY) == TASKS


def test_unknown_task_is_one_line_naming_it_and_the_known_ones():
    with pytest.raises(HeadlabError) as e:
        task_spec("summary")
    assert str(e.value) == "unknown task 'summary' (known tasks: mdqa, multihop, citation)"


@pytest.mark.parametrize("task", TASKS)
def test_prompt_carries_the_registry_instruction(task):
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(SHIPPED))
    (ex,) = generate_examples(GenConfig(task, "templated", "diverse", n=1, length=400), tokenizer)
    assert task_question(ex) == f"{ex.question}\n{task_spec(task).instruction}"
    assert task_spec(task).instruction in render_task_prompt(ex, tokenizer)
    # A citing task's answer is its gold ids in context order; the others answer with a phrase.
    if task_spec(task).cites:
        assert ex.answers == ["".join(f"[{g}]" for g in sorted(ex.gold_doc_ids))]
    else:
        assert ex.answers and all(a and not a.startswith("[") for a in ex.answers)


def _example(task: str) -> TaskExample:
    return TaskExample("x", task, "templated", "diverse", "ctx", "Q?", ["Tovesk"], [], [2], [(0, 3)], {})


def test_scores_come_from_the_record(monkeypatch):
    # A new task is one record: evaluation and the prompt pick it up with no other edit.
    def plan(world, realism, rng, max_support):
        return REGISTRY["mdqa"].plan(world, realism, rng, max_support)

    record = TaskSpec("echo", plan, "Repeat the word.",
                      score=lambda p, answers, ids: float(p == answers[0]),
                      details=lambda p, answers, ids: {"length": float(len(p))})
    monkeypatch.setitem(task_registry.REGISTRY, "echo", record)
    ex = _example("echo")
    assert score_prediction(ex, "Tovesk") == {"score": 1.0, "length": 6.0}
    assert score_prediction(ex, "tovesk") == {"score": 0.0, "length": 6.0}
    assert task_question(ex) == "Q?\nRepeat the word."
    assert record.plan(world_for(0, "templated"), "templated", random.Random(0), 1).answers


def test_detail_metrics_per_task():
    assert set(score_prediction(_example("mdqa"), "Tovesk")) == {"score", "exact_match", "f1"}
    cit = score_prediction(_example("citation"), "[2][3]")
    assert set(cit) == {"score", "citation_precision", "citation_recall", "citation_f1"}
    assert cit["score"] == cit["citation_f1"] == pytest.approx(2 / 3)
