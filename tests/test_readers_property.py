"""Property-based cases for the readers at the roots: whatever bytes a file holds, reading it returns a value
or raises HeadlabError (one line, located) - never another exception - and valid content round-trips."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
import yaml  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from headlab.core.errors import HeadlabError  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# Bytes that look like the formats: fragments of JSON and YAML syntax, other scripts, invalid UTF-8.
tokens = st.sampled_from([b"{", b"}", b"[", b"]", b":", b",", b'"', b"\n", b" ", b"- ", b"tasks", b"seed",
                          b"finetune", b"lr", b"1", b"-5", b"nan", b".inf", b"null", b"\xff", b"\xe9", b"\xc3\xa9",
                          b"\\u00", b"&a", b"*a", b"!!python/object", b"\t", b"\x00", b"0-0", b"05-00", b"\xd9\xa5"])
noise = st.lists(tokens, max_size=30).map(b"".join) | st.binary(max_size=60)


def _file(data: bytes, suffix: str) -> Path:
    folder = Path(tempfile.mkdtemp())
    path = folder / f"f{suffix}"
    path.write_bytes(data)
    return path


def _only_headlab_errors(fn, *args):
    try:
        return fn(*args)
    except HeadlabError as e:
        assert "\n" not in str(e)
        return None


@SETTINGS
@given(noise)
def test_read_json_never_crashes(data):
    from headlab.core.io import read_json

    _only_headlab_errors(read_json, _file(data, ".json"))


@SETTINGS
@given(json_values)
def test_read_json_round_trips(value):
    from headlab.core.io import read_json

    assert read_json(_file(json.dumps(value).encode(), ".json")) == value


@SETTINGS
@given(st.lists(noise, max_size=5))
def test_iter_jsonl_never_crashes(lines):
    from headlab.core.io import iter_jsonl

    _only_headlab_errors(lambda p: list(iter_jsonl(p)), _file(b"\n".join(lines), ".jsonl"))


@SETTINGS
@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=3), max_size=5))
def test_iter_jsonl_round_trips_with_line_numbers(records):
    from headlab.core.io import iter_jsonl

    path = _file("".join(json.dumps(r) + "\n\n" for r in records).encode(), ".jsonl")
    assert list(iter_jsonl(path)) == [(2 * i + 1, r) for i, r in enumerate(records)]


@SETTINGS
@given(st.binary(max_size=40), st.binary(min_size=1, max_size=40))
def test_non_utf8_is_located_at_its_first_bad_byte(good, bad):
    from headlab.core.inputs import read_text

    data = good + bad
    try:
        data.decode("utf-8")
        return
    except UnicodeDecodeError as e:
        first = e.start
    with pytest.raises(HeadlabError, match=rf"not UTF-8 text \(byte {first}\)$"):
        read_text(_file(data, ".txt"))


@SETTINGS
@given(noise)
def test_study_config_never_crashes(data):
    from headlab.study.config import build_config

    _only_headlab_errors(build_config, "quick", _file(data, ".yaml"))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["tasks", "seed", "top_k", "finetune", "niah_lengths", "niah_depths",
                                        "device", "dtype", "variants", "real_data", "length", "base_model"]),
                       json_values, max_size=4))
@example({"device": "\n"})  # found by hypothesis: a device name's newline went into the message
def test_study_config_with_wrong_types_is_one_line(values):
    from headlab.study.config import build_config

    _only_headlab_errors(build_config, "quick", _file(yaml.safe_dump(values).encode(), ".yaml"))


@SETTINGS
@given(noise)
def test_niah_spec_never_crashes(data):
    from headlab.data.niah import load_niah_spec

    _only_headlab_errors(load_niah_spec, _file(data, ".yaml"), 4096)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["haystack", "needles", "lengths", "depths"]), json_values, max_size=4))
def test_niah_spec_with_wrong_types_is_one_line(values):
    from headlab.data.niah import load_niah_spec

    _only_headlab_errors(load_niah_spec, _file(json.dumps(values).encode(), ".json"), 4096)


@SETTINGS
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=4) | json_values)
def test_head_score_files_never_crash(value):
    from headlab.mech.heads import load_scores

    scores = _only_headlab_errors(load_scores, _file(json.dumps(value).encode(), ".json"))
    if scores is not None:  # what is accepted is canonical: one name per head
        assert all(name == f"{int(a)}-{int(b)}" for name in scores for a, b in [name.split("-")])
