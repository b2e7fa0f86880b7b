"""A hostile-input campaign against every `headlab` command (issue #18): hostile cases and valid controls.

    nice -n 10 /work/main/.venv/bin/python tools/hostile_campaign.py [--only SUBSTRING] [--list] [--keep DIR]

The fixtures are built in a temp folder, valid inputs with headlab's own commands and writers. Each case is
checked as a user would see it:

- hostile: exit status 2; the last non-empty stderr line is `headlab: error: ...`, one line, naming the file
  (and line or field) or the option; no "Traceback" in stderr; the output path untouched (absent if it was
  absent, byte-identical if it existed) and no fixture file changed; no network connection attempted.
- valid control: exit 0, no traceback, and its outputs present.

Cases run in this process (`headlab.cli.main(argv)`, stdout/stderr captured, any escaping exception counted
as a traceback) unless they need a fresh one: Ctrl-C (SIGINT -> exit 130 and one line) and an unwritable
`--out` (run as an unprivileged user when the campaign runs as root, who may write anywhere).

A summary table by command x class follows; the exit status is 1 if any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MEMORY_LIMIT = 12 << 30  # bytes of address space for the campaign process


@dataclass
class Case:
    id: str
    command: str  # "detect", "heads import", ...
    cls: str  # the class of bad input (or "valid")
    argv: str  # template: {name} are fixture paths; {out} a fresh path (a folder), {out.jsonl} a fresh file
    names: tuple[str, ...] = ()  # hostile: fragments the one line must hold; valid: files under the output
    target: str = "out"  # the placeholder whose path is the output location to check
    valid: bool = False
    mode: str = "inproc"  # inproc | subprocess | sigint | unprivileged
    tolerate_success: bool = False  # huge-but-harmless numbers: a clean refusal or a whole result both pass
    timeout_s: int = 300  # a hostile case that is accepted may start real work; it must still end


@dataclass
class Outcome:
    case: Case
    rc: int | None
    stderr: str
    seconds: float
    failures: list[str] = field(default_factory=list)  # "traceback", "accepted", "message", "wrote", "network"


# ---- fixtures ---------------------------------------------------------------------------------------------

LATIN1 = b"caf\xe9 cr\xe8me"
BINARY = bytes(range(256)) * 4


def _cli(argv: list[str]) -> None:
    from headlab.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"fixture command failed: {' '.join(argv)}: {err.getvalue()}")


def _truncate(good: bytes) -> bytes:
    """Two thirds of a file, cut inside a record (a cut at a line end would leave a shorter valid file)."""
    cut = max(1, len(good) * 2 // 3)
    while cut > 1 and (good[cut - 1:cut] in (b"\n", b" ") or good[cut:cut + 1] == b"\n"):
        cut -= 1
    return good[: cut - 1] if cut > 2 else good[:1]


def build_fixtures(root: Path) -> dict[str, str]:
    """Every input file the cases name, valid ones made by headlab itself, then broken copies of them."""
    import torch

    from headlab.core.io import atomic_write_json, atomic_write_text
    from headlab.model.loading import default_model_dir

    root.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    model = Path(default_model_dir())
    f["model"] = root / "model"  # a copy: a command that wrote into the shipped one would change the package
    shutil.copytree(model, f["model"])
    m = str(f["model"])

    # Task data, NIAH specs, heads: headlab's own writers and commands.
    _cli(["data", "make", "--task", "mdqa", "--needle", "symbolic", "--haystack", "repetitive", "--n", "2",
          "--length", "160", "--doc-sentences", "0", "1", "--tokenizer", m, "--out", str(root / "data.jsonl")])
    f["data.jsonl"] = root / "data.jsonl"
    atomic_write_text(root / "text.txt", "The sky is blue. Grass is green. The sea is deep. " * 30)
    needle = {"needle": "The code is 7.", "question": "What is the code?", "answer": "7"}
    spec = {"haystack": ["text.txt"], "needles": [needle], "lengths": [96], "depths": [0.5]}
    atomic_write_json(root / "spec.json", spec)
    needles = [{"needle": f"The code is {k}.", "question": "What is the code?", "answer": str(k)} for k in range(12)]
    atomic_write_json(root / "spec-big.json", {**spec, "needles": needles, "lengths": [200],
                                               "depths": [0.0, 0.25, 0.5, 0.75, 1.0]})  # 60 probes: a Ctrl-C target
    atomic_write_text(root / "spec.yaml", "haystack: [text.txt]\nneedles:\n  - {needle: 'The code is 7.', "
                                          "question: 'What is the code?', answer: '7'}\nlengths: [96]\n"
                                          "depths: [0.5]\n")
    ids = list(range(40, 120))
    atomic_write_text(root / "probes.jsonl", json.dumps({"input_ids": ids, "needle_start": 10,
                                                          "needle_end": 14}) + "\n")
    layers, heads = 6, 8
    for k, name in enumerate(("heads.json", "heads2.json", "heads3.json")):
        atomic_write_json(root / name, {f"{la}-{h}": [((la * heads + h) * (k + 3)) % 11 / 10]
                                        for la in range(layers) for h in range(heads)})
    atomic_write_json(root / "lofit_heads.json", {"heads": ["0-0", "1-3", "4-7"]})
    atomic_write_text(root / "lofit.jsonl", "".join(json.dumps({"prompt": f"The sky is {w}. The sky is",
                                                                 "completion": f" {w}"}) + "\n"
                                                     for w in ("blue", "grey", "red", "dark")))
    # Real-dataset shapes for `data convert`.
    ctxs = [{"title": "Opera", "text": "Opera is an art form. It began in Italy.", "isgold": False},
            {"title": "Carmen", "text": "Carmen is an opera. It was written by Georges Bizet in 1875.",
             "isgold": True}]
    atomic_write_text(root / "mdqa_raw.jsonl", json.dumps({"question": "who wrote carmen", "answers": ["Bizet"],
                                                           "ctxs": ctxs}) + "\n")
    musique = {"id": "2hop__1", "question": "Where was the founder born?", "answer": "Tovesk", "answerable": True,
               "paragraphs": [{"idx": 0, "title": "A", "paragraph_text": "Acme was founded by Ivo.",
                               "is_supporting": True},
                              {"idx": 1, "title": "B", "paragraph_text": "Ivo was born in Tovesk.",
                               "is_supporting": True},
                              {"idx": 2, "title": "C", "paragraph_text": "Brask is a town.",
                               "is_supporting": False}]}
    atomic_write_text(root / "musique.jsonl", json.dumps(musique) + "\n")
    docs = [{"document_id": f"d{k}", "document_text": f"Doc {k} talks about offices. It is long.",
             "insights_included": []} for k in range(4)]
    docs[1] = {"document_id": "d1", "document_text": "Remote teams report fewer meetings per week. Fine.",
               "insights_included": ["i1"]}
    atomic_write_json(root / "summhay.json", {"topic": "Remote work", "subtopics": [{"subtopic": "P", "insights": [
        {"insight_id": "i1", "insight": "Remote teams report fewer meetings per week."}]}], "documents": docs})
    articles = []
    for t, (ctx, q, a) in enumerate([("Lake Orvin lies in the hills. Fishermen catch trout there.",
                                      "What do fishermen catch?", "trout"),
                                     ("The Copper Bell is a tavern. It opened in 1902.", "When did it open?", "1902"),
                                     ("A glass harp is played with wet fingers.", "How is it played?",
                                      "with wet fingers")]):
        articles.append({"title": f"T{t}", "paragraphs": [{"context": ctx, "qas": [
            {"id": f"q{t}", "question": q, "answers": [{"text": a, "answer_start": ctx.index(a)}]}]}]})
    atomic_write_json(root / "squad.json", {"version": "1.1", "data": articles})
    # Chain-of-thought datasets.
    atomic_write_text(root / "gsm8k.jsonl", "".join(json.dumps({"question": f"What is {k} plus 1?",
                                                                "answer": f"{k} + 1 = {k + 1}\n#### {k + 1}"}) + "\n"
                                                    for k in range(3)))
    (root / "bb" / "navigate").mkdir(parents=True)
    atomic_write_json(root / "bb" / "navigate" / "task.json", {"examples": [
        {"input": "Turn left twice. Same place?", "target_scores": {"True": 0, "False": 1}},
        {"input": "Step forward. Same place?", "target_scores": {"True": 0, "False": 1}}]})
    f["task.json"] = root / "bb" / "navigate" / "task.json"
    atomic_write_text(root / "mmlu_test.csv", "What is 2+2?,3,4,5,6,B\nWhat is 1+1?,2,3,4,5,A\n")
    atomic_write_text(root / "csqa.jsonl", json.dumps({"id": "c1", "question": {"stem": "Where is a fish?",
                      "choices": [{"label": "A", "text": "sea"}, {"label": "B", "text": "sky"}]},
                      "answerKey": "A"}) + "\n")
    atomic_write_text(root / "study.yaml", "tasks: [mdqa]\nfinetune: {steps: 2, lr: 0.001}\nseed: 0\n")
    atomic_write_text(root / "file.txt", "I am a file, not a folder\n")
    (root / "folder").mkdir()
    (root / "folder" / "keep.txt").write_text("keep me\n")

    # Outputs of headlab commands that other commands read.
    _cli(["lofit", "tune", "--model", m, "--data", str(root / "lofit.jsonl"), "--heads",
          str(root / "lofit_heads.json"), "--epochs", "1", "--out", str(root / "tuned")])
    f["adapter"] = root / "tuned" / "adapter.safetensors"
    _cli(["lofit", "tune", "--model", m, "--data", str(root / "lofit.jsonl"), "--method", "lora", "--rank", "2",
          "--epochs", "1", "--out", str(root / "tunedlora")])
    f["lora"] = root / "tunedlora" / "lora"
    _cli(["cot", "run", "--model", m, "--data", str(root / "gsm8k.jsonl"), "--limit", "2",
          "--direct-max-new-tokens", "2", "--cot-max-new-tokens", "2", "--resamples", "10",
          "--out", str(root / "cotrun")])

    # Broken copies, one per way a file breaks.
    texts = ["data.jsonl", "spec.json", "spec.yaml", "probes.jsonl", "heads.json", "lofit_heads.json",
             "lofit.jsonl", "mdqa_raw.jsonl", "musique.jsonl", "summhay.json", "squad.json", "gsm8k.jsonl",
             "mmlu_test.csv", "csqa.jsonl", "study.yaml", "text.txt"]
    (root / "bad").mkdir()
    for name in [*texts, "task.json"]:
        src = f.get(name, root / name)
        good = src.read_bytes()
        stem, suffix = name.rsplit(".", 1)
        for kind, data in (("latin1", good[: len(good) // 2] + LATIN1 + b"\n"), ("empty", b""),
                           ("truncated", _truncate(good)), ("binary", BINARY)):
            # task.json keeps its name (the loader reads the folder as the task name)
            path = root / "bad" / kind / (name if name == "task.json" else f"{stem}-{kind}.{suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            if name == "task.json":
                path = root / "bad" / kind / "nav" / "task.json"
                path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            f[f"{kind}:{name}"] = path
    # A NIAH spec whose haystack is not UTF-8 / empty / absolute / missing, and other broken specs.
    (root / "blank.txt").write_text("  \n\n ")
    (root / "latin1.txt").write_bytes(b"The sky " + LATIN1 + b". " * 40)
    for name, changes in {
        "spec-hay-latin1": {"haystack": ["latin1.txt"]}, "spec-hay-empty": {"haystack": ["blank.txt"]},
        "spec-hay-none": {"haystack": []}, "spec-hay-missing": {"haystack": ["nope/*.txt"]},
        "spec-hay-absolute": {"haystack": [str(root / "*.txt")], "lengths": [100_000_000]},
        "spec-len-huge": {"lengths": [100_000_000]}, "spec-len-neg": {"lengths": [-5]},
        "spec-len-zero": {"lengths": [0]}, "spec-len-str": {"lengths": ["long"]},
        "spec-depth-2": {"depths": [2]}, "spec-depth-nan": {"depths": [float("nan")]},
        "spec-needles-none": {"needles": []}, "spec-needle-noq": {"needles": [{"needle": "x"}]},
        "spec-needles-type": {"needles": "x"}, "spec-hay-type": {"haystack": 5},
        "spec-list": None, "spec-len-short": {"lengths": [3]},
    }.items():
        path = root / f"{name}.json"
        path.write_text(json.dumps([spec] if changes is None else {**spec, **changes}))
        f[name] = path
    (root / "spec-yaml-syntax.yaml").write_text("haystack: [text.txt]\nneedles: [\nlengths: [96]\n")
    f["spec-yaml-syntax"] = root / "spec-yaml-syntax.yaml"
    # Files with wrong field types, missing fields, out-of-range values.
    first = json.loads(f["data.jsonl"].read_text().splitlines()[0])
    bad_records = {
        "ex-noanswers": {k: v for k, v in first.items() if k != "answers"},
        "ex-answers-int": {**first, "answers": 5}, "ex-docs-str": {**first, "documents": "x"},
        "ex-gold-range": {**first, "gold_doc_ids": [99]}, "ex-list": [first],
        "ex-gold-spans-range": {**first, "gold_spans": [{"doc": 0, "start": 10**9, "end": 10**9 + 5}]},
    }
    for name, rec in bad_records.items():
        (root / f"{name}.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(rec) + "\n")
        f[name] = root / f"{name}.jsonl"
    for name, obj in {"heads-str": {"0-0": "high"}, "heads-list": [0.5], "heads-empty": {},
                      "heads-range": {"0-0": [0.5], "99-0": [0.9]}, "heads-zeros": {"05-00": [0.5], "5-0": [0.9]},
                      "heads-arabic": {"\u0665-\u0660": [0.5]}, "heads-fullwidth": {"\uff15-\uff10": [0.5]},
                      "heads-name": {"layer0": [0.5]}, "heads-nan": {"0-0": [float("nan")]},
                      "heads-neg": {"-1-0": [0.5]}, "lofit-heads-int": {"heads": 5},
                      "lofit-heads-range": {"heads": ["0-0", "99-99"]}, "lofit-heads-arabic": {"heads": ["\u0661-0"]},
                      }.items():
        (root / f"{name}.json").write_text(json.dumps(obj))
        f[name] = root / f"{name}.json"
    for name, rec in {"probe-vocab": {"input_ids": [5, 6, 100000, 7], "needle_start": 1, "needle_end": 3},
                      "probe-negid": {"input_ids": [5, -6, 7, 8], "needle_start": 1, "needle_end": 3},
                      "probe-span": {"input_ids": [5, 6, 7, 8], "needle_start": 3, "needle_end": 1},
                      "probe-span-range": {"input_ids": [5, 6, 7, 8], "needle_start": 2, "needle_end": 90},
                      "probe-ids-str": {"input_ids": "5 6 7", "needle_start": 0, "needle_end": 1},
                      "probe-floatid": {"input_ids": [5.5, 6, 7, 8], "needle_start": 1, "needle_end": 3},
                      }.items():
        (root / f"{name}.jsonl").write_text(json.dumps(rec) + "\n")
        f[name] = root / f"{name}.jsonl"
    for name, rec in {"lofit-empty-completion": {"prompt": "p", "completion": " "},
                      "lofit-metric": {"prompt": "p", "completion": "c", "metric": "vibes"},
                      "lofit-prompt-int": {"prompt": 5, "completion": "c"},
                      "lofit-unknown": {"question": "q"}}.items():
        (root / f"{name}.jsonl").write_text(json.dumps(rec) + "\n")
        f[name] = root / f"{name}.jsonl"
    for name, rec in {"gsm8k-nohash": {"question": "q", "answer": "4"},
                      "gsm8k-qint": {"question": 5, "answer": "#### 4"},
                      "gsm8k-notnum": {"question": "q", "answer": "#### lots"},
                      "csqa-labels": {"question": {"stem": "s", "choices": [{"label": "B", "text": "x"}]},
                                      "answerKey": "B"}}.items():
        (root / f"{name}.jsonl").write_text(json.dumps(rec) + "\n")
        f[name] = root / f"{name}.jsonl"
    (root / "mmlu-letter_test.csv").write_text("q,a,b,c,d,Z\n")
    f["mmlu-letter"] = root / "mmlu-letter_test.csv"
    (root / "mmlu-cols_test.csv").write_text("q,a,b\n")
    f["mmlu-cols"] = root / "mmlu-cols_test.csv"
    (root / "bb-empty" / "nav").mkdir(parents=True)
    (root / "bb-empty" / "nav" / "task.json").write_text('{"examples": []}')
    f["bb-empty"] = root / "bb-empty" / "nav" / "task.json"
    (root / "bb-input" / "nav").mkdir(parents=True)
    (root / "bb-input" / "nav" / "task.json").write_text('{"examples": [{"input": 3, "target": "1"}]}')
    f["bb-input"] = root / "bb-input" / "nav" / "task.json"
    for name, obj in {"mdqa-ctxs-str": {"question": "q", "answers": ["a"], "ctxs": "x"},
                      "mdqa-noq": {"answers": ["a"], "ctxs": ctxs},
                      "mdqa-emptygold": {"question": "q?", "answers": ["a"], "ctxs": [
                          {"title": "", "text": "", "isgold": True}, {"title": "t", "text": "x y", "isgold": False}]},
                      "musique-support": {**musique, "paragraphs": [{**musique["paragraphs"][0],
                                                                     "is_supporting": "yes"}]},
                      "musique-noid": {k: v for k, v in musique.items() if k != "id"}}.items():
        (root / f"{name}.jsonl").write_text(json.dumps(obj) + "\n")
        f[name] = root / f"{name}.jsonl"
    for name, obj in {"summhay-nosub": {"topic": "t", "documents": docs}, "summhay-list": [1, 2],
                      "squad-data-str": {"version": "1.1", "data": "x"}, "squad-noq": {"version": "1.1", "data": [
                          {"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "q"}]}]}]}}.items():
        (root / f"{name}.json").write_text(json.dumps(obj))
        f[name] = root / f"{name}.json"
    # Model folders broken in each way a download or a copy breaks them.
    for name in ("m-noconfig", "m-badconfig", "m-arrayconfig", "m-latin1config", "m-truncated", "m-garbage",
                 "m-pickle", "m-noweights", "m-badvocab"):
        shutil.copytree(f["model"], root / name)
        f[name] = root / name
    (root / "m-noconfig" / "config.json").unlink()
    (root / "m-badconfig" / "config.json").write_text("{not json")
    (root / "m-arrayconfig" / "config.json").write_text("[1, 2]")
    (root / "m-latin1config" / "config.json").write_bytes(b'{"model_type": "' + LATIN1 + b'"}')
    weights = root / "m-truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "m-garbage" / "model.safetensors").write_bytes(BINARY)
    (root / "m-pickle" / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, root / "m-pickle" / "pytorch_model.bin")
    (root / "m-noweights" / "model.safetensors").unlink()
    config = json.loads((root / "m-badvocab" / "config.json").read_text())
    (root / "m-badvocab" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": "six"}))
    (root / "m-empty").mkdir()
    f["m-empty"] = root / "m-empty"
    (root / "lora-pickle").mkdir()
    (root / "lora-pickle" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": m}))
    torch.save({"w": torch.zeros(1)}, root / "lora-pickle" / "adapter_model.bin")
    f["lora-pickle"] = root / "lora-pickle"
    shutil.copytree(f["lora"], root / "lora-badconfig")
    (root / "lora-badconfig" / "adapter_config.json").write_text("{oops")
    f["lora-badconfig"] = root / "lora-badconfig"
    (root / "adapter-truncated.safetensors").write_bytes(f["adapter"].read_bytes()[:100])
    f["adapter-truncated"] = root / "adapter-truncated.safetensors"
    (root / "adapter-garbage.safetensors").write_bytes(BINARY)
    f["adapter-garbage"] = root / "adapter-garbage.safetensors"
    # cot run folders broken for `cot report`.
    for name in ("cot-latin1", "cot-empty", "cot-truncated"):
        shutil.copytree(root / "cotrun", root / name)
        f[name] = root / name
    replies = sorted((root / "cotrun").rglob("*.jsonl"))
    rel = replies[0].relative_to(root / "cotrun") if replies else Path("results.jsonl")
    good = (root / "cotrun" / rel).read_bytes() if replies else b""
    (root / "cot-latin1" / rel).write_bytes(good[:20] + LATIN1 + b"\n")
    (root / "cot-empty" / rel).write_bytes(b"")
    (root / "cot-truncated" / rel).write_bytes(_truncate(good))
    (root / "cot-nofolder").mkdir()
    f["cot-nofolder"] = root / "cot-nofolder"
    for name in ("cotrun", "tuned", "tunedlora"):
        f[name] = root / name
    # Study configs with wrong types and values.
    for name, text in STUDY_YAML.items():
        (root / f"study-{name}.yaml").write_text(text)
        f[f"study-{name}"] = root / f"study-{name}.yaml"
    (root / "ro").mkdir()
    os.chmod(root / "ro", 0o555)
    f["ro"] = root / "ro"
    for name in ("text.txt", "file.txt", "folder", "blank.txt", "latin1.txt"):
        f[name] = root / name
    (root / "needle-in-question.jsonl").write_text(json.dumps({  # copies from the question are not retrieval
        "context": "The grass is green. The sky is blue.", "needle": "The code is 7.",
        "question": "Is it true that The code is 7.?"}) + "\n")
    # --out as a symbolic link: dangling, to a folder, to a file (nothing may be written through it)
    for name, to in (("link-dangling", root / "nowhere"), ("link-folder", root / "folder"),
                     ("link-file", root / "file.txt")):
        (root / name).symlink_to(to)
        f[name] = root / name
    for p in root.iterdir():  # the rest by file name
        f.setdefault(p.name, p)
    (root / "cwd" / "runs").mkdir(parents=True)  # so `runs/model` is a mistyped local path, not a hub id
    os.chmod(root, 0o755)  # the unprivileged cases read the fixtures as another user
    os.chmod(root.parent, 0o755)
    names = {k: str(v) for k, v in f.items()}
    (root / "fixtures.json").write_text(json.dumps(names))
    return names


STUDY_YAML = {
    "tasks-int": "tasks: 5\n", "seed-abc": "seed: abc\n", "lr-fast": "finetune: {lr: fast}\n",
    "device-tpu": "device: tpu9\n", "niah-neg": "niah_lengths: [-5]\n", "dtype-f8": "dtype: float8\n",
    "niah-huge": "niah_lengths: [100000000]\n", "depths-nan": "niah_depths: [.nan]\n",
    "dropout": "finetune: {lora_dropout: 5}\n", "unknown-key": "warp_drive: on\n",
    "ft-unknown": "finetune: {warp: 2}\n", "list": "- tasks\n- mdqa\n", "tasks-unknown": "tasks: [poetry]\n",
    "syntax": "tasks: [mdqa\nseed: 1\n", "realdata": "real_data: {mdqa: nope.jsonl}\n",
    "steps-neg": "finetune: {steps: -3}\n", "seed-neg": "seed: -1\n", "scalar": "42\n",
    "nested": "[[[[[[[[[[[[[[[[[[[[[[[[\n", "tasks-empty": "tasks: []\n",
}

# ---- the cases --------------------------------------------------------------------------------------------

# One valid argv per command; the hostile cases are variations of it.
BASE = {
    "detect": "detect --model {model} --probes {spec.json} --max-new-tokens 2 --batch-size 2 --out {out}",
    "heads show": "heads show {heads.json} --model {model}",
    "heads score": "heads score --model {model} --probes {spec.json} --max-new-tokens 2 --batch-size 2 --out {out}",
    "heads import": "heads import {heads.json} --model {model} --out {out}",
    "heads compare": "heads compare {heads.json} {heads2.json}",
    "data make": "data make --task mdqa --needle symbolic --haystack repetitive --n 2 --length 160 "
                 "--doc-sentences 0 1 --tokenizer {model} --out {out.jsonl}",
    "data convert": "data convert {mdqa_raw.jsonl} --format mdqa --out {out.jsonl}",
    "data show": "data show {data.jsonl}",
    "toy pretrain": "toy pretrain --steps 1 --batch-size 1 --pool-size 4 --max-filler 1 --out {out}",
    "toy evaluate": "toy evaluate --model {model} --lengths 64 --n 1",
    "lofit select": "lofit select --model {model} --data {lofit.jsonl} --epochs 1 --limit 2 --top-k 2 --out {out}",
    "lofit tune": "lofit tune --model {model} --data {lofit.jsonl} --heads {lofit_heads.json} --epochs 1 "
                  "--limit 2 --out {out}",
    "lofit merge": "lofit merge --model {model} --adapter {adapter} --out {out}",
    "lofit eval": "lofit eval --model {model} --data {lofit.jsonl} --adapter {adapter} --limit 2 "
                  "--max-new-tokens 2 --out {out.json}",
    "knockout": "knockout --model {model} --heads {heads.json} --data {spec.json} --k 2 --seeds 1 --curve 0 2 "
                "--limit 1 --max-new-tokens 2 --out {out}",
    "patch": "patch --source {model} --target {model} --heads {heads.json} {heads2.json} --data {spec.json} "
             "--k 2 --seeds 1 --limit 1 --max-new-tokens 2 --out {out}",
    "compare": "compare {heads2.json} {heads.json} {heads3.json} --reference {heads.json} --scores 0.1 0.5 0.9 "
               "--out {out}",
    "finetune": "finetune --model {model} --data {data.jsonl} --steps 1 --batch-size 1 --lora-rank 2 "
                "--save-steps 1 --out {out}",
    "evaluate": "evaluate --model {model} --data {data.jsonl} --max-new-tokens 2 --out {out}",
    "niah": "niah --model {model} --lengths 64 --depths 0.5 --needles 1 --max-new-tokens 2 --out {out}",
    "study": "study --config {study.yaml} --model {model} --out {out}",
    "cot run": "cot run --model {model} --data {gsm8k.jsonl} --limit 2 --direct-max-new-tokens 2 "
               "--cot-max-new-tokens 2 --resamples 10 --out {out}",
    "cot report": "cot report {cotcopy} --resamples 10",
}

# What a valid run of each command leaves (under its output path).
OUTPUTS = {
    "detect": ("retrieval_scores.json", "summary.json"),
    "heads score": ("retrieval_scores.json", "summary.json", "kv_scores.json"),
    "heads import": ("retrieval_scores.json", "summary.json"),
    "data make": ("",), "data convert": ("",), "toy pretrain": ("config.json", "model.safetensors"),
    "lofit select": ("heads.json",), "lofit tune": ("adapter.safetensors",), "lofit merge": ("config.json",),
    "lofit eval": ("",), "knockout": ("knockout.json",), "patch": ("patching.json",), "compare": ("compare.json",),
    "finetune": ("summary.json",), "evaluate": ("summary.json",), "niah": ("niah.json",),
    "cot run": ("summary.json",), "cot report": ("report.html",),
}
FILE_OUT = {"data make": "out.jsonl", "data convert": "out.jsonl", "lofit eval": "out.json"}
# A whole study, and toy pretraining (its world corpus and tokenizer), take minutes even at their smallest
# (toy pretrain --steps 1 ran past 300 s on the shared 2-core machine): their hostile cases only.
SLOW_VALID = {"study", "toy pretrain"}


def _replace(argv: str, option: str, value: str) -> str:
    """Set `option` to `value` in an argv template (replacing its current values, or appending it)."""
    tokens = argv.split()
    if option in tokens:
        i = tokens.index(option)
        j = i + 1
        while j < len(tokens) and not tokens[j].startswith("--"):
            j += 1
        return " ".join(tokens[:i] + [option, value] + tokens[j:])
    return f"{argv} {option} {value}"


def _positional(argv: str, old: str, new: str) -> str:
    return " ".join(new if t == old else t for t in argv.split())


def _out_of(command: str) -> str:
    return FILE_OUT.get(command, "out")


# Numeric options by what a bad value is. Each option's kind decides its bad values:
#   count: 0, -3, nan, a Unicode digit, a word;  nonneg: -1, nan;  positive float: 0, -1, nan, inf;
#   fraction: -0.1, 1.5, nan;  finite: nan, inf.  `huge` values must be refused or finish cleanly.
COUNT, NONNEG, POSF, FRACTION, FINITE = "count", "nonneg", "positive", "fraction", "finite"
NUMBERS: dict[str, dict[str, str]] = {
    "detect": {"--max-new-tokens": COUNT, "--batch-size": COUNT, "--seed": NONNEG, "--threshold": FINITE,
               "--top-k": COUNT, "--show": COUNT},
    "heads show": {"--threshold": FINITE, "--top-k": COUNT, "--show": COUNT},
    "heads score": {"--max-new-tokens": COUNT, "--batch-size": COUNT, "--seed": NONNEG, "--show": COUNT,
                    "--sequences": COUNT, "--length": COUNT, "--repeats": COUNT, "--steps": COUNT, "--sink": NONNEG,
                    "--recent": COUNT,
                    "--save-every": NONNEG, "--init": FRACTION, "--lr": POSF, "--induction-ratio": FRACTION,
                    "--echo-ratio": FRACTION},
    "heads import": {"--threshold": FINITE, "--top-k": COUNT},
    "heads compare": {"--threshold": FINITE, "--top-k": COUNT},
    "data make": {"--n": COUNT, "--length": COUNT, "--seed": NONNEG, "--depth": FRACTION, "--max-support": COUNT,
                  "--doc-sentences": NONNEG},
    "data convert": {"--limit": COUNT, "--max-docs": NONNEG, "--seed": NONNEG, "--docs": COUNT,
                     "--max-tokens": COUNT, "--heldout-fraction": FRACTION},
    "data show": {"--n": COUNT},
    "toy pretrain": {"--steps": COUNT, "--batch-size": COUNT, "--lr": POSF, "--warmup": NONNEG,
                     "--pool-size": COUNT, "--task-share": FRACTION, "--threads": NONNEG, "--seed": NONNEG,
                     "--max-filler": NONNEG, "--answer-weight": NONNEG},
    "toy evaluate": {"--n": COUNT, "--lengths": COUNT},
    "lofit select": {"--limit": COUNT, "--epochs": POSF, "--lr": POSF, "--batch-size": COUNT, "--beta": POSF,
                     "--l1": NONNEG, "--top-k": COUNT, "--fraction": FRACTION, "--seed": NONNEG},
    "lofit tune": {"--limit": COUNT, "--epochs": POSF, "--lr": POSF, "--batch-size": COUNT, "--rank": COUNT,
                   "--seed": NONNEG},
    "lofit merge": {"--tolerance": POSF},
    "lofit eval": {"--limit": COUNT, "--max-new-tokens": COUNT},
    "knockout": {"--k": COUNT, "--seeds": COUNT, "--seed": NONNEG, "--limit": COUNT, "--max-new-tokens": COUNT,
                 "--batch-size": COUNT, "--curve": NONNEG},
    "patch": {"--k": COUNT, "--seeds": COUNT, "--limit": COUNT, "--max-new-tokens": COUNT, "--batch-size": COUNT},
    "compare": {"--threshold": FINITE, "--top-k": COUNT},
    "finetune": {"--context-length": COUNT, "--rope-theta": POSF, "--lora-rank": COUNT, "--lora-alpha": POSF,
                 "--lora-dropout": FRACTION, "--lr": POSF, "--steps": COUNT, "--epochs": POSF,
                 "--batch-size": COUNT, "--grad-accum": COUNT, "--warmup-steps": NONNEG, "--weight-decay": NONNEG,
                 "--save-steps": COUNT, "--save-total-limit": COUNT, "--logging-steps": COUNT, "--seed": NONNEG},
    "evaluate": {"--max-new-tokens": COUNT, "--depth-bins": COUNT, "--batch-size": COUNT},
    "niah": {"--lengths": COUNT, "--depths": FRACTION, "--needles": COUNT, "--seed": NONNEG,
             "--max-new-tokens": COUNT, "--batch-size": COUNT},
    "study": {"--seed": NONNEG, "--num-cpus": COUNT, "--cpus-per-stage": COUNT},
    "cot run": {"--limit": COUNT, "--shots": NONNEG, "--direct-max-new-tokens": COUNT,
                "--cot-max-new-tokens": COUNT, "--batch-size": COUNT, "--threads": NONNEG, "--seed": NONNEG,
                "--resamples": COUNT},
    "cot report": {"--resamples": COUNT},
}
BAD_VALUES = {COUNT: ["0", "-3", "nan", "\u0665", "many"], NONNEG: ["-1", "nan"], POSF: ["0", "-1", "nan", "inf"],
              FRACTION: ["-0.1", "1.5", "nan"], FINITE: ["nan", "inf"]}
SQUAD_ONLY = {"--docs", "--max-tokens", "--heldout-fraction"}
# Huge values that must be refused in one line or finish cleanly (no traceback, no runaway).
HUGE = {"detect": ["--max-new-tokens", "--batch-size"], "evaluate": ["--max-new-tokens", "--depth-bins"],
        "lofit select": ["--limit"], "lofit tune": ["--rank"], "knockout": ["--limit", "--curve"],
        "finetune": ["--lora-rank", "--warmup-steps", "--context-length"],
        "niah": ["--lengths", "--max-new-tokens"], "toy evaluate": ["--lengths"], "lofit eval": ["--max-new-tokens"],
        "data make": ["--length"], "heads show": ["--threshold", "--show"], "cot run": ["--shots"]}
# Options that must be refused when huge (beyond the model's positions or its size).
HUGE_REFUSED = {("niah", "--lengths"), ("toy evaluate", "--lengths"), ("lofit tune", "--rank"),
                ("finetune", "--lora-rank")}

# Commands that read a model, and the option that names it.
MODEL_OPTION = {c: "--model" for c in ("detect", "heads score", "heads show", "heads import", "toy evaluate",
                                       "lofit select",
                                       "lofit tune", "lofit merge", "lofit eval", "knockout", "finetune",
                                       "evaluate", "niah", "study", "cot run")}
MODEL_OPTION["data make"] = "--tokenizer"
WEIGHTLESS = {"heads show", "heads import", "data make"}  # read the config or tokenizer only
BROKEN_MODELS = {  # fixture -> fragments of the one line
    "m-noconfig": ("m-noconfig", "config.json"), "m-badconfig": ("m-badconfig", "config.json"),
    "m-arrayconfig": ("m-arrayconfig", "config.json"), "m-latin1config": ("config.json", "UTF-8"),
    "m-truncated": ("model.safetensors",), "m-garbage": ("model.safetensors",),
    "m-pickle": ("pytorch_model.bin", "pickle"), "m-noweights": ("m-noweights",),
    "m-empty": ("m-empty",), "m-badvocab": ("m-badvocab", "num_hidden_layers"),
}
MISTYPED = {"runs-typo": "runs/model", "dot-typo": "./no/such/model", "abs-typo": "{root}/nope/model",
            "bare-typo": "modle"}

# Input files per command: (option or positional placeholder, fixture name). Each gets the file classes.
FILE_SLOTS: dict[str, list[tuple[str, str]]] = {
    "detect": [("--probes", "spec.json"), ("--probes", "spec.yaml"), ("--probes", "probes.jsonl")],
    "heads score": [("--probes", "spec.json")],
    "heads show": [("{heads.json}", "heads.json")], "heads import": [("{heads.json}", "heads.json")],
    "heads compare": [("{heads2.json}", "heads.json")],
    "data convert": [("{mdqa_raw.jsonl}", "mdqa_raw.jsonl"), ("musique", "musique.jsonl"),
                     ("summhay", "summhay.json"), ("squad", "squad.json")],
    "data show": [("{data.jsonl}", "data.jsonl")],
    "lofit select": [("--data", "lofit.jsonl")], "lofit tune": [("--data", "lofit.jsonl"),
                                                               ("--heads", "lofit_heads.json")],
    "lofit eval": [("--data", "lofit.jsonl")],
    "knockout": [("--heads", "heads.json"), ("--data", "spec.json"), ("--data", "data.jsonl")],
    "patch": [("--data", "spec.yaml")], "compare": [("{heads3.json}", "heads.json")],
    "finetune": [("--data", "data.jsonl")], "evaluate": [("--data", "data.jsonl")], "niah": [("--spec", "spec.json")],
    "study": [("--config", "study.yaml")],
    "cot run": [("--data", "gsm8k.jsonl"), ("--data", "task.json"), ("--data", "mmlu_test.csv"),
                ("--data", "csqa.jsonl")],
}
FILE_CLASS = {"latin1": "non-utf8", "empty": "empty/truncated/binary", "truncated": "empty/truncated/binary",
              "binary": "empty/truncated/binary"}


def _with_file(command: str, slot: str, path_placeholder: str) -> str:
    base = BASE[command]
    if slot.startswith("{"):
        return _positional(base, slot, path_placeholder)
    if command == "data convert":  # another format
        return f"data convert {path_placeholder} --format {slot} --out {{out.jsonl}}"
    if command == "niah":
        return _replace(base.replace(" --lengths 64 --depths 0.5 --needles 1", ""), slot, path_placeholder)
    return _replace(base, slot, path_placeholder)


def _fragment(fixture: str) -> str:
    return Path(fixture).name if "/" in fixture else fixture


def hostile_cases() -> list[Case]:
    cases: list[Case] = []

    def add(command: str, cls: str, cid: str, argv: str, names: tuple[str, ...], **kw) -> None:
        if command == "study":  # an accepted study runs for minutes: a minute tells enough
            kw.setdefault("timeout_s", 60)
        cases.append(Case(f"{command.replace(' ', '-')}:{cid}", command, cls, argv, names, **kw))

    # -- files: non-UTF-8, empty, truncated, binary
    for command, slots in FILE_SLOTS.items():
        for slot, name in slots:
            stem, suffix = name.rsplit(".", 1)
            for kind, cls in FILE_CLASS.items():
                fixture = f"{kind}:{name}"
                shown = "task.json" if name == "task.json" else f"{stem}-{kind}.{suffix}"
                if name == "spec.yaml" and kind == "empty" and command == "patch":
                    pass
                names = (shown, "UTF-8") if kind == "latin1" else (shown,)
                add(command, cls, f"{kind}-{stem}{'-' + slot if not slot.startswith('{') else ''}",
                    _with_file(command, slot, "{" + fixture + "}"), names, target=_out_of(command))
    # non-UTF-8 haystack, tokenizer, model config, cot run folder
    for command, opt in (("detect", "--probes"), ("knockout", "--data"), ("niah", "--spec"), ("patch", "--data")):
        add(command, "non-utf8", "haystack-latin1", _with_file(command, opt, "{spec-hay-latin1}"),
            ("latin1.txt", "UTF-8"))
    for name in ("cot-latin1", "cot-empty", "cot-truncated"):
        add("cot report", "non-utf8" if "latin1" in name else "empty/truncated/binary", name,
            _positional(BASE["cot report"], "{cotcopy}", "{" + name + "}"), (name,), target=name)
    add("cot report", "fields", "not-a-run", _positional(BASE["cot report"], "{cotcopy}", "{cot-nofolder}"),
        ("cot-nofolder",), target="cot-nofolder")
    add("cot report", "fields", "missing-folder", _positional(BASE["cot report"], "{cotcopy}", "{root}/nope"),
        ("nope",))
    add("data make", "non-utf8", "tokenizer-latin1", _replace(BASE["data make"], "--tokenizer",
                                                               "{latin1:text.txt}"), ("text-latin1.txt",),
        target="out.jsonl")
    add("data make", "empty/truncated/binary", "tokenizer-binary",
        _replace(BASE["data make"], "--tokenizer", "{binary:text.txt}"), ("text-binary.txt",), target="out.jsonl")

    # -- wrong field types, missing fields, out-of-range values in files
    field_files = {
        "data show": [("{data.jsonl}", n) for n in ("ex-noanswers", "ex-answers-int", "ex-docs-str", "ex-gold-range",
                                                     "ex-list", "ex-gold-spans-range")],
        "evaluate": [("--data", n) for n in ("ex-noanswers", "ex-answers-int", "ex-gold-range", "ex-list")],
        "finetune": [("--data", n) for n in ("ex-noanswers", "ex-docs-str", "ex-gold-spans-range")],
        "knockout": [("--data", n) for n in ("ex-answers-int", "probe-vocab", "probe-span", "spec-needle-noq")],
        "lofit select": [("--data", n) for n in ("lofit-empty-completion", "lofit-metric", "lofit-prompt-int",
                                                 "lofit-unknown", "ex-noanswers")],
        "lofit eval": [("--data", n) for n in ("lofit-metric", "lofit-unknown")],
        "lofit tune": [("--heads", n) for n in ("lofit-heads-int", "lofit-heads-range", "lofit-heads-arabic")],
        "cot run": [("--data", n) for n in ("gsm8k-nohash", "gsm8k-qint", "gsm8k-notnum", "csqa-labels",
                                            "mmlu-letter", "mmlu-cols", "bb-empty", "bb-input")],
        "data convert": [("{mdqa_raw.jsonl}", n) for n in ("mdqa-ctxs-str", "mdqa-noq", "mdqa-emptygold")]
        + [("musique", n) for n in ("musique-support", "musique-noid")]
        + [("summhay", n) for n in ("summhay-nosub", "summhay-list")]
        + [("squad", n) for n in ("squad-data-str", "squad-noq")],
        "detect": [("--probes", n) for n in ("probe-vocab", "probe-negid", "probe-span", "probe-span-range",
                                             "probe-ids-str", "probe-floatid", "spec-depth-2", "spec-depth-nan",
                                             "spec-len-str", "spec-needles-none", "spec-needle-noq",
                                             "spec-needles-type", "spec-hay-type", "spec-list", "spec-yaml-syntax",
                                             "spec-len-zero", "spec-len-short")],
        "niah": [("--spec", n) for n in ("spec-depth-2", "spec-needles-none", "spec-len-str", "spec-yaml-syntax")],
        "patch": [("--data", n) for n in ("probe-vocab", "ex-noanswers")],
    }
    for command, slots in field_files.items():
        for slot, name in slots:
            cls = "token-ids" if name.startswith("probe-") and ("vocab" in name or "id" in name) else "fields"
            if name.startswith("spec-"):
                cls = "niah-spec"
            expect = Path(name).name
            shown = {"bb-empty": "task.json", "bb-input": "task.json", "mmlu-letter": "mmlu-letter_test.csv",
                     "mmlu-cols": "mmlu-cols_test.csv"}.get(name, expect)
            add(command, cls, name, _with_file(command, slot, "{" + name + "}"), (shown,), target=_out_of(command))
    # NIAH specs: huge, negative and absolute lengths, empty and missing haystacks
    for command, opt in (("detect", "--probes"), ("knockout", "--data"), ("niah", "--spec"), ("patch", "--data")):
        for name in ("spec-len-huge", "spec-len-neg", "spec-hay-empty", "spec-hay-none", "spec-hay-missing",
                     "spec-hay-absolute"):
            add(command, "niah-spec", name, _with_file(command, opt, "{" + name + "}"), (name,))
    # -- head names
    for command, slot in (("heads show", "{heads.json}"), ("heads import", "{heads.json}"),
                          ("heads compare", "{heads2.json}"), ("knockout", "--heads"), ("compare", "{heads3.json}"),
                          ("patch", None)):
        for name in ("heads-zeros", "heads-arabic", "heads-fullwidth", "heads-name", "heads-str", "heads-list",
                     "heads-nan", "heads-neg", "heads-range", "heads-empty"):
            if command == "patch":
                argv = BASE["patch"].replace("{heads2.json}", "{" + name + "}")
            else:
                argv = _with_file(command, slot, "{" + name + "}")
            if name == "heads-range" and command in ("heads compare", "compare"):
                continue  # no model to hold the heads against: an index beyond it is not knowable
            if name == "heads-empty" and command in ("heads show", "heads compare", "compare"):
                continue  # an empty score file is a valid (if dull) input to a read-only summary
            add(command, "head-names", name, argv, (name,), target=_out_of(command))

    # -- model folders: broken, pickle, mistyped
    for command, opt in MODEL_OPTION.items():
        for name, names in BROKEN_MODELS.items():
            if command in WEIGHTLESS and name in ("m-truncated", "m-garbage", "m-pickle", "m-noweights"):
                continue  # these read no weights
            if command == "data make" and name in ("m-badvocab", "m-arrayconfig", "m-noconfig"):
                continue  # a tokenizer folder needs no model config
            if command == "data make":
                names = (name,)
            add(command, "model-folder", name, _replace(BASE[command], opt, "{" + name + "}"), names,
                target=_out_of(command))
        for cid, path in MISTYPED.items():
            add(command, "mistyped-path", cid, _replace(BASE[command], opt, path),
                (path.replace("{root}/", "").removeprefix("./"), "not found"), target=_out_of(command))
    for source in ("--source", "--target"):
        for name in ("m-noconfig", "m-truncated", "m-pickle", "m-badconfig"):
            add("patch", "model-folder", f"{source[2:]}-{name}", _replace(BASE["patch"], source, "{" + name + "}"),
                BROKEN_MODELS[name])
        add("patch", "mistyped-path", f"{source[2:]}-typo", _replace(BASE["patch"], source, "runs/model"),
            ("runs/model", "not found"))
    add("evaluate", "model-folder", "lora-pickle", _replace(BASE["evaluate"], "--model", "{lora-pickle}"),
        ("adapter_model.bin", "pickle"))
    add("evaluate", "model-folder", "lora-badconfig", _replace(BASE["evaluate"], "--model", "{lora-badconfig}"),
        ("adapter_config.json",))
    add("lofit eval", "model-folder", "lora-pickle",
        BASE["lofit eval"].replace("--adapter {adapter}", "--lora {lora-pickle}"), ("adapter_model.bin", "pickle"),
        target="out.json")
    for name in ("adapter-truncated", "adapter-garbage"):
        for command in ("lofit merge", "lofit eval"):
            add(command, "model-folder", name, _replace(BASE[command], "--adapter", "{" + name + "}"),
                (f"{name}.safetensors",), target=_out_of(command))
    add("lofit merge", "model-folder", "adapter-missing",
        _replace(BASE["lofit merge"], "--adapter", "nope.safetensors"), ("nope.safetensors",))
    add("toy pretrain", "model-folder", "init-truncated", BASE["toy pretrain"] + " --init {m-truncated}",
        ("model.safetensors",))
    add("toy pretrain", "model-folder", "init-pickle", BASE["toy pretrain"] + " --init {m-pickle}",
        ("pytorch_model.bin",))
    add("toy pretrain", "mistyped-path", "init-typo", BASE["toy pretrain"] + " --init runs/model",
        ("runs/model", "not found"))

    # -- --out that cannot be written
    for command in OUTPUTS:
        if command == "cot report":
            continue  # writes into its run folder
        if "{out}" in BASE[command]:
            add(command, "out", "out-is-file", BASE[command].replace("{out}", "{file.txt}"), ("file.txt",),
                target="file.txt")
            add(command, "out", "out-under-file", BASE[command].replace("{out}", "{file.txt}/sub"), ("file.txt",),
                target="file.txt")
            add(command, "out", "out-readonly", BASE[command].replace("{out}", "{ro}/run"), ("ro",),
                target="ro", mode="unprivileged")
        else:
            placeholder = "{" + FILE_OUT[command] + "}"
            add(command, "out", "out-is-folder", BASE[command].replace(placeholder, "{folder}"), ("folder",),
                target="folder")
            add(command, "out", "out-under-file", BASE[command].replace(placeholder, "{file.txt}/x.jsonl"),
                ("file.txt",), target="file.txt")
            add(command, "out", "out-readonly", BASE[command].replace(placeholder, "{ro}/x.jsonl"), ("ro",),
                target="ro", mode="unprivileged")
    add("study", "out", "out-is-file", BASE["study"].replace("{out}", "{file.txt}"), ("file.txt",),
        target="file.txt")
    add("detect", "fields", "needle-only-in-question",
        _replace(BASE["detect"], "--probes", "{needle-in-question.jsonl}"),
        ("needle-in-question.jsonl:1", "needle", "not found in the context"))
    # -- --out a symbolic link (issue #21): refused in one line, nothing written through it
    for command in [c for c in (*OUTPUTS, "study") if "{out}" in BASE[c]]:
        for link in ("link-dangling", "link-folder", "link-file"):
            add(command, "links", f"out-{link}", BASE[command].replace("{out}", "{" + link + "}"),
                (link, "symbolic link"), target=link)
    add("finetune", "out", "resume-file", BASE["finetune"].replace("{out}", "{file.txt}") + " --resume",
        ("file.txt",), target="file.txt")
    add("cot run", "out", "cache-is-file", BASE["cot run"] + " --cache {file.txt}", ("file.txt",))

    # -- numbers
    for command, options in NUMBERS.items():
        for option, kind in options.items():
            base = BASE[command]
            if command == "data convert" and option in SQUAD_ONLY:
                base = "data convert {squad.json} --format squad --out {out.jsonl}"
            for value in BAD_VALUES[kind]:
                argv = _replace(base, option, value)
                if option == "--doc-sentences":
                    argv = _replace(BASE[command], option, f"{value} 1")
                # the option, or the field it sets (`--docs` -> 'n_docs')
                add(command, "numbers", f"{option[2:]}={value}", argv, (f"{option}|{option[2:].replace('-', '_')}",),
                    target=_out_of(command))
        for option in HUGE.get(command, []):
            value = "1e12" if NUMBERS[command][option] == FINITE else "100000000"
            refused = (command, option) in HUGE_REFUSED
            base = BASE[command] + (" --method lora" if option == "--rank" else "")
            add(command, "huge-numbers", f"{option[2:]}={value}", _replace(base, option, value),
                (), target=_out_of(command), tolerate_success=not refused, timeout_s=120)
    add("compare", "numbers", "scores-nan-inf", _replace(BASE["compare"], "--scores", "nan inf 1"), ("--scores",))
    add("compare", "numbers", "scores-count", _replace(BASE["compare"], "--scores", "0.1 0.2"), ("--scores",))
    add("knockout", "numbers", "curve-beyond-heads", _replace(BASE["knockout"], "--curve", "50"), ("curve",))
    add("knockout", "numbers", "k-beyond-heads", _replace(BASE["knockout"], "--k", "500"), ("k",))
    add("lofit select", "numbers", "top-k-beyond-heads", _replace(BASE["lofit select"], "--top-k", "500"),
        ("top_k",), tolerate_success=True)  # documented: keeps every head when asked for more

    # -- devices and dtypes
    import torch

    for command in [c for c, opts in _options_by_command().items() if "--device" in opts]:
        values = ["bogus", "tpu9", "cuda:7"] + ([] if torch.cuda.is_available() else ["cuda"])
        for value in values:
            add(command, "device", f"device={value}", _replace(BASE[command], "--device", value), ("--device",),
                target=_out_of(command))
        if command != "study":
            add(command, "device", "dtype=float8", _replace(BASE[command], "--dtype", "float8"), ("--dtype",),
                target=_out_of(command))
    add("study", "device", "dtype=float8", _replace(BASE["study"], "--dtype", "float8"), ("dtype",))
    add("knockout", "device", "attn=bogus", _replace(BASE["knockout"], "--attn", "bogus"), ("attn",))
    add("detect", "device", "attn=bogus", _replace(BASE["detect"], "--attn", "bogus"), ("attn",))

    # -- study configs
    for name in STUDY_YAML:
        add("study", "study-config", name, _replace(BASE["study"], "--config", "{study-" + name + "}"),
            (f"study-{name}.yaml",))
    add("study", "study-config", "preset-unknown", BASE["study"].replace("--config {study.yaml}", "--preset huge"),
        ("preset",))

    # -- rope scaling
    for cid, value in (("rope-warp", '{"rope_type":"warp"}'), ("rope-notjson", "{warp"),
                       ("rope-list", "[1,2]"), ("rope-factor-neg", '{"rope_type":"linear","factor":-2}'),
                       ("rope-factor-str", '{"rope_type":"linear","factor":"big"}')):
        add("finetune", "rope-scaling", cid, BASE["finetune"] + f" --context-length 512 --rope-scaling {value}",
            ("--rope-scaling|rope_scaling",))

    # -- Ctrl-C in a fresh process
    for command, argv in (("toy pretrain", "toy pretrain --steps 100000 --out {out}"),
                          ("finetune", _replace(BASE["finetune"], "--steps", "100000")),
                          ("niah", "niah --model {model} --lengths 200 --needles 50 --max-new-tokens 30 --out {out}"),
                          ("detect", _replace(_replace(_replace(BASE["detect"], "--probes", "{spec-big.json}"),
                                                       "--max-new-tokens", "50"), "--batch-size", "1"))):
        add(command, "sigint", "ctrl-c", argv, ("interrupted",), mode="sigint")
    return cases


def _options_by_command() -> dict[str, set[str]]:
    from headlab.cli import build_parser

    found: dict[str, set[str]] = {}

    def walk(parser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
        found[prefix] = set(parser._option_string_actions)

    walk(build_parser(), "")
    return found


def valid_cases() -> list[Case]:
    cases = []

    def add(cid: str, command: str, argv: str, outputs: tuple[str, ...] = (), target: str = "out") -> None:
        cases.append(Case(f"{command.replace(' ', '-')}:{cid}", command, "valid", argv, outputs, target, valid=True))

    for command, argv in BASE.items():
        if command in SLOW_VALID:
            continue
        add("base", command, argv, OUTPUTS.get(command, ()), "cotcopy" if command == "cot report" else _out_of(command))
    add("token-probes", "detect", _replace(BASE["detect"], "--probes", "{probes.jsonl}"), OUTPUTS["detect"])
    add("yaml-spec", "detect", _replace(BASE["detect"], "--probes", "{spec.yaml}"), OUTPUTS["detect"])
    add("out-exists", "detect", BASE["detect"].replace("{out}", "{folder}"), ("keep.txt", "summary.json"),
        target="folder")
    add("top-k", "heads show", BASE["heads show"] + " --top-k 3")
    add("threshold-high", "heads show", BASE["heads show"] + " --threshold 2")
    add("no-model", "heads import", BASE["heads import"].replace(" --model {model}", ""), OUTPUTS["heads import"])
    add("citation", "data make", BASE["data make"].replace("--task mdqa", "--task citation"), ("",), "out.jsonl")
    for fmt, name in (("musique", "musique.jsonl"), ("summhay", "summhay.json"), ("squad", "squad.json")):
        docs = " --docs 2" if fmt == "squad" else ""  # the fixture has three articles
        add(fmt, "data convert", f"data convert {{{name}}} --format {fmt}{docs} --out {{out.jsonl}}", ("",),
            "out.jsonl")
    add("full", "data show", BASE["data show"] + " --full --n 1")
    add("lora", "lofit tune", BASE["lofit tune"].replace("--heads {lofit_heads.json}", "--method lora --rank 2"),
        ("lora",))
    add("lora", "lofit eval", BASE["lofit eval"].replace("--adapter {adapter}", "--lora {lora}"), ("",), "out.json")
    add("task-data", "knockout", _replace(BASE["knockout"], "--data", "{data.jsonl}"), OUTPUTS["knockout"])
    add("token-probes", "knockout", _replace(BASE["knockout"], "--data", "{probes.jsonl}"), OUTPUTS["knockout"])
    add("no-scores", "compare", BASE["compare"].replace(" --scores 0.1 0.5 0.9", ""), OUTPUTS["compare"])
    add("spec", "niah", "niah --model {model} --spec {spec.yaml} --max-new-tokens 2 --out {out}", OUTPUTS["niah"])
    for name in ("task.json", "mmlu_test.csv", "csqa.jsonl"):
        add(name.split(".")[0].split("_")[0], "cot run", _replace(BASE["cot run"], "--data", "{" + name + "}"),
            OUTPUTS["cot run"])
    add("zero-seed", "knockout", _replace(BASE["knockout"], "--seed", "0"), OUTPUTS["knockout"])
    add("allow-pickle", "heads show", BASE["heads show"] + " --allow-pickle")
    add("full", "finetune", BASE["finetune"] + " --method full", OUTPUTS["finetune"])
    add("allow-long", "evaluate", BASE["evaluate"] + " --allow-long-context", OUTPUTS["evaluate"])
    return cases


def all_cases() -> list[Case]:
    cases = hostile_cases() + valid_cases()
    seen: set[str] = set()
    unique = []
    for case in cases:  # a generated duplicate id would hide a case in the report
        n = 2
        cid = case.id
        while cid in seen:
            cid = f"{case.id}#{n}"
            n += 1
        seen.add(cid)
        case.id = cid
        unique.append(case)
    return unique


# ---- running a case ---------------------------------------------------------------------------------------


def _tree(path: Path) -> dict[str, bytes] | None:
    """A path's content: None if absent; a file's bytes; a folder's files by relative name."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _stat_tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip:
            dirs[:] = []
            continue
        for name in files:
            p = Path(folder) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


class _Timeout(BaseException):
    pass


class _NetworkAttempt(OSError):
    pass


@contextlib.contextmanager
def _no_network(attempts: list[str]) -> Iterator[None]:
    """Record (and refuse) every outgoing connection: a local path must never reach the hub."""
    real = socket.socket.connect

    def connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return real(sock, address)
        attempts.append(str(address))
        raise _NetworkAttempt(111, "connection refused by the hostile campaign")

    socket.socket.connect = connect
    try:
        yield
    finally:
        socket.socket.connect = real


class Runner:
    def __init__(self, root: Path, fixtures: dict[str, str]):
        self.root = root
        self.fixtures = fixtures
        self.outs = root / "outs"
        self.outs.mkdir(exist_ok=True)
        self.cwd = root / "cwd"
        self.cwd.mkdir(exist_ok=True)

    def argv(self, case: Case, case_dir: Path) -> tuple[list[str], dict[str, Path]]:
        names = {**self.fixtures, "root": str(self.root), "out": str(case_dir / "out"),
                 "out.jsonl": str(case_dir / "out.jsonl"), "out.json": str(case_dir / "out.json")}
        if "{cotcopy}" in case.argv:
            copy = case_dir / "cotcopy"
            shutil.copytree(self.fixtures["cotrun"], copy)
            names["cotcopy"] = str(copy)
        argv = [re.sub(r"\{([\w.:-]+)\}", lambda m: names[m.group(1)], part) for part in case.argv.split()]
        return argv, {k: Path(v) for k, v in names.items() if k in (case.target, "cotcopy")}

    def run(self, case: Case) -> Outcome:
        case_dir = self.outs / re.sub(r"[^A-Za-z0-9_.=-]+", "_", case.id)
        shutil.rmtree(case_dir, ignore_errors=True)
        case_dir.mkdir(parents=True)
        argv, paths = self.argv(case, case_dir)
        target = paths.get(case.target, Path(self.fixtures.get(case.target, case_dir / case.target)))
        before = _tree(target) if not case.valid else None
        fixtures_before = _stat_tree(self.root, self.outs)
        attempts: list[str] = []
        start = time.monotonic()
        if case.mode == "inproc":
            rc, stderr = self._inproc(argv, attempts, case.timeout_s)
        else:
            rc, stderr = self._subprocess(case, argv)
        outcome = Outcome(case, rc, stderr, time.monotonic() - start)
        self._judge(outcome, target, before, fixtures_before, attempts)
        if not outcome.failures:
            shutil.rmtree(case_dir, ignore_errors=True)
        return outcome

    def _inproc(self, argv: list[str], attempts: list[str], timeout_s: int) -> tuple[int | None, str]:
        from huggingface_hub import constants

        import headlab.model.model_check as model_check
        from headlab.cli import main

        out, err = io.StringIO(), io.StringIO()
        offline = constants.HF_HUB_OFFLINE
        here = os.getcwd()

        def alarm(signum, frame):
            raise _Timeout

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(timeout_s)
        rc: int | None
        try:
            os.chdir(self.cwd)
            with _no_network(attempts), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as e:  # argparse's --help, or a library's sys.exit
                    rc = e.code if isinstance(e.code, int) else 1
                except _Timeout:
                    err.write(f"\n[campaign] no exit within {timeout_s} s\n")
                    rc = None
                except BaseException as e:  # noqa: BLE001 - an escaping exception is what we are counting
                    import traceback

                    err.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(e)))
                    rc = None
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            os.chdir(here)
            model_check.allow_pickle(False)
            constants.HF_HUB_OFFLINE = offline
            model_check.hub_reachable.cache_clear()
        return rc, err.getvalue()

    def _subprocess(self, case: Case, argv: list[str]) -> tuple[int | None, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "headlab.cli", *argv]
        if case.mode == "unprivileged" and os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
            env["HOME"] = "/tmp"
        # A campaign started in the background (`... &`) inherits SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: the child gets SIGINT back to its default, as a terminal's process has it.
        proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_default_sigint)
        chunks: list[bytes] = []
        started = threading.Event()

        def read_stderr() -> None:  # a progress bar ("...%|") means the command is past its set-up, into the work
            for chunk in iter(lambda: proc.stderr.read1(4096), b""):
                chunks.append(chunk)
                if b"%|" in chunk:
                    started.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        if case.mode == "sigint":
            started.wait(timeout=180)
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=case.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join()
            return None, b"".join(chunks).decode("utf-8", "replace") + f"\n[campaign] no exit within {case.timeout_s} s"
        reader.join()
        rc = proc.returncode
        return (rc if rc >= 0 else 128 - rc), b"".join(chunks).decode("utf-8", "replace")

    def _judge(self, o: Outcome, target: Path, before, fixtures_before, attempts: list[str]) -> None:
        case = o.case
        lines = [line for line in o.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if "[campaign] no exit within" in o.stderr:
            o.failures.append("hang")
        elif "Traceback" in o.stderr or o.rc is None or o.rc not in (0, 2, 130):
            o.failures.append("traceback")
        if attempts:
            o.failures.append("network")
        if case.valid:
            if o.rc != 0:
                o.failures.append("rejected-valid" if "traceback" not in o.failures else "traceback")
            missing = [n for n in case.names if not (target / n if n else target).exists()]
            if o.rc == 0 and missing:
                o.failures.append("no-output")
            return
        if case.mode == "sigint":  # progress written before the interrupt may precede the one line
            if o.rc != 130 or last != "headlab: interrupted":
                o.failures.append("message")
            return
        if o.rc == 0:
            if case.tolerate_success:
                return
            o.failures.append("accepted")
            return
        if o.rc == 2 and not (len(lines) == 1 and last.startswith("headlab: error: ")
                              and all(any(alt in last for alt in n.split("|")) for n in case.names)):
            o.failures.append("message")
        if _tree(target) != before:
            o.failures.append("wrote")
        elif _stat_tree(self.root, self.outs) != fixtures_before:
            o.failures.append("wrote")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ---- the report -------------------------------------------------------------------------------------------

COLUMNS = ("traceback", "hang", "accepted", "message", "wrote", "network")


def summarize(outcomes: list[Outcome]) -> str:
    table: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (len(COLUMNS) + 2))
    for o in outcomes:
        row = table[(o.case.command, o.case.cls)]
        row[0] += 1
        for i, col in enumerate(COLUMNS):
            row[i + 1] += col in o.failures
        row[-1] += bool(o.failures) and not any(c in o.failures for c in COLUMNS)
    head = f"{'command':<14} {'class':<24} {'cases':>5} " + " ".join(f"{c:>9}" for c in COLUMNS) + f" {'other':>6}"
    lines = [head, "-" * len(head)]
    for (command, cls), row in sorted(table.items()):
        lines.append(f"{command:<14} {cls:<24} {row[0]:>5} " + " ".join(f"{n:>9}" for n in row[1:-1])
                     + f" {row[-1]:>6}")
    by_class: dict[str, list[int]] = defaultdict(lambda: [0] * (len(COLUMNS) + 2))
    for (_, cls), row in table.items():
        by_class[cls] = [a + b for a, b in zip(by_class[cls], row, strict=True)]
    lines += ["", f"{'class':<39} {'cases':>5} " + " ".join(f"{c:>9}" for c in COLUMNS) + f" {'other':>6}"]
    for cls, row in sorted(by_class.items()):
        lines.append(f"{cls:<39} {row[0]:>5} " + " ".join(f"{n:>9}" for n in row[1:-1]) + f" {row[-1]:>6}")
    total = [sum(col) for col in zip(*table.values(), strict=True)] or [0] * (len(COLUMNS) + 2)  # no case ran
    lines.append(f"{'TOTAL':<39} {total[0]:>5} " + " ".join(f"{n:>9}" for n in total[1:-1]) + f" {total[-1]:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", default=[], help="run cases whose id contains this (repeatable)")
    p.add_argument("--skip", action="append", default=[], help="skip cases whose id contains this (repeatable)")
    p.add_argument("--cls", action="append", default=[], help="run only this class of cases (repeatable)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--keep", help="build the fixtures here and keep them (default: a temp folder, removed)")
    p.add_argument("--no-subprocess", action="store_true", help="skip the cases that need a fresh process")
    p.add_argument("--json", help="write every outcome here")
    args = p.parse_args(argv)

    def wanted(c: Case) -> bool:
        return ((not args.only or any(s in c.id for s in args.only)) and not any(s in c.id for s in args.skip)
                and (not args.cls or c.cls in args.cls) and not (args.no_subprocess and c.mode != "inproc"))

    cases = [c for c in all_cases() if wanted(c)]
    hostile = sum(not c.valid for c in cases)
    print(f"{len(cases)} cases: {hostile} hostile, {len(cases) - hostile} valid controls", flush=True)
    if args.list:
        for c in cases:
            print(f"{c.id:<50} {c.cls:<24} {c.mode:<12} {c.argv}")
        return 0
    import torch

    from headlab.core.quiet import quiet_libraries

    torch.set_num_threads(1)
    quiet_libraries(False)
    import resource

    # A runaway allocation (a huge number accepted) becomes a MemoryError in one case, not the machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="headlab-hostile-"))
    start = time.monotonic()
    try:
        fixtures = build_fixtures(root / "fx") if not (root / "fx" / "ro").exists() else _reuse(root / "fx")
        print(f"fixtures built in {time.monotonic() - start:.0f} s", flush=True)
        runner = Runner(root / "fx", fixtures)
        outcomes = []
        for i, case in enumerate(cases, 1):
            o = runner.run(case)
            outcomes.append(o)
            status = "ok" if not o.failures else "FAIL " + ",".join(o.failures)
            print(f"[{i}/{len(cases)}] {case.id:<48} {o.seconds:6.1f}s {status}", flush=True)
            if o.failures:
                print("    " + case.argv + "\n    rc=" + str(o.rc) + " stderr: "
                      + (o.stderr.strip().splitlines() or [""])[-1][:400], flush=True)
    finally:
        if not args.keep:
            os.chmod(root / "fx" / "ro", 0o755) if (root / "fx" / "ro").exists() else None
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(summarize(outcomes))
    print(f"\nwall time {time.monotonic() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([{"id": o.case.id, "command": o.case.command, "class": o.case.cls,
                                                "valid": o.case.valid, "rc": o.rc, "failures": o.failures,
                                                "seconds": round(o.seconds, 2), "stderr": o.stderr[-2000:]}
                                               for o in outcomes], indent=1))
    return 1 if any(o.failures for o in outcomes) else 0


def _reuse(fx: Path) -> dict[str, str]:
    return json.loads((fx / "fixtures.json").read_text())


if __name__ == "__main__":
    sys.exit(main())
