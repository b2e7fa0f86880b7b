"""Probes from a file: a JSONL file of text or token probes, or a needle-in-a-haystack spec (.json/.yaml)."""

from __future__ import annotations

from pathlib import Path

from headlab.core.errors import HeadlabError
from headlab.core.io import iter_jsonl
from headlab.data.niah import load_niah_spec, niah_probes
from headlab.data.probes import Probe, probe_from_record


def load_probes(path: str | Path, tokenizer, max_length: int | None = None,
                max_positions: int | None = None) -> list[Probe]:
    """Probes from a JSONL file (text or token probes), or from a needle-in-a-haystack spec (.json/.yaml)
    whose lengths must not exceed `max_length` (checked before the haystack is tokenized)."""
    path = Path(path)
    if path.suffix in (".json", ".yaml", ".yml"):
        spec = load_niah_spec(path, max_length, max_positions)
        try:
            return niah_probes(spec, tokenizer)
        except HeadlabError as e:  # a needle not found names its probe; name the spec too, once
            raise (e if str(e).startswith(str(path)) else HeadlabError(f"{path}: {e}")) from None
    probes = [probe_from_record(obj, tokenizer, path, lineno, max_positions) for lineno, obj in iter_jsonl(path)]
    if not probes:
        raise HeadlabError(f"{path}: no probes in file")
    return probes
