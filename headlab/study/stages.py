"""The paper's pipeline as stages over a run folder (see pipeline.py for resumption).

The folders are named in layout.py.

Heads, knockout, patching and the sweeps use each variant's first seed (its "primary" model); every
fine-tune seed is evaluated. Detection ranks heads on a probe set of its own, so the examples knockout and
patching score were not used to choose the heads they remove.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json, read_json
from headlab.data.example import load_examples, save_examples
from headlab.study.config import REAL, StudyConfig, finetune_mapping
from headlab.study.layout import BASE, EVAL, PROBE, eval_ref, model_ref, seed_name
from headlab.study.pipeline import Pipeline, Stage, StageContext


def curve_ks(k: int) -> list[int]:
    """1, 2, 4, 8, ... below k, then k: the K values of knockout and patching curves."""
    ks, x = [], 1
    while x < k:
        ks.append(x)
        x *= 2
    return [*ks, k] if k > 0 else []


def base_model_path(config: StudyConfig) -> str:
    from headlab.model.loading import model_or_default

    return model_or_default(config.base_model)

def _load(ctx: StageContext, ref: str | None, config: StudyConfig):
    from headlab.model.loading import load_model

    path = base_model_path(config) if ref is None else str(ctx.deps[ref] / "model")
    return load_model(path, device=config.device, dtype=config.dtype)


# ---- stage bodies ----------------------------------------------------------------------------------------

def make_data(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.data.tasks import GenConfig, generate_examples
    from headlab.model.loading import load_tokenizer

    i = ctx.inputs
    if i.get("file"):
        every = load_examples(i["file"])
        skip = i.get("skip", 0)
        examples = every[skip: skip + i["n"]]
        if not examples:  # a file too short for a set of its own: reuse its start, and say so
            examples = every[: i["n"]]
            atomic_write_json(ctx.out / "note.json", {"overlaps": f"the first {len(examples)} examples of "
                                                                  f"{i['file']} (nothing after {skip})"})
    else:
        tokenizer = load_tokenizer(base_model_path(config))
        examples = generate_examples(GenConfig(i["task"], i["needle"], i["haystack"], n=i["n"], length=i["length"],
                                               seed=i["seed"]), tokenizer)
    save_examples(examples, ctx.out / "examples.jsonl")


def run_finetune(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.experiments.finetune import FinetuneConfig, _check_run_folder, finetune

    i = ctx.inputs
    run = ctx.work / "run"
    cfg = FinetuneConfig(model=base_model_path(config), data=str(ctx.deps[i["data"]] / "examples.jsonl"), out=str(run),
                         context_length=i["context_length"], seed=i["seed"], merge=True, **i["finetune"])
    # After a kill: resume from the last complete checkpoint if one was written, reuse a finished model, or
    # else start over (a run killed before its first checkpoint has nothing worth keeping).
    if not ((run / "summary.json").is_file() and (run / "model").is_dir()):  # summary is written last
        resume = any((run / "checkpoints").glob("checkpoint-*")) and not (run / "model").exists()
        if resume:
            try:
                _check_run_folder(cfg, resume=True)
            except HeadlabError as e:  # e.g. a base model moved since: its checkpoints are not this run's
                print(f"[study] {ctx.out.name}: not resuming ({e}); training from step 0")
                resume = False
        if not resume:
            shutil.rmtree(run, ignore_errors=True)
        finetune(cfg, resume=resume)
    summary = read_json(run / "summary.json")
    # Hard links, not a move: until this stage is in place the work folder still holds the whole model, so
    # a kill at any moment leaves a copy the next run reuses. The work folder goes once the stage is in.
    shutil.copytree(run / "model", ctx.out / "model", copy_function=_link_or_copy)
    atomic_write_json(ctx.out / "finetune_summary.json", {k: v for k, v in summary.items() if k != "log_history"})


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported
        shutil.copy2(src, dst)


def _eval_items(ctx: StageContext, data_stage: str, tokenizer, n: int = 0):
    """The first n examples of a data stage as scoring items (n = 0: all)."""
    from headlab.experiments.evaluate import items_from_examples

    examples = load_examples(ctx.deps[data_stage] / "examples.jsonl")
    return items_from_examples(examples[:n] if n else examples, tokenizer)


def run_eval(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.experiments.evaluate import EvalConfig, evaluate_examples, write_evaluation

    i = ctx.inputs
    model, tokenizer = _load(ctx, i["model"], config)
    examples = load_examples(ctx.deps[i["data"]] / "examples.jsonl")
    eval_config = EvalConfig(max_new_tokens=i["max_new_tokens"], batch_size=config.batch_size,
                             allow_long_context=True)  # the base model is scored past its context on purpose
    records, summary = evaluate_examples(model, tokenizer, examples, eval_config)
    write_evaluation(records, summary, ctx.out, i)


def run_heads(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.data.task_prompts import task_probes
    from headlab.data.task_registry import task_score
    from headlab.experiments.detect import DetectConfig, DetectionResult, detect_retrieval_heads, write_detection

    i = ctx.inputs
    model, tokenizer = _load(ctx, i["model"], config)
    examples = load_examples(ctx.deps[i["data"]] / "examples.jsonl")[: i["n"]]
    by_id = {ex.id: ex for ex in examples}
    probes = task_probes(examples, tokenizer, which="answer")
    for p in probes:
        p.newline_stop = True  # task answers end at a newline, like text probes

    def success(probe, text, _ids) -> float:
        ex = by_id[probe.id]
        return task_score(ex.task, text.strip(), ex.answers, ex.gold_doc_ids)

    detect_config = DetectConfig(max_new_tokens=i["max_new_tokens"], batch_size=config.batch_size,
                                 top_k=i["top_k"], allow_long_context=True, progress=False)
    # Detect chunk by chunk and stop once enough probes were answered right: counted probes are what the
    # ranking averages over, and a model that answers most probes needs far fewer of them.
    outcomes, result = [], None
    chunk = max(config.batch_size, 8)
    for lo in range(0, len(probes), chunk):
        result = detect_retrieval_heads(model, tokenizer, probes[lo:lo + chunk], detect_config, success=success)
        outcomes.extend(result.outcomes)
        if sum(o.counted for o in outcomes) >= i["counted"]:
            break
    result = DetectionResult(result.geometry, outcomes, detect_config)
    fallback = not any(o.counted for o in result.outcomes)
    if fallback:
        # A model that answers nothing right still attends somewhere; rank its heads over every probe
        # (keep_failed) rather than not at all, and say so in the summary.
        result = result.recounted(replace(detect_config, keep_failed=True))
    write_detection(result, ctx.out, {"no_probe_succeeded": fallback, "counted_wanted": i["counted"],
                                      "probes_available": len(probes)})


def run_compare(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.experiments.compare import CompareConfig, compare_head_files, write_compare

    i = ctx.inputs
    paths = [ctx.deps[f"heads/{i['task']}/{v}"] for v in i["variants"]]
    # A variant's score: the mean over its fine-tune seeds.
    scores = [sum(read_json(ctx.deps[eval_ref(i["task"], v, s)] / "summary.json")["score"] for s in range(i["seeds"]))
              / i["seeds"] for v in i["variants"]]
    downstream = scores if len(paths) >= 3 else None
    result = compare_head_files(paths, reference=ctx.deps[f"heads/{i['task']}/{REAL}"], downstream=downstream,
                                config=CompareConfig(threshold=None, top_k=i["top_k"]))
    write_compare(result, ctx.out)


NO_SCORED_HEADS = "no head has a non-zero retrieval score on this task's probes"


def _ranking(heads_folder: Path) -> list[str]:
    """The heads that scored, best first; empty when none did. Heads with a zero score tie, and their order
    is only their index: knocking out or patching "the top" of them would test layer 0, not retrieval."""
    from headlab.mech.heads import scored_ranking

    return scored_ranking(read_json(heads_folder / "summary.json")["mean_scores"])


def run_knockout_stage(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.experiments.knockout import KnockoutConfig, run_knockout, write_knockout

    i = ctx.inputs
    model, tokenizer = _load(ctx, i["model"], config)
    items = _eval_items(ctx, i["data"], tokenizer, i["examples"])
    ranking = _ranking(ctx.deps[i["heads"]])
    if not ranking:
        atomic_write_json(ctx.out / "knockout.json", {"k": 0, "skipped": NO_SCORED_HEADS})
        return
    k = min(i["top_k"], len(ranking))
    ko = KnockoutConfig(k=k, seeds=i["seeds"], seed=i["seed"], curve=curve_ks(k) if i["curve"] else [],
                        max_new_tokens=i["max_new_tokens"], batch_size=config.batch_size, progress=False)
    write_knockout(run_knockout(model, tokenizer, items, ranking, ko), ctx.out, ko)


def run_patch_stage(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.experiments.patching import PatchConfig, run_patching, write_patching

    i = ctx.inputs
    source, tokenizer = _load(ctx, i["source"], config)
    target, _ = _load(ctx, i["target"], config)
    items = _eval_items(ctx, i["data"], tokenizer, i["examples"])
    source_ranking, target_ranking = _ranking(ctx.deps[i["source_heads"]]), _ranking(ctx.deps[i["target_heads"]])
    if not source_ranking or not target_ranking:
        which = "source (real-data model)" if not source_ranking else "target"
        atomic_write_json(ctx.out / "patching.json", {"k": 0, "sets": {}, "skipped": f"{which}: {NO_SCORED_HEADS}"})
        return
    k = min(i["top_k"], len(source_ranking), len(target_ranking))
    pc = PatchConfig(k=k, seeds=i["seeds"], seed=i["seed"], max_new_tokens=i["max_new_tokens"],
                     batch_size=config.batch_size, progress=False, sets=i["sets"],
                     curve=curve_ks(min(i["top_k"], len(source_ranking))) if i["curve"] else None)
    result = run_patching(source, target, tokenizer, items, source_ranking, target_ranking, pc)
    write_patching(result, ctx.out, pc)


def run_niah(ctx: StageContext, config: StudyConfig) -> None:
    from headlab.experiments.niah_sweep import NiahSweepConfig, niah_sweep, write_niah

    i = ctx.inputs
    model, tokenizer = _load(ctx, i["model"], config)
    sweep = NiahSweepConfig(lengths=i["lengths"], depths=i["depths"], needles=i["per_cell"], seed=i["seed"],
                            max_new_tokens=i["max_new_tokens"], batch_size=config.batch_size)
    grid, records = niah_sweep(model, tokenizer, sweep)
    write_niah(grid, records, ctx.out, i, f"Needle in a haystack: {i['label']}")


# ---- the graph -------------------------------------------------------------------------------------------

def build_study(config: StudyConfig, root: str | Path) -> Pipeline:
    """Every stage of the study, in dependency order."""
    from headlab.study.report import write_report

    root = Path(root)
    p = Pipeline(root)
    # The shipped model is named, not located, so moving the installation does not invalidate finished stages.
    base = config.base_model or "shipped tiny model"
    # Model settings that change results; device and batch size do not, so they stay out of fingerprints.
    shared = {"max_new_tokens": config.max_new_tokens, "dtype": config.dtype, "base_model": base}

    def add(name: str, inputs: dict, run, deps: list[str]) -> None:
        p.add(Stage(name, inputs, lambda ctx: run(ctx, config), deps))

    seeds = range(config.finetune_seeds)
    finetune = finetune_mapping(config.finetune)  # a fine-tune stage's settings, as the report's config shows them
    for task in config.tasks:
        for variant in config.models:
            needle, haystack = ("real", "diverse") if variant == REAL else variant.split("-")
            for s in seeds:  # each seed draws its own training set (a file of real data: the same one)
                add(f"data/{task}/{variant}/{seed_name(s)}", {
                    "task": task, "needle": needle, "haystack": haystack, "n": config.train_examples,
                    "length": config.length, "seed": config.seed + s, "tokenizer": base,
                    "file": config.real_data.get(task) if variant == REAL else None}, make_data, [])
        add(f"data/{task}/{EVAL}", {"task": task, "needle": "real", "haystack": "diverse", "n": config.eval_examples,
                                    "length": config.length, "seed": config.seed + 1000, "tokenizer": base,
                                    "file": config.real_eval.get(task)}, make_data, [])
        # Probes for detection: held-out real data too, drawn apart from the evaluation set. From a file, the
        # examples after the evaluation set's.
        add(f"data/{task}/{PROBE}", {"task": task, "needle": "real", "haystack": "diverse",
                                     "n": config.detect_examples, "length": config.length,
                                     "seed": config.seed + 2000, "tokenizer": base, "file": config.real_eval.get(task),
                                     "skip": config.eval_examples if config.real_eval.get(task) else 0},
            make_data, [])
        for variant in config.models:
            for s in seeds:
                data = f"data/{task}/{variant}/{seed_name(s)}"
                add(model_ref(task, variant, s), {"base_model": base, "data": data,
                                                  "context_length": config.context_length, "seed": config.seed + s,
                                                  "finetune": finetune}, run_finetune, [data])
        for model in [BASE, *config.models]:
            for s in ([0] if model == BASE else seeds):
                ref = model_ref(task, model, s)
                add(eval_ref(task, model, s), {**shared, "model": ref, "data": f"data/{task}/{EVAL}"}, run_eval,
                    [f"data/{task}/{EVAL}"] + ([] if ref is None else [ref]))
            ref = model_ref(task, model)
            add(f"heads/{task}/{model}", {**shared, "model": ref, "data": f"data/{task}/{PROBE}",
                                          "n": config.detect_examples, "counted": config.detect_counted,
                                          "top_k": config.top_k},
                run_heads, [f"data/{task}/{PROBE}"] + ([] if ref is None else [ref]))
        add(f"compare/{task}", {"task": task, "variants": config.variants, "top_k": config.top_k,
                                "seeds": config.finetune_seeds}, run_compare,
            [f"heads/{task}/{m}" for m in config.models]
            + [eval_ref(task, m, s) for m in config.models for s in seeds])
        for model in [BASE, *config.models]:
            deps = [f"data/{task}/{EVAL}", f"heads/{task}/{model}"] + (
                [] if model == BASE else [model_ref(task, model)])
            add(f"knockout/{task}/{model}", {**shared, "model": model_ref(task, model),
                                             "data": f"data/{task}/{EVAL}", "heads": f"heads/{task}/{model}",
                                             "top_k": config.top_k, "seeds": config.knockout_seeds,
                                             "seed": config.seed, "curve": model in config.curve_models,
                                             "examples": config.intervention_examples}, run_knockout_stage, deps)
        for variant in config.variants:
            add(f"patch/{task}/{variant}", {
                **shared, "source": model_ref(task, REAL), "target": model_ref(task, variant),
                "data": f"data/{task}/{EVAL}",
                "source_heads": f"heads/{task}/{REAL}", "target_heads": f"heads/{task}/{variant}",
                "top_k": config.top_k, "seeds": config.patch_seeds, "seed": config.seed,
                "curve": variant in config.curve_models, "examples": config.intervention_examples,
                "sets": config.patch_sets},
                run_patch_stage, [f"data/{task}/{EVAL}", model_ref(task, REAL), model_ref(task, variant),
                                  f"heads/{task}/{REAL}", f"heads/{task}/{variant}"])
    niah_models = [(BASE, None)] + [(f"{task}-{REAL}", task) for task in config.tasks]
    for label, task in niah_models:
        ref = None if task is None else model_ref(task, REAL)
        add(f"niah/{label}", {**shared, "model": ref, "label": label, "lengths": config.niah_lengths,
                              "depths": config.niah_depths, "per_cell": config.niah_per_cell, "seed": config.seed},
            run_niah, [] if ref is None else [ref])
    add("report", {"study": config.to_dict()}, write_report, list(p.stages))
    return p
