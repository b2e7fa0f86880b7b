"""Knockout and patching experiments end to end: controls, scoring, the CLI, and bad input."""

import json
import random
import statistics

import pytest
from tiny import attention_tuned, build_model, build_tokenizer

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.data.probes import Probe
from headlab.experiments.evaluate import EvalItem, items_from_probes, load_eval_items, score_items
from headlab.experiments.knockout import KnockoutConfig, run_knockout
from headlab.experiments.patching import PatchConfig, patch_head_sets, run_patching
from headlab.mech.generate import greedy_generate
from headlab.mech.heads import random_heads
from headlab.mech.interventions import knockout
from headlab.model.geometry import HeadGeometry

ALL = [f"{layer}-{h}" for layer in range(3) for h in range(4)]
G = HeadGeometry(3, 4, 4, 16)


def _prompts(n=4, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, 96) for _ in range(rng.randint(10, 20))] for _ in range(n)]


class _Matches(EvalItem):
    """Scores 1 when the response is exactly the expected one: makes scores sensitive to any change."""

    expected: list[int] = []

    def score(self, response_ids, tokenizer):
        return float(response_ids == self.expected)


def _matching_items(model, tok, prompts, new=5):
    items = []
    for i, (p, r) in enumerate(zip(prompts, greedy_generate(model, tok, prompts, new, stop_at_newline=False),
                                   strict=True)):
        item = _Matches(f"m{i}", p, probe=Probe(f"m{i}", p, 0, 1))
        item.expected = r
        items.append(item)
    return items


def test_random_controls_avoid_the_tested_set_and_vary_by_seed():
    draws = [random_heads(G, 5, seed, exclude=ALL[:5]) for seed in range(4)]
    assert all(len(d) == 5 and not set(d) & set(ALL[:5]) for d in draws)
    assert len({tuple(d) for d in draws}) > 1
    assert random_heads(G, 5, 1, exclude=ALL[:5]) == draws[1]  # seeded
    # The draw itself is pinned: the study's knockout and patching controls (and LoFiT's random heads) are
    # random.Random(seed).sample over the pool in (layer, head) order, so their numbers never move.
    assert draws[1] == sorted(random.Random(1).sample(ALL[5:], 5), key=lambda n: tuple(map(int, n.split("-"))))
    assert draws[1] == ["1-1", "1-2", "1-3", "2-1", "2-2"]
    with pytest.raises(HeadlabError, match="cannot draw"):
        random_heads(G, 3, 0, exclude=ALL[:10])


def test_run_knockout_scores_the_top_set_and_controls():
    model, tok = build_model("llama"), build_tokenizer()
    ranking = ["2-1", "1-3", "0-2", *[h for h in ALL if h not in ("2-1", "1-3", "0-2")]]
    with knockout(model, ranking[:2], "uniform", "decode"):  # expected = the knocked-out model's answers
        items = _matching_items(model, tok, _prompts())
    cfg = KnockoutConfig(k=2, seeds=3, max_new_tokens=5, progress=False)
    result = run_knockout(model, tok, items, ranking, cfg)
    assert result["top"] == 1.0 and result["top_heads"] == ranking[:2]
    assert result["baseline"] == statistics.fmean(score_items(model, tok, items, 5, 8))
    assert [p["k"] for p in result["curve"]] == [0, 1, 2]
    assert result["curve"][0]["top"] == result["baseline"]
    main_point = result["curve"][-1]
    assert all(not set(h) & set(ranking[:2]) for h in main_point["random_heads"])
    assert result["random_mean"] == pytest.approx(statistics.fmean(main_point["random"]))
    # Per-item scores behind every mean, in item order: the report's paired tests use them.
    assert result["item_ids"] == [it.id for it in items] and main_point["top_items"] == [1.0] * len(items)
    assert result["baseline"] == statistics.fmean(result["baseline_items"])
    assert [statistics.fmean(x) for x in main_point["random_items"]] == main_point["random"]
    with pytest.raises(HeadlabError, match="field 'k'"):
        run_knockout(model, tok, items, ranking, KnockoutConfig(k=7, progress=False))


def test_run_knockout_mean_mode_runs():
    model, tok = build_model("gpt2"), build_tokenizer()
    items = _matching_items(model, tok, _prompts(3))
    result = run_knockout(model, tok, items, ALL, KnockoutConfig(k=1, seeds=1, mode="mean", where="all",
                                                                 max_new_tokens=5, progress=False))
    assert result["baseline"] == 1.0 and 0.0 <= result["top"] <= 1.0


def test_run_patching_all_heads_gives_the_source_answers():
    target = build_model("llama")
    source, tok = attention_tuned(target, "llama"), build_tokenizer()
    items = _matching_items(source, tok, _prompts())
    result = run_patching(source, target, tok, items, ALL, ALL[::-1], PatchConfig(k=12, seeds=1,
                                                                                  max_new_tokens=5, progress=False))
    assert result["source"] == 1.0 and result["target"] < 1.0
    assert result["sets"]["source"]["mean"] == 1.0  # every head patched: the target answers as the source
    assert result["sets"]["intersection"]["size"] == 12 and result["sets"]["complement"]["size"] == 0
    assert result["sets"]["complement"]["mean"] == result["target"]
    assert result["sets"]["complement"]["items"] == [result["target_items"]]
    assert statistics.fmean(result["target_items"]) == result["target"] and result["source_items"] == [1.0] * 4


def test_patching_curve_patches_the_top_k_and_random_k():
    target = build_model("llama")
    source, tok = attention_tuned(target, "llama"), build_tokenizer()
    items = _matching_items(source, tok, _prompts(3))
    result = run_patching(source, target, tok, items, ALL, ALL, PatchConfig(k=2, seeds=2, max_new_tokens=5,
                                                                           progress=False, curve=[0, 1, 2, 6]))
    assert [p["k"] for p in result["curve"]] == [1, 2, 6]
    six = result["curve"][-1]
    assert six["top_heads"] == ALL[:6] and len(six["random_items"]) == 2
    assert all(len(h) == 6 and not set(h) & set(ALL[:6]) for h in six["random_heads"])
    assert six["top"] == statistics.fmean(six["top_items"])
    only = run_patching(source, target, tok, items, ALL, ALL, PatchConfig(k=2, seeds=1, max_new_tokens=5,
                                                                          progress=False, sets=["intersection"]))
    assert list(only["sets"]) == ["intersection"] and only["curve"] == []
    with pytest.raises(HeadlabError, match="field 'sets'"):
        run_patching(source, target, tok, items, ALL, ALL, PatchConfig(k=2, progress=False, sets=["everything"]))
    with pytest.raises(HeadlabError, match="curve K=7"):
        run_patching(source, target, tok, items, ALL, ALL, PatchConfig(k=2, seeds=1, progress=False, curve=[7]))


def test_patch_head_sets():
    sets = patch_head_sets(["0-0", "0-1", "1-0"], ["1-0", "2-2", "0-0"], G, k=3, seeds=2, seed=0)
    assert sets["intersection"] == [["0-0", "1-0"]] and sets["complement"] == [["0-1"]]
    assert all(len(r) == 3 and not set(r) & {"0-0", "0-1", "1-0"} for r in sets["random"])
    with pytest.raises(HeadlabError, match="field 'k'"):
        patch_head_sets(["0-0"], ["0-0"], G, k=2, seeds=1, seed=0)


def test_probe_and_task_scoring(tmp_path):
    tok = build_tokenizer()
    needle = "Mara Quill was born in Tovesk."
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"context": f"The sky is blue. {needle} The grass is green.", "needle": needle,
                                "question": "Where was Mara Quill born?"}) + "\n")
    item = load_eval_items(path, tok)[0]
    assert item.score(tok(" Mara Quill was born in Tovesk.")["input_ids"], tok) == 1.0
    assert item.score(tok(" The sky is blue.")["input_ids"], tok) == 0.0
    token_item = items_from_probes([Probe("t", list(range(3, 20)), 5, 9)])[0]
    assert token_item.score([8, 40, 41], tok) == 0.0 and token_item.score([8, 9, 10], tok) == 1.0
    assert not token_item.stops_at_newline
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({
        "id": "x", "task": "mdqa", "needle_realism": "real", "haystack_diversity": "diverse",
        "context": "Document [1] (Title: A) Mara Quill was born in Tovesk.", "question": "Where?",
        "answers": ["Tovesk"], "documents": [{"id": 1, "title": "A", "text": "Mara Quill was born in Tovesk."}],
        "gold_doc_ids": [1], "gold_spans": [[20, 50]]}) + "\n")
    task_item = load_eval_items(task, tok)[0]
    assert task_item.score(tok(" in Tovesk")["input_ids"], tok) == 1.0
    assert task_item.score(tok(" in Halden")["input_ids"], tok) == 0.0


# ---- CLI -------------------------------------------------------------------------------------------------


def _token_probes(path, n=3):
    rng = random.Random(3)
    with path.open("w") as f:
        for i in range(n):
            ids = [rng.randrange(3, 96) for _ in range(30)]
            f.write(json.dumps({"id": f"p{i}", "input_ids": ids, "needle_start": 10, "needle_end": 14}) + "\n")
    return path


def _scores(path, heads=ALL):
    path.write_text(json.dumps({h: [1.0 - i / 20] for i, h in enumerate(heads)}))
    return path


def test_cli_knockout_and_patch_write_results(tiny_model_dir, tmp_path, capsys):
    data, heads = _token_probes(tmp_path / "probes.jsonl"), _scores(tmp_path / "scores.json")
    out = tmp_path / "ko"
    assert main(["knockout", "--model", str(tiny_model_dir), "--heads", str(heads), "--data", str(data),
                 "--k", "2", "--seeds", "2", "--max-new-tokens", "4", "--out", str(out)]) == 0
    result = json.loads((out / "knockout.json").read_text())
    assert result["top_heads"] == ["0-0", "0-1"] and len(result["random"]) == 2
    assert json.loads((out / "config.json").read_text())["mode"] == "uniform"
    assert (out / "knockout_curve.png").stat().st_size > 0
    out = tmp_path / "patch"
    assert main(["patch", "--source", str(tiny_model_dir), "--target", str(tiny_model_dir), "--heads", str(heads),
                 str(heads), "--data", str(data), "--k", "3", "--max-new-tokens", "4", "--out", str(out)]) == 0
    result = json.loads((out / "patching.json").read_text())
    # The source is the target itself: no patch changes anything.
    assert all(v["mean"] == result["target"] for v in result["sets"].values())
    assert (out / "patching.png").stat().st_size > 0
    assert "patched" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("head out of range", "out of range"),
    ("k too large", "field 'k'"),
    ("k above the heads that scored", "ranked heads: 1"),
    ("bad probe line", "needle_end"),
    ("limit", "--limit"),
])
def test_cli_knockout_bad_input_writes_nothing(tiny_model_dir, tmp_path, capsys, case, message):
    data, heads = _token_probes(tmp_path / "probes.jsonl"), _scores(tmp_path / "scores.json")
    args = ["knockout", "--model", str(tiny_model_dir), "--heads", str(heads), "--data", str(data),
            "--k", "2", "--out", str(tmp_path / "out")]
    if case == "head out of range":
        _scores(heads, ALL + ["5-0"])
    elif case == "k too large":
        args[args.index("--k") + 1] = "7"
    elif case == "k above the heads that scored":
        # One head ever copied: a top-2 set would be padded with a head that never did.
        heads.write_text(json.dumps({h: [0.4 if i == 0 else 0.0] for i, h in enumerate(ALL)}))
    elif case == "bad probe line":
        data.write_text(data.read_text() + json.dumps({"input_ids": [4, 5], "needle_start": 0}) + "\n")
    else:
        args += ["--limit", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_patch_rejects_mismatched_heads_file(tiny_model_dir, tmp_path, capsys):
    data, heads = _token_probes(tmp_path / "probes.jsonl"), _scores(tmp_path / "scores.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0-x": [0.1]}))
    assert main(["patch", "--source", str(tiny_model_dir), "--target", str(tiny_model_dir), "--heads", str(heads),
                 str(bad), "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    assert "LAYER-HEAD" in capsys.readouterr().err and not (tmp_path / "out").exists()
