"""Models larger than one device: a device map and memory limits for transformers/accelerate big-model loading.

    headlab detect --model meta-llama/Meta-Llama-3-70B-Instruct --device-map auto \
        --max-memory 0=75GiB,1=75GiB,cpu=200GiB --dtype bfloat16 --out runs/detect-70b

accelerate places whole decoder layers on the devices in order (and on CPU or disk when they run out),
and its hooks move activations from one layer's device to the next. Every seam computation runs inside a
layer on that layer's device; where results of several layers meet (top-1 capture, patching, LoFiT offsets)
the seam moves them (headlab/model/seam.py `input_device`, `Top1Recorder.pop`).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from headlab.core.errors import HeadlabError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_offload_dir: str | None = None


def parse_device_map(text: str | None) -> str | dict | None:
    """`auto` (or another accelerate strategy), a JSON object {module name: device}, or a .json file of one."""
    if text is None or text in STRATEGIES:
        return text
    source = text
    if text.endswith(".json"):
        if not Path(text).is_file():
            raise HeadlabError(f"--device-map: file {text} not found")
        source, text = text, Path(text).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise HeadlabError(f"--device-map: {source} is not one of {', '.join(STRATEGIES)} nor a JSON object "
                           f"({e.msg})") from None
    if not isinstance(value, dict) or not value:
        raise HeadlabError("--device-map: expected a JSON object such as '{\"model.layers.0\": 0, ...}'")
    return value


def parse_max_memory(text: str | None) -> dict | None:
    """`0=70GiB,1=70GiB,cpu=200GiB` -> {0: "70GiB", 1: "70GiB", "cpu": "200GiB"} (GPU indices as ints)."""
    if not text:
        return None
    limits: dict = {}
    for part in text.split(","):
        device, sep, size = part.strip().partition("=")
        if not sep or not device or not size:
            raise HeadlabError(f"--max-memory: '{part}' is not DEVICE=SIZE (e.g. 0=70GiB,cpu=200GiB)")
        limits[int(device) if device.isdigit() else device] = size
    return limits


def big_model_kwargs(device_map: str | dict | None, max_memory: dict | None) -> dict:
    """Keyword arguments for `from_pretrained`: empty without a device map (a plain load, then `.to(device)`)."""
    if device_map is None:
        if max_memory:
            raise HeadlabError("--max-memory needs --device-map (e.g. --device-map auto)")
        return {}
    from headlab.core.distributed import launched

    if launched():
        raise HeadlabError("--device-map under accelerate launch: every process would spread its copy over all "
                           "visible devices; use one or the other")
    # Layers that do not fit go to disk; they need a folder, private to this process and removed at exit.
    global _offload_dir
    if _offload_dir is None:
        _offload_dir = tempfile.mkdtemp(prefix="headlab-offload-")
        atexit.register(shutil.rmtree, _offload_dir, True)
    return {"device_map": device_map, "max_memory": max_memory, "offload_folder": _offload_dir}
