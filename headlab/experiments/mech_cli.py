"""`headlab knockout`, `headlab patch`, `headlab compare` (and its alias `heads compare`): typed front-ends over
knockout.py, patching.py and compare.py. Every input is checked before weights load; errors are HeadlabError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headlab.core.cli_floor import Command, Flag, opt
from headlab.core.distributed import is_main
from headlab.core.errors import HeadlabError
from headlab.experiments.compare import CompareConfig
from headlab.experiments.knockout import KnockoutConfig
from headlab.experiments.patching import PatchConfig
from headlab.mech.interventions import MODES, WHERE
from headlab.model.options import ModelOptions, Selection


@dataclass(kw_only=True)
class RunData:
    """The items a knockout or patching run scores, and where it writes."""

    data: str | None = opt(None, help="task-example JSONL, probe JSONL or needle-in-a-haystack spec "
                                      "(default: toy needle-in-a-haystack probes)")
    limit: int | None = None  # use only the first N data items
    out: str | None = None  # output folder


@dataclass(kw_only=True)
class KnockoutData(RunData):
    out: str = "runs/knockout"  # output folder


@dataclass(kw_only=True)
class PatchData(RunData):
    out: str = "runs/patch"  # output folder


def _ranking(path: str, geometry) -> list[str]:
    from headlab.experiments.compare import scores_path
    from headlab.mech.heads import load_scores, mean_scores, scored_ranking

    return scored_ranking(mean_scores(load_scores(scores_path(path), geometry)))


def _items(run: RunData, seed: int, max_new_tokens: int, info):
    """The evaluation items, checked against the model `info` describes (no weights loaded)."""
    from headlab.experiments.evaluate import check_lengths, items_from_probes, load_eval_items

    tokenizer, positions = info.tokenizer, info.max_positions
    if run.data:
        items = load_eval_items(run.data, tokenizer, positions)
    else:
        from headlab.data.world_niah import default_probes

        items = items_from_probes(default_probes(tokenizer, seed))
    if run.limit is not None:
        items = items[:run.limit]
    check_lengths(items, positions, max_new_tokens)
    return items


@dataclass(kw_only=True)
class KnockoutHeads:
    heads: str = opt(help="Retrieval_Head-format scores (or a `headlab detect` folder)")


def _knockout(model: ModelOptions, heads: KnockoutHeads, config: KnockoutConfig, run: KnockoutData) -> None:
    """score with the top-K heads knocked out vs random K heads

    Task score with the top-K heads of a score file knocked out, against K random heads outside the top set
    over several seeds, and a curve over K. Writes knockout.json, config.json, knockout_curve.png."""
    from headlab.experiments.knockout import run_knockout, write_knockout
    from headlab.model.loading import inspect, load_weights

    model_path = model.path
    info = inspect(model_path, model.trust_remote_code)
    ranking = _ranking(heads.heads, info.geometry)
    items = _items(run, config.seed, config.max_new_tokens, info)
    config.check(info.geometry, len(ranking))
    loaded = load_weights(info, model.device, model.dtype, model.attn, **model.placement())
    result = run_knockout(loaded, info.tokenizer, items, ranking, config)
    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    write_knockout(result, run.out, config, {"model": model_path, "heads": heads.heads,
                                             "data": run.data or "toy-niah", "dtype": model.dtype})
    print(f"baseline {result['baseline']:.3f}  top-{config.k} knocked out {result['top']:.3f}  "
          f"random {config.k} {result['random_mean']:.3f} ± {result['random_std']:.3f} ({config.seeds} seeds)")
    print(f"wrote {Path(run.out) / 'knockout.json'}, config.json, knockout_curve.png")


@dataclass(kw_only=True)
class PatchModels:
    source: str = opt(help="source model folder or hub id")
    target: str = opt(help="target model folder or hub id (same architecture)")
    heads: tuple[str, str] = opt(metavar=("SOURCE_SCORES", "TARGET_SCORES"),
                           help="head-score files of the source and of the target")


def _patch(model: ModelOptions, models: PatchModels, config: PatchConfig, run: PatchData) -> None:
    """cross-model activation patching in lockstep generation

    The target generates while the source runs in lockstep on the same tokens; the target's z at the patched
    heads is the source's. Head sets: intersection, complement (only the source's), source, random. Writes
    patching.json, config.json, patching.png."""
    from headlab.experiments.patching import run_patching, write_patching
    from headlab.model.loading import inspect, load_weights

    source_info, target_info = (inspect(m, model.trust_remote_code) for m in (models.source, models.target))
    tokenizer = target_info.tokenizer
    if source_info.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise HeadlabError(f"{models.source}: its tokenizer differs from the target's; patching needs a shared one")
    src_rank = _ranking(models.heads[0], source_info.geometry)
    tgt_rank = _ranking(models.heads[1], target_info.geometry)
    items = _items(run, config.seed, config.max_new_tokens, target_info)
    if not 1 <= config.k <= min(len(src_rank), len(tgt_rank)):
        raise HeadlabError(f"--k must be in [1, {min(len(src_rank), len(tgt_rank))}], got {config.k}")
    source = load_weights(source_info, model.device, model.dtype, model.attn, **model.placement())
    target = load_weights(target_info, model.device, model.dtype, model.attn, **model.placement())
    result = run_patching(source, target, tokenizer, items, src_rank, tgt_rank, config)
    if not is_main():
        return
    write_patching(result, run.out, config, {"source": models.source, "target": models.target,
                                             "heads": list(models.heads), "data": run.data or "toy-niah"})
    print(f"target {result['target']:.3f}  source {result['source']:.3f}")
    for name, v in result["sets"].items():
        print(f"  patched {name:>12} ({v['size']:>3} heads)  {v['mean']:.3f} ± {v['std']:.3f}")
    print(f"wrote {Path(run.out) / 'patching.json'}, config.json, patching.png")


@dataclass(kw_only=True)
class CompareFiles:
    files: list[str] = opt(positional=True, help="head-score files (or `headlab detect` folders)")
    reference: str | None = opt(None, help="reference head scores R (e.g. the real-data model); "
                                           "recall = |A∩R|/|R|")
    scores: list[float] | None = opt(None, help="downstream score of each file's model, in order")
    out: str | None = None  # output folder for compare.json (and recall_vs_score.png)


def _compare(files: CompareFiles, config: CompareConfig) -> None:
    """recall, Jaccard, cosine between head sets; Spearman with scores

    Compare head-score files pairwise and against --reference; with --scores (one downstream score per file),
    the Spearman correlation of recall and score across models."""
    from headlab.experiments.compare import compare_head_files, write_compare

    result = compare_head_files(files.files, files.reference, files.scores, config)
    if files.out:
        write_compare(result, files.out)
    for row in result["pairwise"]:
        print(f"{row['a']:>20} vs {row['r']:<20} recall {row['recall']:.3f}  jaccard {row['jaccard']:.3f}  "
              f"shared {row['intersection']}  cosine {row['cosine']:.3f}")
    for row in result.get("vs_reference", []):
        score = f"  score {row['score']:.3f}" if "score" in row else ""
        print(f"{row['label']:>20} vs reference  recall {row['recall']:.3f}  jaccard {row['jaccard']:.3f}  "
              f"shared {row['intersection']}  cosine {row['cosine']:.3f}{score}")
    if "spearman" in result:
        sp = result["spearman"]
        text = "undefined (constant input)" if sp["rho"] is None else f"{sp['rho']:.3f} (p = {sp['p']:.3g})"
        print(f"Spearman(recall, score) over {sp['n']} models: {text}")
    if files.out:
        print(f"wrote {Path(files.out) / 'compare.json'}")


@dataclass(kw_only=True)
class HeadsPair:
    a: str = opt(positional=True, help="head-score file A")
    reference: str = opt(positional=True, help="reference head-score file R")


def _heads_compare(pair: HeadsPair, sel: Selection, config: CompareConfig) -> None:
    """recall, Jaccard and cosine of head set A against reference R (`headlab compare A --reference R`)"""
    _compare(CompareFiles(files=[pair.a], reference=pair.reference), config)


def commands() -> list[Command]:
    run_help = {"seeds": Flag(help="random control sets (seed, seed+1, ...)"),
                "seed": Flag(help="first seed of the random controls and toy probes"),
                "k": Flag(help="top-K heads")}
    mode = Flag(choices=MODES, help="uniform: zero the query (uniform attention); zero: z=0; mean: z=its mean "
                                    "on the data")
    where = Flag(choices=WHERE, help="decode: positions that produce a generated token (the prompt's last one "
                                     "included); all: every position")
    patch_hide = ("model", "gguf_file", "progress", "curve", "sets")
    return [
        Command("knockout", _knockout, hide=("progress",), config_file=True, whole_output=True,
                flags={**run_help, "mode": mode, "where": where}),
        Command("patch", _patch, hide=patch_hide, config_file=True, whole_output=True, flags=run_help),
        Command("compare", _compare, whole_output=True),
        Command("heads compare", _heads_compare),
    ]
