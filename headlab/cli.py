"""The `headlab` command: typed front-ends over library functions, their flags built by the CLI floor.

Bad input raises HeadlabError; `main` prints its one line and exits with status 2, writing nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from headlab.core.cli_floor import Cli, Command, Flag, invoke, opt
from headlab.core.errors import HeadlabError
from headlab.core.quiet import quiet_libraries
from headlab.experiments.detect import DetectConfig
from headlab.model.options import ONLY_MODEL, ModelOptions, Selection


@dataclass(kw_only=True)
class DetectRun:
    probes: str | None = opt(None, help="probe JSONL (text or token probes) or a needle-in-a-haystack spec "
                                        "(.json/.yaml); default: toy needle-in-a-haystack probes")
    out: str = "runs/detect"  # output folder
    seed: int = 0  # seed of the default toy probes


def _detect(model: ModelOptions, sel: Selection, config: DetectConfig, run: DetectRun) -> None:
    """retrieval-head detection (copy-paste score, Wu et al. 2024)

    Score every head by how often it copies the needle while the model retrieves it. With no --model/--probes:
    the shipped tiny model and toy needle-in-a-haystack probes."""
    from headlab.core.distributed import is_main
    from headlab.data.niah import length_limit
    from headlab.data.probe_files import load_probes
    from headlab.data.probes import check_context_length
    from headlab.data.world_niah import default_probes
    from headlab.experiments.detect import detect_retrieval_heads, write_detection
    from headlab.mech.heads import SCORES_FILE
    from headlab.model.loading import inspect, load_weights

    model_path = model.path
    # Check every input before loading weights: bad probes fail in seconds, not after loading an 8B model.
    info = inspect(model_path, model.trust_remote_code)
    tokenizer, positions = info.tokenizer, info.max_positions
    probes = load_probes(run.probes, tokenizer, length_limit(positions, config.allow_long_context), positions) \
        if run.probes else default_probes(tokenizer, run.seed)
    if not config.allow_long_context:
        check_context_length(probes, positions, config.max_new_tokens)
    loaded = load_weights(info, device=model.device, dtype=model.dtype, attn_implementation=model.attn,
                          **model.placement())
    result = detect_retrieval_heads(loaded, tokenizer, probes, config)
    if not is_main():  # under `accelerate launch` the main process alone writes
        return
    summary = write_detection(result, run.out, {"model": model_path, "probes": run.probes or "toy-niah",
                                                "dtype": model.dtype, "attn": model.attn, "seed": run.seed})
    print(f"probes: {summary['probes_given']} given, {summary['probes_counted']} counted")
    _print_top(summary["mean_scores"], summary["retrieval_heads"], limit=sel.show)
    print(f"wrote {Path(run.out) / SCORES_FILE}, summary.json, retrieval_heads.png")


def _print_top(means: dict[str, float], heads: list[str], limit: int) -> None:
    if not heads:
        print("no retrieval heads at this threshold")
        return
    print(f"retrieval heads: {len(heads)} (top {min(limit, len(heads))} shown)")
    for name in heads[:limit]:
        print(f"  {name:>7}  {means[name]:.3f}")


@dataclass(kw_only=True)
class HeadFile:
    file: str = opt(positional=True, help="a Retrieval_Head-format head-score file")
    out: str | None = None  # output folder


def _heads_show(model: ModelOptions, sel: Selection, head_file: HeadFile) -> None:
    """print the top heads of a Retrieval_Head-format file"""
    from headlab.mech.heads import load_scores, mean_scores, select_heads
    from headlab.model.loading import inspect

    geometry = inspect(model.model).geometry if model.model else None
    means = mean_scores(load_scores(head_file.file, geometry))
    _print_top(means, select_heads(means, sel.threshold, sel.top_k), limit=sel.show)


def _heads_import(model: ModelOptions, sel: Selection, head_file: HeadFile) -> None:
    """turn a Retrieval_Head JSON from another tool into a headlab folder"""
    from headlab.core.io import atomic_write_json
    from headlab.core.plots import head_heatmap
    from headlab.mech.heads import SCORES_FILE, load_scores, mean_scores, score_matrix, select_heads
    from headlab.model.loading import inspect

    geometry = inspect(model.model).geometry if model.model else None
    scores = load_scores(head_file.file, geometry)
    means = mean_scores(scores)
    out = Path(head_file.out)
    matrix = score_matrix(means, geometry)  # before any write: a bad file leaves nothing behind
    atomic_write_json(out / SCORES_FILE, scores)
    head_heatmap(matrix, out / "retrieval_heads.png")
    atomic_write_json(out / "summary.json", {
        "mean_scores": means, "retrieval_heads": select_heads(means, sel.threshold, sel.top_k),
        "probes_counted": max((len(v) for v in scores.values()), default=0),
        "config": {"imported_from": str(head_file.file), "threshold": sel.threshold, "top_k": sel.top_k},
    })
    print(f"imported {len(scores)} heads into {out}")


GEOMETRY_MODEL = Flag(help="check head indices against this model's geometry")
GROUPS = {"heads": "read, import and compare head-score files",
          "data": "long-context task data: synthetic, converted, shown",
          "toy": "the toy world and the tiny model headlab ships",
          "lofit": "LoFiT: select heads, tune offsets, merge, evaluate",
          "cot": "direct answer vs chain of thought per dataset (Sprague et al. 2024)"}


def commands() -> list[Command]:
    """Every command, in --help order (built per call: a test may replace a handler)."""
    from headlab.cot.cli import commands as cot
    from headlab.data.cli import commands as data
    from headlab.experiments.atlas_cli import commands as atlas
    from headlab.experiments.mech_cli import commands as mech
    from headlab.experiments.train_cli import commands as train
    from headlab.lofit.cli import commands as lofit
    from headlab.study.cli import commands as study
    from headlab.toy.cli import commands as toy

    heads_only = ONLY_MODEL  # --model is read for its geometry only
    return [
        Command("detect", _detect, hide=("progress",), config_file=True, whole_output=True),
        Command("heads show", _heads_show, flags={"model": GEOMETRY_MODEL}, hide=heads_only + ("out",)),
        Command("heads import", _heads_import, flags={"model": GEOMETRY_MODEL, "out": Flag(required=True)},
                hide=heads_only, whole_output=True),
        *atlas(), *mech(), *data(), *toy(), *lofit(), *train(), *study(), *cot(),
    ]


def build_cli() -> Cli:
    """The whole command line (`build_cli().parser` is its argparse tree, walked by tools/hostile_campaign.py)."""
    return Cli("headlab", __doc__.splitlines()[0], commands(), GROUPS)


def build_parser():
    return build_cli().parser


def run(argv: list[str] | None = None) -> None:
    """Parse and run one command; bad input raises HeadlabError (main prints it)."""
    import contextlib
    import io

    from headlab.core.io import staged_folder

    command, values, verbose = build_cli().parse(argv)
    quiet_libraries(verbose)
    if values.get("allow_pickle"):
        from headlab.model.model_check import allow_pickle

        allow_pickle()
    # A command whose --out folder is written whole writes into a scratch sibling that is then moved in
    # (headlab.core.io.staged_folder); not finetune, study (run folders that resume) nor lofit merge (one rename).
    if not command.whole_output or not values.get("out"):
        invoke(command, values)
        return
    final = values["out"]
    printed = io.StringIO()
    with staged_folder(final) as stage:
        try:
            with contextlib.redirect_stdout(printed):  # its messages name the final folder, not the scratch one
                invoke(command, {**values, "out": str(stage)})
        finally:
            sys.stdout.write(printed.getvalue().replace(str(stage), str(final)))


class _StderrLineEnd:
    """sys.stderr as it was, remembering whether the last text written ended a line: a progress bar interrupted
    mid-line gets a newline before `headlab: interrupted`, so that message stays a line of its own."""

    def __init__(self, inner):
        self._inner, self.at_line_start = inner, True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self._inner.write(text)

    def new_line(self) -> str:
        """What to write first so that the next text starts a line."""
        return "" if self.at_line_start else "\n"

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def _close_progress_bars() -> None:
    """End the bars an interrupted command left open now, so that they are not redrawn after the last line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    stderr = sys.stderr = _StderrLineEnd(sys.stderr)
    try:
        run(argv)
    except HeadlabError as e:
        # a path or value from the user may hold a newline or a carriage return: the message stays one line
        message = str(e).replace("\r", "\\r").replace("\n", "\\n")
        print(stderr.new_line() + f"headlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # one line, not a traceback; 130 = 128 + SIGINT, as shells report it
        _close_progress_bars()
        print(stderr.new_line() + "headlab: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stderr = stderr._inner
    return 0


if __name__ == "__main__":
    sys.exit(main())
