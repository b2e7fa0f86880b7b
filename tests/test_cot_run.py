"""`headlab cot run` end to end: cache and resume, the endpoint backend, the HF backend on a tiny model."""

import json

import pytest
import torch
from fake_openai import chat_reply, fake_chat_server

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.cot.backends import HFBackend, Reply, Request
from headlab.cot.prompts import messages
from headlab.cot.run import CotConfig, load_items, run_cot

TASK = {
    "keywords": ["arithmetic"], "preferred_score": "exact_str_match",
    "examples": [{"input": f"What is {a} plus {b}?", "target": str(a + b)} for a, b in
                 [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2), (4, 4), (6, 1), (8, 3), (5, 5)]],
}


@pytest.fixture
def task(tmp_path):
    path = tmp_path / "bigbench" / "arithmetic" / "1_digit_addition" / "task.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(TASK))
    return path


def answer_for(msgs):
    """A fake model: CoT always right (with an "=" in its work), direct right only on even first operands."""
    text = msgs[-1]["content"]
    a, b = (int(t) for t in text.split("What is ")[1].split("?")[0].split(" plus "))
    if "step by step" in text:
        return f"{a} + {b} = {a + b}.\nThe answer is {a + b}."
    if "Python program" in text:
        return f"```python\nprint({a} + {b})\n```"
    return f"The answer is {a + b if a % 2 == 0 else a + b + 1}."


class FakeBackend:
    def __init__(self, fail_after=None):
        self.calls, self.prompts, self.fail_after = 0, 0, fail_after

    def identity(self):
        return {"backend": "fake", "model": "adder"}

    def prompt(self, msgs):
        return msgs

    def generate(self, requests):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.prompts += len(requests)
        return [Reply(answer_for(r.messages), len(answer_for(r.messages).split())) for r in requests]


def config(task, **kw):
    return CotConfig(data=[str(task)], model="adder", batch_size=1, modes=["direct", "cot", "plan"], **kw)


def test_killed_run_resumes_with_identical_results(task, tmp_path):
    whole = tmp_path / "whole"
    full = FakeBackend()
    run_cot(config(task), whole, full)
    assert full.prompts == 30  # 10 items x 3 modes

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_cot(config(task), part, FakeBackend(fail_after=3))  # chunks of 4: killed after 12 replies
    assert not (part / "examples.jsonl").exists()  # nothing half-written
    resumed = FakeBackend()
    run_cot(config(task), part, resumed)
    assert resumed.prompts == 30 - 12
    assert (part / "examples.jsonl").read_bytes() == (whole / "examples.jsonl").read_bytes()

    again = FakeBackend()
    run_cot(config(task), part, again)
    assert again.calls == 0
    assert (part / "examples.jsonl").read_bytes() == (whole / "examples.jsonl").read_bytes()

    records = [json.loads(line) for line in (whole / "examples.jsonl").read_text().splitlines()]
    assert all(r["cot"]["correct"] and r["plan"]["correct"] for r in records)
    assert [r["direct"]["correct"] for r in records] == [int(e["input"].split()[2]) % 2 == 0 for e in TASK["examples"]]
    assert records[0]["plan"]["program_status"] == "ok" and records[0]["category"] == "math"


def test_a_changed_cap_is_a_new_request(task, tmp_path):
    run_cot(config(task), tmp_path / "a", FakeBackend())
    other = FakeBackend()
    run_cot(config(task, cot_max_new_tokens=64, cache=str(tmp_path / "a" / "cache")), tmp_path / "b", other)
    assert other.prompts == 10  # only the CoT requests changed


def test_subset_shots_and_category_override(task):
    items, demos = load_items(config(task, limit=4, shots=2, categories={"arithmetic/1_digit_addition": "symbolic"}))
    assert len(items) == 4 and len(demos["arithmetic/1_digit_addition"]) == 2
    assert not {i.id for i in items} & {d.id for d in demos["arithmetic/1_digit_addition"]}
    assert {i.category for i in items} == {"symbolic"}
    msgs = messages("cot", items[0], demos["arithmetic/1_digit_addition"])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"].startswith("The answer is ")
    with pytest.raises(HeadlabError, match="--category nope=...: no dataset of that name"):
        load_items(config(task, categories={"nope": "math"}))


# ---- the OpenAI-compatible endpoint backend against a fake server on 127.0.0.1 --------------------------------

@pytest.fixture
def server():
    def reply(body):
        text = answer_for(body["messages"])
        return 200, chat_reply(text, usage={"completion_tokens": len(text.split())})

    with fake_chat_server(reply) as served:
        yield served


def test_endpoint_backend(task, tmp_path, server, monkeypatch, capsys):
    server, requests = server
    monkeypatch.setenv("OPENAI_API_KEY", "sekrit")
    out = tmp_path / "run"
    argv = ["cot", "run", "--model", "served-model", "--endpoint", server, "--data", str(task), "--out", str(out),
            "--limit", "3", "--cot-max-new-tokens", "99", "--resamples", "200"]
    assert main(argv) == 0
    assert len(requests) == 6
    req = requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sekrit"
    assert req["body"]["model"] == "served-model" and req["body"]["temperature"] == 0.0
    assert sorted({r["body"]["max_tokens"] for r in requests}) == [32, 99]
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert all(r["cot"]["correct"] and r["cot"]["tokens"] == 9 for r in records)  # usage
    assert "sekrit" not in (out / "config.json").read_text()
    assert main(argv) == 0 and len(requests) == 6  # the re-run asks nothing
    assert "| dataset |" in capsys.readouterr().out


def test_plan_mode_without_os_isolation_needs_unsafe_exec(task, tmp_path, server, monkeypatch, capsys):
    """Where the machine cannot isolate programs, plan mode is one line before any request, unless --unsafe-exec;
    the run then records, and its report says, that the programs ran under the guard only."""
    import headlab.cot.run as cot_run

    server, requests = server
    monkeypatch.setattr(cot_run, "isolation_problem", lambda: "unshare of user namespaces: Operation not permitted")
    out = tmp_path / "run"
    argv = ["cot", "run", "--model", "served-model", "--endpoint", server, "--data", str(task), "--out", str(out),
            "--limit", "2", "--modes", "direct,plan", "--resamples", "50"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot isolate them (unshare of user namespaces" in err and "--unsafe-exec" in err
    assert not requests and not (out / "examples.jsonl").exists()
    assert main(argv + ["--unsafe-exec"]) == 0
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert all(r["plan"]["program_status"] == "ok" and r["plan"]["correct"] for r in records)
    assert json.loads((out / "config.json").read_text())["plan_isolation"] == "guard"
    assert "in-process guard only (--unsafe-exec)" in (out / "report.md").read_text()
    monkeypatch.setattr(cot_run, "isolation_problem", lambda: pytest.fail("isolation probed without plan mode"))
    assert main(argv[:-4] + ["--modes", "direct,cot", "--resamples", "50"]) == 0


def test_endpoint_errors_are_one_line(task, tmp_path, capsys):
    argv = ["cot", "run", "--model", "m", "--endpoint", "http://127.0.0.1:9/v1", "--data", str(task),
            "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "cannot reach the LLM endpoint" in capsys.readouterr().err


# ---- the Hugging Face backend on a tiny random model ---------------------------------------------------------

def test_hf_backend_end_to_end(task, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "hf"
    argv = ["cot", "run", "--model", str(tiny_model_dir), "--data", str(task), "--out", str(out), "--limit", "5",
            "--modes", "direct,cot,plan", "--cot-max-new-tokens", "12", "--direct-max-new-tokens", "4",
            "--plan-max-new-tokens", "6", "--batch-size", "3", "--resamples", "200"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(records) == 5
    for r in records:
        assert 0 <= r["direct"]["tokens"] <= 4 and 0 <= r["cot"]["tokens"] <= 12 and r["plan"]["tokens"] <= 6
        assert r["plan"]["program_status"] in ("no_program", "ok", "error", "blocked", "timeout")
    for name in ("report.html", "report.md", "summary.json", "cot_gain.png", "config.json"):
        assert (out / name).is_file()
    capsys.readouterr()
    assert main(argv) == 0  # a re-run answers from the cache: the same records
    assert [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()] == records


def test_hf_backend_matches_transformers_generate(tiny_model_dir):
    """The backend's greedy reply (batched, left-padded) equals transformers' own greedy generate."""
    backend = HFBackend(str(tiny_model_dir), batch_size=4)
    tok, model = backend.tokenizer, backend.model
    prompts = [[{"role": "user", "content": t}] for t in
               ("Where was Mara Quill born?", "Bob Stone works at Halden Mills. Where does Bob Stone work?",
                "The grass is green.")]
    replies = backend.generate([Request(m, 10) for m in prompts])
    for msgs, reply in zip(prompts, replies, strict=True):
        ids = tok(backend.prompt(msgs), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        ref = ref.tolist()
        if tok.eos_token_id in ref:
            ref = ref[:ref.index(tok.eos_token_id)]
        assert reply.tokens == len(ref) and reply.text == tok.decode(ref, skip_special_tokens=True)
