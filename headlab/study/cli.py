"""`headlab study`: the whole synthetic-context-extension study as one resumable command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headlab.core.cli_floor import Command, Flag, given, opt
from headlab.model.options import ModelOptions


@dataclass(kw_only=True)
class StudyOptions:
    config: str | None = None  # YAML or JSON study settings (see README); overrides the preset
    preset: str = opt("default", help="default (MDQA and multi-hop, ~15 min on 2 CPU cores), quick (one task, "
                                      "CI) or full (~1 h)")
    out: str = "runs/study"  # run folder
    seed: int | None = None  # the study's seed (default: the preset's)
    no_progress: bool = False  # no progress bars
    executor: str = opt("sequential", choices=("sequential", "ray"),
                        help="sequential: one stage after another in this process; ray: every stage whose inputs "
                             "are done runs at once as a Ray task (a GPU each for model stages when there are GPUs)")
    address: str | None = opt(None, help="with --executor ray: the cluster to join (auto, or ray://host:port); "
                                         "default: start a local Ray instance")
    num_cpus: int | None = None  # with --executor ray and no --address: CPUs of the local instance
    cpus_per_stage: int = 1  # with --executor ray: CPUs each stage reserves


def _study(model: ModelOptions, opts: StudyOptions) -> None:
    """the paper's pipeline end to end (resumable), with an HTML report

    Data -> fine-tune each variant -> evaluate -> task retrieval heads -> compare -> knockout -> patching ->
    report. Re-running skips finished stages; a changed setting recomputes its stage and what depends on it."""
    from headlab.core.distributed import launched
    from headlab.core.errors import HeadlabError
    from headlab.study.config import build_config
    from headlab.study.stages import build_study

    if launched():  # every process would run the whole study into the same folder
        raise HeadlabError("study: run it without accelerate launch/torchrun; --executor ray uses several GPUs")
    ray_only = [f"--{name.replace('_', '-')}" for name in ("address", "num_cpus", "cpus_per_stage")
                if name in given(opts)]
    if opts.executor != "ray" and ray_only:
        raise HeadlabError(f"study: {' and '.join(ray_only)} need --executor ray")
    # --device and --dtype override the preset or config file only when given.
    chosen = {name: getattr(model, name) if name in given(model) else None for name in ("device", "dtype")}
    config = build_config(opts.preset, opts.config, base_model=model.model, seed=opts.seed, **chosen)
    executor = None
    if opts.executor == "ray":
        from headlab.study.executor import RayExecutor

        # Model stages reserve a GPU only when they will use one.
        executor = RayExecutor(opts.address, opts.num_cpus, opts.cpus_per_stage,
                               use_gpus=str(config.device).startswith("cuda"))
    _check_against_model(config, opts.config or "study config")
    status = build_study(config, opts.out).run(progress=not opts.no_progress, executor=executor)
    done = sum(1 for v in status.values() if v != "skipped")
    print(f"study: {done} stages run, {len(status) - done} already done; report: {Path(opts.out) / 'report'}")
    findings = Path(opts.out) / "report" / "findings.md"
    if findings.is_file():
        print(findings.read_text(encoding="utf-8"), end="")


def _check_against_model(config, source: str) -> None:
    """What needs the base model's config (not its weights): checked before the first stage, not when the
    stage that needs it comes up minutes later."""
    from headlab.data.niah import check_lengths, length_limit
    from headlab.model.loading import inspect
    from headlab.study.stages import base_model_path

    positions = inspect(base_model_path(config), weights=True).max_positions  # weight files whole, too
    check_lengths(config.niah_lengths, length_limit(max(positions or 0, config.context_length) or None),
                  source, positions, "niah_lengths")


def commands() -> list[Command]:
    placement = ("attn", "trust_remote_code", "device_map", "max_memory")
    return [Command("study", _study, hide=placement, flags={
        "model": Flag(help="base model (default: the shipped tiny model)"),
        "device": Flag(help="device of the model stages (default: the preset's or --config's)"),
        "dtype": Flag(help="dtype of the model stages (default: the preset's or --config's)")})]
