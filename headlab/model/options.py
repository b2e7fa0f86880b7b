"""Option groups that several commands share, declared once (the CLI floor turns their fields into flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headlab.core.cli_floor import opt
from headlab.core.errors import HeadlabError

DTYPES = ("float32", "bfloat16", "float16")
# Short spellings a FinetuneConfig also accepts (as TrainingArguments names its bf16/fp16 switches).
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass(kw_only=True)
class ModelOptions:
    """Which model to load and where: every command that loads one takes these (or the subset it uses)."""

    model: str | None = opt(None, help="local folder, hub id or headlab LoRA adapter folder "
                                       "(default: the shipped tiny model)")
    gguf_file: str | None = opt(None, help="a GGUF file inside the --model folder (or a path to one, then "
                                           "--model may be left out); needs the `gguf` package")
    device: str = "cpu"  # torch device: cpu, cuda, cuda:N, mps
    dtype: str = opt("float32", choices=DTYPES, help="dtype of the weights")
    attn: str = opt("sdpa", aliases=("--attn-implementation",),
                    help="attention for the model: sdpa, eager, flash_attention_2")
    trust_remote_code: bool = False  # run the Python code a hub model ships (only for models you trust)
    device_map: str | None = opt(None, help="spread a model over several devices: auto, balanced, sequential, "
                                            "or a JSON object / .json file {module: device}; replaces --device")
    max_memory: str | None = opt(None, help="memory per device for --device-map, e.g. 0=70GiB,1=70GiB,cpu=200GiB")
    allow_pickle: bool = opt(False, help="load pickle weights (pytorch_model.bin, adapter_model.bin): they can "
                                         "run code; only for files you trust")

    def __post_init__(self) -> None:
        # --gguf-file is folded into one path (DIR/F.gguf); the loader reads a .gguf path through transformers.
        if not self.gguf_file:
            return
        if not self.gguf_file.endswith(".gguf"):
            raise HeadlabError(f"--gguf-file {self.gguf_file}: expected a file ending in .gguf")
        if self.model and not Path(self.model).is_dir():
            raise HeadlabError(f"--model {self.model}: with --gguf-file, --model is the folder holding the GGUF file")
        self.model = str(Path(self.model) / self.gguf_file) if self.model else self.gguf_file
        self.gguf_file = None

    @property
    def path(self) -> str:
        """--model, or the shipped tiny model when none was given."""
        from headlab.model.loading import model_or_default

        return model_or_default(self.model)

    def placement(self) -> dict:
        """`device_map` and `max_memory` for the loaders, parsed and checked."""
        from headlab.model.placement import parse_device_map, parse_max_memory

        device_map, max_memory = parse_device_map(self.device_map), parse_max_memory(self.max_memory)
        if max_memory and device_map is None:
            raise HeadlabError("--max-memory needs --device-map (e.g. --device-map auto)")
        return {"device_map": device_map, "max_memory": max_memory}


# Subsets for commands that load less than a whole placed model.
MODEL_FIELDS = ("model", "gguf_file", "device", "dtype", "attn", "trust_remote_code", "device_map", "max_memory",
                "allow_pickle")
PLACEMENT = ("attn", "device_map", "max_memory")
ONLY_PICKLE = tuple(f for f in MODEL_FIELDS if f != "allow_pickle")
ONLY_MODEL = tuple(f for f in MODEL_FIELDS if f not in ("model", "gguf_file", "allow_pickle"))


@dataclass(kw_only=True)
class Selection:
    """Which heads of a score file are retrieval heads, and how many to print."""

    threshold: float = 0.1  # retrieval heads have mean score >= this
    top_k: int | None = None  # take the top K heads instead of a threshold
    show: int = 20  # how many heads to print
