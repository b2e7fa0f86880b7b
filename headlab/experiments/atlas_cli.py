"""`headlab heads score --method NAME`: every atlas method behind one command, writing the run folder that
`heads show`, `heads compare`, knockout and the study read (Retrieval_Head format per query head), plus the
same scores per kv head. Every input is checked before weights load; errors are HeadlabError."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from headlab.core.cli_floor import Command, opt
from headlab.core.distributed import is_main
from headlab.core.errors import HeadlabError
from headlab.core.io import atomic_write_json
from headlab.experiments.attention_mass import MassConfig
from headlab.experiments.duo_gates import DuoConfig
from headlab.experiments.patterns import METHODS as PATTERN_METHODS
from headlab.mech.kv_heads import REDUCTIONS
from headlab.model.options import ModelOptions, Selection

# Methods scored on needle probes while the model decodes them (docs/definitions.md); pattern methods score
# random repeated sequences instead (experiments/patterns.py), query-focused scores task examples' questions
# against their gold documents (experiments/query_focused.py), duo-gates trains DuoAttention's gates on probes
# (experiments/duo_gates.py).
DECODING_METHODS = ("retrieval", "attention-mass")
QUERY_FOCUSED = "query-focused"
DUO = "duo-gates"
RAZOR = "razor-attention"  # induction and echo (duplicate-token) scores, then RazorAttention's head rule
METHODS = DECODING_METHODS + PATTERN_METHODS + (RAZOR, QUERY_FOCUSED, DUO)
KV_FILE = "kv_scores.json"
DEFAULT_EXAMPLES = 16  # query-focused with no --probes: synthetic MDQA examples for the model's tokenizer


@dataclass(kw_only=True)
class ScoreRun:
    method: str = opt("retrieval", choices=METHODS,
                      help="retrieval: copy-paste (Wu et al. 2024); attention-mass: attention on the needle "
                           "(HeadKV); induction, previous-token, duplicate-token: pattern scores (TransformerLens); "
                           "query-focused: question-to-gold-document attention, null question subtracted (QRHead); "
                           "duo-gates: learned full-vs-streaming gates per kv head (DuoAttention); razor-attention: "
                           "1 for the heads RazorAttention keeps whole (top induction and echo heads), else 0")
    probes: str | None = opt(None, help="probe JSONL (text or token probes) or a needle-in-a-haystack spec "
                                        "(.json/.yaml); query-focused: a task-example JSONL (headlab data make or "
                                        "convert); default: toy needle-in-a-haystack probes, or synthetic MDQA")
    null_query: str = "N/A"  # query-focused: the calibration question
    checkpoints: str | None = opt(None, help="duo-gates: folder for training checkpoints; the same command "
                                             "with the same folder resumes a killed run")
    kv_reduce: str = opt("max", choices=REDUCTIONS, help="a kv head's score from its query heads' scores")
    sequences: int = 32  # pattern methods: random [bos] + r + r sequences
    length: int = 24  # pattern methods: tokens in r
    repeats: int = 2  # pattern methods: copies of r (RazorAttention's protocol: 4)
    induction_ratio: float = opt(0.14, help="razor-attention: share of heads kept for their induction score")
    echo_ratio: float = opt(0.01, help="razor-attention: share of heads kept for their echo score")
    out: str = "runs/heads"  # output folder
    seed: int = 0  # seed of the default toy probes


def _probes(run: ScoreRun, info, allow_long_context: bool, max_new_tokens: int):
    from headlab.data.niah import length_limit
    from headlab.data.probe_files import load_probes
    from headlab.data.probes import check_context_length
    from headlab.data.world_niah import default_probes

    tokenizer, positions = info.tokenizer, info.max_positions
    probes = load_probes(run.probes, tokenizer, length_limit(positions, allow_long_context), positions) \
        if run.probes else default_probes(tokenizer, run.seed)
    if not allow_long_context:
        check_context_length(probes, positions, max_new_tokens)
    return probes


def _pattern_config(run: ScoreRun, config: MassConfig):
    """The pattern method's settings; probes make no sense for it (one line, before weights load)."""
    from headlab.experiments.patterns import PatternConfig

    if run.probes:
        raise HeadlabError(f"--probes: {run.method} scores random repeated token sequences, not probes; "
                           "drop --probes (size them with --sequences and --length)")
    method = "induction" if run.method == RAZOR else run.method
    return PatternConfig(method=method, n_sequences=run.sequences, length=run.length, repeats=run.repeats,
                         batch_size=config.batch_size, seed=run.seed)


def _query_inputs(run: ScoreRun, info, config: MassConfig):
    """query-focused: its settings and the task examples as token inputs, checked before weights load."""
    from headlab.core.errors import where
    from headlab.core.io import iter_jsonl
    from headlab.data.example import load_examples
    from headlab.experiments.query_focused import QueryFocusedConfig, query_inputs

    settings = QueryFocusedConfig(batch_size=config.batch_size, null_query=run.null_query)
    if run.probes:
        path = Path(run.probes)
        if path.suffix.lower() in (".json", ".yaml", ".yml"):
            raise HeadlabError(f"--probes {path}: query-focused scores need task examples (JSONL with question, "
                               "documents and gold_doc_ids), not a needle-in-a-haystack spec")
        for lineno, obj in iter_jsonl(path):
            missing = [k for k in ("question", "documents", "gold_doc_ids") if k not in obj]
            if missing:
                raise HeadlabError(f"{where(path, lineno, missing[0])} missing: query-focused scores need task "
                                   "examples with a question, documents and gold_doc_ids, not probes")
        examples = load_examples(path)
    else:
        from headlab.data.tasks import GenConfig, generate_examples

        length = min(1024, info.max_positions or 1024)
        examples = generate_examples(GenConfig("mdqa", n=DEFAULT_EXAMPLES, length=length, seed=run.seed),
                                     info.tokenizer)
    inputs = query_inputs(examples, info.tokenizer, run.null_query)
    positions = info.max_positions
    for item in inputs:
        longest = max(len(item.query_ids), len(item.null_ids))
        if positions is not None and not config.allow_long_context and longest > positions:
            raise HeadlabError(f"{run.probes or 'synthetic examples'}: example {item.id} has a prompt of {longest} "
                               f"tokens, more than the model's {positions} positions (pass --allow-long-context)")
    return inputs, settings


def score_heads(method: str, loaded, tokenizer, probes, config: MassConfig):
    """The DetectionResult of `method` on `probes` (library entry point of `heads score`)."""
    from headlab.experiments.attention_mass import attention_mass_heads
    from headlab.experiments.detect import DetectConfig, detect_retrieval_heads

    if method == "attention-mass":
        return attention_mass_heads(loaded, tokenizer, probes, config)
    plain = DetectConfig(**{f.name: getattr(config, f.name) for f in fields(DetectConfig)})
    return detect_retrieval_heads(loaded, tokenizer, probes, plain)


def _meta(model: ModelOptions, run: ScoreRun, default_input: str) -> dict:
    """What every summary's config records of the run."""
    return {"model": model.path, "dtype": model.dtype, "attn": model.attn, "seed": run.seed,
            "probes": run.probes or default_input}


def _score_patterns(loaded, info, pattern, model: ModelOptions, run: ScoreRun):
    from dataclasses import replace

    from headlab.experiments.patterns import (
        pattern_scores,
        razor_attention_heads,
        repeated_tokens_for,
        write_head_scores,
    )

    tokens = repeated_tokens_for(loaded, pattern, info.tokenizer)
    result = pattern_scores(loaded, tokens, pattern)
    extra = {"model": model.path, "dtype": model.dtype, "attn": model.attn}
    if run.method == RAZOR:  # the same sequences scored for echo too; a head's score is 1 when it is kept
        echo = pattern_scores(loaded, tokens, replace(pattern, method="duplicate-token"))
        kept = set(razor_attention_heads(result.mean, echo.mean, run.induction_ratio, run.echo_ratio))
        extra.update(induction_means=result.mean, echo_means=echo.mean, kept=sorted(kept),
                     induction_ratio=run.induction_ratio, echo_ratio=run.echo_ratio)
        scores = {h: [float(h in kept)] for h in result.scores}
        result = replace(result, method=RAZOR, scores=scores, mean={h: v[0] for h, v in scores.items()})
    if not is_main():
        return None
    return result, write_head_scores(result, run.out, extra), f"{result.n_sequences} random repeated sequences"


def _score_query_focused(loaded, info, prepared, model: ModelOptions, run: ScoreRun, config: MassConfig):
    from headlab.core.progress import progress_bar
    from headlab.data.prompts import pad_id_of
    from headlab.experiments.patterns import write_head_scores
    from headlab.experiments.query_focused import query_focused_scores

    items, settings = prepared  # from _query_inputs
    with progress_bar(total=len(items), desc="query-focused", unit="example", disable=not config.progress) as bar:
        result = query_focused_scores(loaded, items, settings, pad_id_of(info.tokenizer), bar.update)
    if not is_main():
        return None
    summary = write_head_scores(result, run.out, _meta(model, run, "synthetic-mdqa"))
    return result, summary, f"{len(items)} examples"


def _score_duo(loaded, probes, model: ModelOptions, run: ScoreRun, config: MassConfig, duo: DuoConfig):
    from headlab.core.progress import progress_bar
    from headlab.experiments.duo_gates import train_gates
    from headlab.experiments.patterns import write_head_scores

    with progress_bar(total=duo.steps, desc="duo gates", unit="step", disable=not config.progress) as bar:
        result = train_gates(loaded, probes, duo, run.checkpoints, bar.update)
    if not is_main():
        return None
    summary = write_head_scores(result, run.out, _meta(model, run, "toy-niah"))
    return result, summary, f"{len(probes)} probes, {duo.steps} steps, last loss {result.losses[-1]:.3g}"


def _score_decoding(loaded, info, probes, model: ModelOptions, run: ScoreRun, config: MassConfig):
    from headlab.experiments.detect import write_detection

    result = score_heads(run.method, loaded, info.tokenizer, probes, config)
    if not is_main():
        return None
    summary = write_detection(result, run.out, {**_meta(model, run, "toy-niah"), "method": run.method,
                                                "unit": "query head"})
    return result, summary, f"probes {summary['probes_given']} given, {summary['probes_counted']} counted"


def _heads_score(model: ModelOptions, sel: Selection, config: MassConfig, run: ScoreRun, duo: DuoConfig) -> None:
    """score every head by one atlas method, per query head and per kv head

    With no --model/--probes: the shipped tiny model and toy needle-in-a-haystack probes (synthetic MDQA
    examples for query-focused)."""
    from headlab.mech.heads import SCORES_FILE, select_heads
    from headlab.mech.kv_heads import kv_head_scores
    from headlab.model.loading import inspect, load_weights

    info = inspect(model.path, model.trust_remote_code)
    pattern = _pattern_config(run, config) if run.method in (*PATTERN_METHODS, RAZOR) else None
    queries = _query_inputs(run, info, config) if run.method == QUERY_FOCUSED else None
    probes = None if pattern or queries else _probes(run, info, config.allow_long_context, config.max_new_tokens)
    loaded = load_weights(info, device=model.device, dtype=model.dtype, attn_implementation=model.attn,
                          **model.placement())  # every input above is checked before weights load
    if pattern:
        done = _score_patterns(loaded, info, pattern, model, run)
    elif queries:
        done = _score_query_focused(loaded, info, queries, model, run, config)
    elif run.method == DUO:
        done = _score_duo(loaded, probes, model, run, config, duo)
    else:
        done = _score_decoding(loaded, info, probes, model, run, config)
    if done is None:  # not the main process of a launcher: it writes nothing
        return
    result, summary, given = done
    if run.method == DUO:  # the gates are kv-head scores already
        kv, reduce = result.gates, "native"
    else:
        kv, reduce = kv_head_scores(summary["mean_scores"], result.geometry, run.kv_reduce), run.kv_reduce
    atomic_write_json(Path(run.out) / KV_FILE, {"method": run.method, "unit": "kv head", "reduce": reduce,
                                                "mean_scores": kv})
    print(f"{run.method}: {given}")
    shown = kv if run.method == DUO else summary["mean_scores"]  # duo: its own unit, the kv head
    for name in select_heads(shown, None, sel.show):
        print(f"  {name:>7}  {shown[name]:.3f}")
    print(f"wrote {Path(run.out) / SCORES_FILE}, {KV_FILE}, summary.json, retrieval_heads.png")


def commands() -> list[Command]:
    return [Command("heads score", _heads_score, hide=("progress",), config_file=True, whole_output=True)]
