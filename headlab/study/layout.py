"""The study's run folder: one stage per folder, named here so that the stages that write them and the
evidence that reads them agree.

    data/{task}/{variant}/seed{s}                training set per variant and fine-tune seed
    data/{task}/eval, data/{task}/probe          held-out real sets: evaluation; retrieval-head detection
    models/{task}/{variant}/seed{s}              context-extension fine-tune of the base model, one per seed
    eval/{task}/base, eval/{task}/{variant}/seed{s}   downstream score on the evaluation set (per example)
    heads/{task}/{model}                         task retrieval heads (docs/definitions.md#task-retrieval-score)
    compare/{task}                               recall against the real-data model; Spearman with score
    knockout/{task}/{model}                      top-K retrieval heads against random heads, curve over K
    patch/{task}/{variant}                       real-data model -> synthetic-data model, curve over K
    niah/{model}                                 needle-in-a-haystack sweep of base and real-data models
    report                                       figures, one HTML page, numbers with intervals, scores table
"""

from __future__ import annotations

BASE = "base"
EVAL = "eval"
PROBE = "probe"


def seed_name(s: int) -> str:
    return f"seed{s}"


def model_ref(task: str | None, model: str, seed: int = 0) -> str | None:
    """The stage that trained a model (its fine-tune seed index `seed`), or None for the base model."""
    return None if model == BASE else f"models/{task}/{model}/{seed_name(seed)}"


def eval_ref(task: str, model: str, seed: int = 0) -> str:
    return f"eval/{task}/{BASE}" if model == BASE else f"eval/{task}/{model}/{seed_name(seed)}"
