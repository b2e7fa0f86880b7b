"""The study's configuration: one dataclass, presets, and a YAML/JSON loader with located errors."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headlab.core.errors import HeadlabError, where
from headlab.core.io import read_document
from headlab.data.example import HAYSTACK_DIVERSITIES, NEEDLE_REALISMS, TASKS

DTYPES = ("float32", "bfloat16", "float16")
REAL = "real"  # the variant trained on real data (for the toy world: its richest, held-out distribution)


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
    finetune: dict[str, Any] = field(default_factory=lambda: {
        "method": "lora", "lora_rank": 8, "lora_alpha": 16.0, "lr": 2e-3, "steps": 16, "batch_size": 4})
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

    def check(self, source: str = "study config") -> None:
        def bad(name: str, wanted: str) -> HeadlabError:
            return HeadlabError(f"{where(source, None, name)} must be {wanted} (got {getattr(self, name)!r})")

        if not isinstance(self.tasks, list) or not self.tasks or any(t not in TASKS for t in self.tasks):
            raise bad("tasks", f"a non-empty list of {', '.join(TASKS)}")
        if not isinstance(self.variants, list) or not all(isinstance(v, str) for v in self.variants):
            raise bad("variants", "a list of names like 'symbolic-repetitive'")
        for v in self.variants:
            parts = v.split("-")
            if len(parts) != 2 or parts[0] not in NEEDLE_REALISMS or parts[1] not in HAYSTACK_DIVERSITIES:
                raise bad("variants", f"names like 'symbolic-repetitive' ({'/'.join(NEEDLE_REALISMS)} - "
                                      f"{'/'.join(HAYSTACK_DIVERSITIES)})")
        if len(set(self.variants)) != len(self.variants) or REAL in self.variants:
            raise bad("variants", "distinct synthetic variants (the real variant is always included)")
        for name in ("real_data", "real_eval"):
            mapping = getattr(self, name)
            if not isinstance(mapping, dict) or not all(isinstance(f, str) for f in mapping.values()):
                raise bad(name, "a mapping from the study's tasks to files")
            unknown = [t for t in mapping if t not in self.tasks]
            if unknown:
                raise bad(name, f"a mapping from the study's tasks to files ({unknown[0]} is not a task)")
            missing = [f for f in mapping.values() if not Path(f).is_file()]
            if missing:
                raise bad(name, f"a mapping to existing files ({missing[0]} not found)")
        if self.base_model is not None and not (isinstance(self.base_model, str) and self.base_model.strip()):
            raise bad("base_model", "a model folder or hub id")
        for name in ("train_examples", "eval_examples", "length", "context_length", "detect_examples",
                     "max_new_tokens", "top_k", "knockout_seeds", "patch_seeds", "niah_per_cell", "batch_size",
                     "finetune_seeds", "detect_counted"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "a positive integer")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "an integer >= 0")
        names = ["base", *self.models]
        if not isinstance(self.curve_models, list) or any(m not in names for m in self.curve_models):
            raise bad("curve_models", f"a list of the study's models ({', '.join(names)})")
        sets = ("intersection", "complement", "source", "random")
        if not isinstance(self.patch_sets, list) or not self.patch_sets or any(x not in sets for x in self.patch_sets):
            raise bad("patch_sets", "a non-empty list of intersection, complement, source, random")
        if not _is_int(self.intervention_examples) or self.intervention_examples < 0:
            raise bad("intervention_examples", "a non-negative integer (0: every evaluation example)")
        if self.length + self.max_new_tokens > self.context_length:
            raise bad("length", f"at most context_length - max_new_tokens = "
                                f"{self.context_length - self.max_new_tokens}")
        if not isinstance(self.niah_lengths, list) or not self.niah_lengths or not all(
                _is_int(n) and n >= 1 for n in self.niah_lengths):
            raise bad("niah_lengths", "a non-empty list of positive token counts")
        if not isinstance(self.niah_depths, list) or not self.niah_depths or not all(
                _is_number(d) and 0 <= d <= 1 for d in self.niah_depths):
            raise bad("niah_depths", "a non-empty list of fractions in [0, 1]")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"one of {', '.join(DTYPES)}")
        from headlab.core.inputs import check_device

        try:
            check_device(self.device) if isinstance(self.device, str) else None
        except HeadlabError as e:
            raise HeadlabError(f"{where(source, None, 'device')}: {e}") from None
        if not isinstance(self.device, str):
            raise bad("device", "a device name such as cpu or cuda")
        self._check_finetune(source)

    def _check_finetune(self, source: str) -> None:
        """The fine-tune settings as the fine-tune stage will read them: a typo fails now, not after the data
        stages have run."""
        from headlab.experiments.finetune import FinetuneConfig

        if not isinstance(self.finetune, dict) or not all(isinstance(k, str) for k in self.finetune):
            raise HeadlabError(f"{where(source, None, 'finetune')} must be a mapping of fine-tune settings")
        reserved = {"model", "data", "out", "context_length", "seed", "merge"} & set(self.finetune)
        if reserved:
            raise HeadlabError(f"{where(source, None, 'finetune.' + sorted(reserved)[0])} is set by the study "
                               "itself")
        try:
            cfg = FinetuneConfig(model="", data="", out="", **self.finetune)
        except TypeError:
            known = {f.name for f in dataclasses.fields(FinetuneConfig)}
            unknown = sorted(set(self.finetune) - known)
            raise HeadlabError(f"{where(source, None, 'finetune.' + unknown[0])} is not a fine-tune setting") \
                from None
        try:
            cfg.check()
        except HeadlabError as e:
            message = str(e).replace("finetune: field '", "field 'finetune.")
            raise HeadlabError(f"{source}: {message}") from None

    @property
    def models(self) -> list[str]:
        """Every fine-tuned variant, the real one first."""
        return [REAL, *self.variants]

    def to_dict(self) -> dict:
        return asdict(self)


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
