"""The study's configuration: one dataclass, presets, and a YAML/JSON loader with located errors."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headlab.core.errors import HeadlabError, check_fields, where
from headlab.core.io import read_document
from headlab.data.example import HAYSTACK_DIVERSITIES, NEEDLE_REALISMS, TASKS
from headlab.model.options import DTYPES

if TYPE_CHECKING:  # torch and transformers come with it: loaded when a config is made, not on import
    from headlab.experiments.finetune import FinetuneConfig

REAL = "real"  # the variant trained on real data (for the toy world: its richest, held-out distribution)
# The study's fine-tune settings (sized for the tiny model on 2 CPU cores). A file's `finetune:` mapping replaces
# them whole: a setting it leaves out is `headlab finetune`'s default.
FINETUNE: dict[str, Any] = {"method": "lora", "lora_rank": 8, "lora_alpha": 16.0, "lr": 2e-3, "steps": 16,
                            "batch_size": 4}
STUDY_SETS = ("model", "data", "out", "context_length", "seed", "merge")  # per fine-tune stage, by the study


@dataclass
class StudyConfig:
    base_model: str | None = None  # default: the shipped tiny model
    # The default leaves citation out: on the toy world no model has a citation retrieval head, and the 15-minute
    # budget goes to power on the two tasks that have heads (preset "full" runs all three).
    tasks: list[str] = field(default_factory=lambda: ["mdqa", "multihop"])
    # Synthetic variants as "<needle realism>-<haystack diversity>"; "real" is always trained too.
    variants: list[str] = field(default_factory=lambda: [
        "real-repetitive", "templated-diverse", "templated-repetitive", "symbolic-diverse", "symbolic-symbolic"])
    real_data: dict[str, str] = field(default_factory=dict)  # task -> headlab JSONL of real training data
    real_eval: dict[str, str] = field(default_factory=dict)  # task -> headlab JSONL of real evaluation data
    # Defaults sized for the shipped tiny model on 2 CPU cores (its context: 256 -> 512); set them for real models.
    train_examples: int = 32
    # Held-out examples per task: every score's 95% interval comes from these (see README "power").
    eval_examples: int = 128
    length: int = 512  # prompt tokens of training and evaluation examples (citation needs about 500)
    context_length: int = 640  # the fine-tuned models' context
    # `headlab finetune`'s settings but STUDY_SETS, which the study sets per fine-tune stage.
    finetune: FinetuneConfig = field(default_factory=lambda: finetune_settings(FINETUNE))
    finetune_seeds: int = 2  # fine-tunes per variant (seeds seed, seed+1, ...): the report shows their spread
    detect_examples: int = 48  # task probes available to rank retrieval heads (a held-out set of its own)
    detect_counted: int = 24  # detection stops once this many probes were answered right (counted)
    max_new_tokens: int = 16
    top_k: int = 8  # retrieval heads compared, knocked out and patched
    knockout_seeds: int = 2
    # Knockout and patching run on the first `intervention_examples` held-out examples (0: all of them).
    intervention_examples: int = 32
    # Models whose knockout curve (K = 1, 2, 4, ..., top_k) is measured, and variants whose patching curve is;
    # every other model is measured at K = top_k only (each curve point costs 1 + seeds evaluations).
    curve_models: list[str] = field(default_factory=lambda: [REAL])
    patch_seeds: int = 1
    # The head sets patched: intersection (the paper's) and random (its control); complement and source too in "full"
    patch_sets: list[str] = field(default_factory=lambda: ["intersection", "random"])
    niah_lengths: list[int] = field(default_factory=lambda: [256, 512])
    niah_depths: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    niah_per_cell: int = 3
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.finetune, dict):  # as a file or a preset writes it
            self.finetune = finetune_settings(self.finetune)

    def check(self, source: str = "study config") -> None:
        """Every setting through the floor's field checks, shapes first so that the later rules may compute."""
        from headlab.experiments.finetune import FinetuneConfig

        ints = ("train_examples", "eval_examples", "length", "context_length", "detect_examples", "max_new_tokens",
                "top_k", "knockout_seeds", "patch_seeds", "niah_per_cell", "batch_size", "finetune_seeds",
                "detect_counted")
        sets = ("intersection", "complement", "source", "random")
        maps = {name: getattr(self, name) for name in ("real_data", "real_eval")}
        check_fields(source, self, [
            ("tasks", isinstance(self.tasks, list) and bool(self.tasks) and all(t in TASKS for t in self.tasks),
             f"a non-empty list of {', '.join(TASKS)}"),
            ("variants", isinstance(self.variants, list) and all(isinstance(v, str) for v in self.variants),
             "a list of names like 'symbolic-repetitive'"),
            *[(name, isinstance(m, dict) and all(isinstance(f, str) for f in m.values()),
               "a mapping from the study's tasks to files") for name, m in maps.items()],
            ("base_model", self.base_model is None or isinstance(self.base_model, str) and bool(
                self.base_model.strip()), "a model folder or hub id"),
            *[(name, _is_int(getattr(self, name)) and getattr(self, name) >= 1, "a positive integer")
              for name in ints],
            ("seed", _is_int(self.seed) and self.seed >= 0, "an integer >= 0"),
            ("patch_sets", isinstance(self.patch_sets, list) and bool(self.patch_sets) and all(
                x in sets for x in self.patch_sets), f"a non-empty list of {', '.join(sets)}"),
            ("intervention_examples", _is_int(self.intervention_examples) and self.intervention_examples >= 0,
             "a non-negative integer (0: every evaluation example)"),
            ("niah_lengths", isinstance(self.niah_lengths, list) and bool(self.niah_lengths) and all(
                _is_int(n) and n >= 1 for n in self.niah_lengths), "a non-empty list of positive token counts"),
            ("niah_depths", isinstance(self.niah_depths, list) and bool(self.niah_depths) and all(
                _is_number(d) and 0 <= d <= 1 for d in self.niah_depths), "a non-empty list of fractions in [0, 1]"),
            ("dtype", self.dtype in DTYPES, f"one of {', '.join(DTYPES)}"),
            ("device", isinstance(self.device, str), "a device name such as cpu or cuda"),
            ("finetune", isinstance(self.finetune, FinetuneConfig), "a mapping of fine-tune settings"),
        ])
        parts = [v.split("-") for v in self.variants]
        names = ["base", *self.models]
        unknown = {n: [str(t) for t in m if t not in self.tasks] for n, m in maps.items()}
        missing = {n: [f for f in m.values() if not Path(f).is_file()] for n, m in maps.items()}
        check_fields(source, self, [
            ("variants", all(len(p) == 2 and p[0] in NEEDLE_REALISMS and p[1] in HAYSTACK_DIVERSITIES for p in parts),
             f"names like 'symbolic-repetitive' ({'/'.join(NEEDLE_REALISMS)} - {'/'.join(HAYSTACK_DIVERSITIES)})"),
            ("variants", len(set(self.variants)) == len(self.variants) and REAL not in self.variants,
             "distinct synthetic variants (the real variant is always included)"),
            *[(n, not unknown[n], f"a mapping from the study's tasks to files ({''.join(unknown[n][:1])} is not a "
                                  "task)") for n in maps],
            *[(n, not missing[n], f"a mapping to existing files ({''.join(missing[n][:1])} not found)") for n in maps],
            ("curve_models", isinstance(self.curve_models, list) and all(m in names for m in self.curve_models),
             f"a list of the study's models ({', '.join(names)})"),
            ("length", self.length + self.max_new_tokens <= self.context_length,
             f"at most context_length - max_new_tokens = {self.context_length - self.max_new_tokens}"),
        ])
        from headlab.core.inputs import check_device

        try:
            check_device(self.device)
        except HeadlabError as e:
            raise HeadlabError(f"{where(source, None, 'device')}: {e}") from None
        self.finetune.check(source, "finetune.")

    @property
    def models(self) -> list[str]:
        """Every fine-tuned variant, the real one first."""
        return [REAL, *self.variants]

    def to_dict(self) -> dict:
        return {**asdict(self), "finetune": finetune_mapping(self.finetune)}


def finetune_settings(mapping: Any, source: str = "study config") -> FinetuneConfig:
    """A config file's `finetune:` mapping as `headlab finetune`'s settings, built as the CLI floor builds a
    command's (it remembers which were given); its values are checked with the rest (`check`)."""
    from headlab.core.cli_floor import build
    from headlab.experiments.finetune import FinetuneConfig

    if not isinstance(mapping, dict) or not all(isinstance(k, str) for k in mapping):
        raise HeadlabError(f"{where(source, None, 'finetune')} must be a mapping of fine-tune settings")
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    for key in mapping:
        if key in STUDY_SETS:
            raise HeadlabError(f"{where(source, None, 'finetune.' + key)} is set by the study itself")
        if key not in known:
            raise HeadlabError(f"{where(source, None, 'finetune.' + key)} is not a fine-tune setting")
    return build(FinetuneConfig, mapping)


def finetune_mapping(settings: FinetuneConfig) -> dict[str, Any]:
    """The settings as a fine-tune stage's input and in the report's config: those given, and any other that
    is not `headlab finetune`'s default, in field order (STUDY_SETS left out); `finetune_settings` of it gives
    the same settings back."""
    from headlab.core.cli_floor import given

    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name not in STUDY_SETS and (f.name in given(settings) or value != default):
            out[f.name] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Everything at full power: all three tasks, knockout and patching on every held-out example with more
    # control sets, every patching head set, curves for two models. About 55 minutes on 2 idle CPU cores.
    "full": {"tasks": list(TASKS), "intervention_examples": 0, "knockout_seeds": 3, "patch_seeds": 2,
             "patch_sets": ["intersection", "complement", "source", "random"],
             "curve_models": [REAL, "symbolic-symbolic"]},
    # One task, three synthetic variants, smaller sets: the whole pipeline in a few minutes (CI, tests).
    # Two fine-tune seeds and the curves so that every report element is exercised; intervals are wide.
    "quick": {"tasks": ["mdqa"], "variants": ["real-repetitive", "templated-diverse", "symbolic-symbolic"],
              "train_examples": 16, "eval_examples": 24, "length": 384, "context_length": 512,
              "finetune": {"method": "lora", "lora_rank": 8, "lora_alpha": 16.0, "lr": 2e-3, "steps": 8,
                           "batch_size": 4},
              "finetune_seeds": 2, "detect_examples": 16, "intervention_examples": 16,
              "curve_models": ["real", "symbolic-symbolic"], "top_k": 6,
              "patch_sets": ["intersection", "complement", "source", "random"], "knockout_seeds": 2, "patch_seeds": 1,
              "niah_lengths": [256, 512], "niah_depths": [0.0, 1.0], "niah_per_cell": 2},
}


def build_config(preset: str = "default", path: str | Path | None = None, **overrides: Any) -> StudyConfig:
    """Preset values, then the file's, then keyword overrides; checked."""
    if preset not in PRESETS:
        raise HeadlabError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    values: dict[str, Any] = dict(PRESETS[preset])
    source = "study config"
    if path is not None:
        values.update(_read_mapping(Path(path)))
        source = str(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "finetune" in values:  # here, so that its errors name the file
        values["finetune"] = finetune_settings(values["finetune"], source)
    known = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise HeadlabError(f"{where(source, None, unknown[0])} is not a study setting "
                           f"(known: {', '.join(sorted(known))})")
    config = StudyConfig(**values)
    config.check(source)
    return config


def _read_mapping(path: Path) -> dict[str, Any]:
    raw = read_document(path)
    if not isinstance(raw, dict):
        raise HeadlabError(f"{path}: expected a mapping of study settings")
    return raw
