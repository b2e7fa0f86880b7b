"""headlab: attention-head science for causal language models.

The public API, importable from the top package (docs/api.md has a worked example):

    import headlab
    model, tokenizer = headlab.load_model("meta-llama/Llama-3.1-8B-Instruct", device="cuda", dtype="bfloat16")
    result = headlab.detect_retrieval_heads(model, tokenizer, headlab.load_probes("niah.yaml", tokenizer))

Names resolve on first use (PEP 562), so `import headlab` stays cheap and a command that needs only the data
layer never imports torch's model code. Inside the package, modules import from where a name lives, never from
here (tests/test_public_api.py checks both).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Public name -> (module, name there). Grouped by layer, bottom to top.
_API: dict[str, tuple[str, str]] = {
    # errors and statistics
    "HeadlabError": ("headlab.core.errors", "HeadlabError"),
    "mean_interval": ("headlab.core.stats", "mean_interval"),
    "paired_difference": ("headlab.core.stats", "paired_difference"),
    # loading a model and the seam
    "load_model": ("headlab.model.loading", "load_model"),
    "load_tokenizer": ("headlab.model.loading", "load_tokenizer"),
    "inspect": ("headlab.model.loading", "inspect"),
    "attach_adapter": ("headlab.model.loading", "attach_adapter"),
    "default_model_dir": ("headlab.model.loading", "default_model_dir"),
    "HeadGeometry": ("headlab.model.geometry", "HeadGeometry"),
    "head_geometry": ("headlab.model.geometry", "head_geometry"),
    "Seam": ("headlab.model.seam", "Seam"),
    # data: probes, synthetic tasks, metrics
    "Probe": ("headlab.data.probes", "Probe"),
    "text_probe": ("headlab.data.probes", "text_probe"),
    "load_probes": ("headlab.data.probe_files", "load_probes"),
    "toy_niah_probes": ("headlab.data.world_niah", "default_probes"),
    "GenConfig": ("headlab.data.tasks", "GenConfig"),
    "generate_examples": ("headlab.data.tasks", "generate_examples"),
    "exact_match": ("headlab.data.metrics", "exact_match"),
    "token_f1": ("headlab.data.metrics", "token_f1"),
    "citation_prf": ("headlab.data.metrics", "citation_prf"),
    # head sets and interventions
    "load_scores": ("headlab.mech.heads", "load_scores"),
    "mean_scores": ("headlab.mech.heads", "mean_scores"),
    "select_heads": ("headlab.mech.heads", "select_heads"),
    "random_heads": ("headlab.mech.heads", "random_heads"),
    "knockout": ("headlab.mech.interventions", "knockout"),
    "patch_from_model": ("headlab.mech.interventions", "patch_from_model"),
    "patch_from_input": ("headlab.mech.interventions", "patch_from_input"),
    "greedy_generate": ("headlab.mech.generate", "greedy_generate"),
    # head detection and the experiments built on it
    "DetectConfig": ("headlab.experiments.detect", "DetectConfig"),
    "detect_retrieval_heads": ("headlab.experiments.detect", "detect_retrieval_heads"),
    "EvalConfig": ("headlab.experiments.evaluate", "EvalConfig"),
    "evaluate_examples": ("headlab.experiments.evaluate", "evaluate_examples"),
    "KnockoutConfig": ("headlab.experiments.knockout", "KnockoutConfig"),
    "run_knockout": ("headlab.experiments.knockout", "run_knockout"),
    "PatchConfig": ("headlab.experiments.patching", "PatchConfig"),
    "run_patching": ("headlab.experiments.patching", "run_patching"),
    "compare_head_files": ("headlab.experiments.compare", "compare_head_files"),
    # the head atlas: every method's settings and library function, and agreement between methods
    "MassConfig": ("headlab.experiments.attention_mass", "MassConfig"),
    "attention_mass_heads": ("headlab.experiments.attention_mass", "attention_mass_heads"),
    "PatternConfig": ("headlab.experiments.patterns", "PatternConfig"),
    "pattern_scores": ("headlab.experiments.patterns", "pattern_scores"),
    "QueryFocusedConfig": ("headlab.experiments.query_focused", "QueryFocusedConfig"),
    "query_inputs": ("headlab.experiments.query_focused", "query_inputs"),
    "query_focused_scores": ("headlab.experiments.query_focused", "query_focused_scores"),
    "DuoConfig": ("headlab.experiments.duo_gates", "DuoConfig"),
    "train_gates": ("headlab.experiments.duo_gates", "train_gates"),
    "method_agreement": ("headlab.experiments.agreement", "agreement"),
    "NiahSweepConfig": ("headlab.experiments.niah_sweep", "NiahSweepConfig"),
    "niah_sweep": ("headlab.experiments.niah_sweep", "niah_sweep"),
    "FinetuneConfig": ("headlab.experiments.finetune", "FinetuneConfig"),
    "finetune": ("headlab.experiments.finetune", "finetune"),
    # LoFiT (prefixed where a bare name would clash with the head-set helpers above)
    "LofitSelectConfig": ("headlab.lofit.select", "SelectConfig"),
    "select_lofit_heads": ("headlab.lofit.select", "select_heads"),
    "LofitTrainConfig": ("headlab.lofit.train", "TrainConfig"),
    "train_lofit": ("headlab.lofit.train", "train"),
    "LofitAdapter": ("headlab.lofit.adapter", "LofitAdapter"),
    "load_lofit_adapter": ("headlab.lofit.adapter", "load_adapter"),
    "apply_lofit_adapters": ("headlab.lofit.adapter", "apply_adapters"),
    "merge_lofit": ("headlab.lofit.merge", "merge_into_model"),
    # the study
    "StudyConfig": ("headlab.study.config", "StudyConfig"),
    "build_study_config": ("headlab.study.config", "build_config"),
    "build_study": ("headlab.study.stages", "build_study"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'headlab' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(import_module(module), attr)
    globals()[name] = value  # resolved once; later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
