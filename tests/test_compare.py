"""Head-set comparison against plain formulas, and the `headlab compare` command."""

import json
import math

import pytest
from scipy.stats import t as student_t

from headlab.cli import main
from headlab.core.errors import HeadlabError
from headlab.experiments.compare import CompareConfig, compare_head_files, recall_score_correlation


def _write(path, means):
    path.write_text(json.dumps({h: [v, v] for h, v in means.items()}))
    return path


R = {"0-0": 0.9, "0-1": 0.5, "1-0": 0.3, "1-1": 0.0}
A = {"0-0": 0.8, "0-1": 0.0, "1-0": 0.2, "1-1": 0.4}
B = {"0-0": 0.0, "0-1": 0.05, "1-0": 0.0, "1-1": 0.7}
C = {"0-0": 0.6, "0-1": 0.6, "1-0": 0.6, "1-1": 0.0}


def _cos(a, b):
    dot = sum(a[k] * b[k] for k in a)
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


def _spearman_plain(x, y):
    """No ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); p from the t distribution with n - 2 dof."""
    n = len(x)
    rank = lambda v: {i: r for r, i in enumerate(sorted(range(n), key=lambda i: v[i]))}  # noqa: E731
    rx, ry = rank(x), rank(y)
    rho = 1 - 6 * sum((rx[i] - ry[i]) ** 2 for i in range(n)) / (n * (n * n - 1))
    t = rho * math.sqrt((n - 2) / (1 - rho * rho))
    return rho, 2 * student_t.sf(abs(t), n - 2)


def test_recall_jaccard_cosine_against_reference(tmp_path):
    files = [_write(tmp_path / f"{n}.json", m) for n, m in (("a", A), ("b", B), ("c", C))]
    ref = _write(tmp_path / "r.json", R)
    out = compare_head_files(files, ref, [0.7, 0.1, 0.9], CompareConfig(threshold=0.1))
    rows = {r["label"]: r for r in out["vs_reference"]}
    # R's heads at 0.1: {0-0, 0-1, 1-0}; A's: {0-0, 1-0, 1-1}
    assert rows["a.json"]["recall"] == pytest.approx(2 / 3)
    assert rows["a.json"]["jaccard"] == pytest.approx(2 / 4)
    assert rows["b.json"]["recall"] == 0.0
    assert rows["c.json"]["recall"] == 1.0 and rows["c.json"]["jaccard"] == 1.0
    for name, m in (("a.json", A), ("b.json", B), ("c.json", C)):
        assert rows[name]["cosine"] == pytest.approx(_cos(m, R))
    assert out["heads"]["a.json"] == ["0-0", "1-1", "1-0"]  # ranked by score
    assert len(out["pairwise"]) == 6


def test_top_k_selection(tmp_path):
    out = compare_head_files([_write(tmp_path / "a.json", A)], _write(tmp_path / "r.json", R),
                             config=CompareConfig(top_k=1))
    assert out["vs_reference"][0]["recall"] == 1.0  # both top-1 heads are 0-0


def test_spearman_matches_plain_formula():
    recalls, scores = [0.1, 0.4, 0.35, 0.8, 0.6], [0.2, 0.3, 0.5, 0.9, 0.4]
    got = recall_score_correlation(recalls, scores)
    rho, p = _spearman_plain(recalls, scores)
    assert got["rho"] == pytest.approx(rho) and got["p"] == pytest.approx(p) and got["n"] == 5
    assert recall_score_correlation([0.2, 0.2, 0.2], [0.1, 0.5, 0.9])["rho"] is None  # constant recall


def test_cli_writes_results_and_plot(tmp_path, capsys):
    files = [str(_write(tmp_path / f"{n}.json", m)) for n, m in (("a", A), ("b", B), ("c", C))]
    ref = str(_write(tmp_path / "r.json", R))
    assert main(["compare", *files, "--reference", ref, "--scores", "0.7", "0.1", "0.9",
                 "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["spearman"]["n"] == 3 and (tmp_path / "out" / "recall_vs_score.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["threshold"] == 0.1
    assert "Spearman(recall, score) over 3 models" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (["--scores", "0.1", "0.2"], "--scores: 2 scores given for 3"),
    (["--scores", "0.1", "0.2", "0.3", "--no-ref"], "need a reference"),
    (["--bad-file"], "not a head name"),
    (["--missing"], "file not found"),
])
def test_cli_bad_input_writes_nothing(tmp_path, capsys, extra, message):
    files = [str(_write(tmp_path / f"{n}.json", m)) for n, m in (("a", A), ("b", B), ("c", C))]
    args = ["compare", *files, "--reference", str(_write(tmp_path / "r.json", R)), "--out", str(tmp_path / "out")]
    if "--no-ref" in extra:
        extra = extra[:-1]
        args = ["compare", *files, "--out", str(tmp_path / "out")]
    if extra == ["--bad-file"]:
        (tmp_path / "bad.json").write_text(json.dumps({"0_1": [0.5]}))
        args.insert(1, str(tmp_path / "bad.json"))
        extra = []
    if extra == ["--missing"]:
        args.insert(1, str(tmp_path / "nope.json"))
        extra = []
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_too_few_models_for_spearman(tmp_path):
    a, r = _write(tmp_path / "a.json", A), _write(tmp_path / "r.json", R)
    with pytest.raises(HeadlabError, match="at least 3"):
        compare_head_files([a, a], r, [0.1, 0.2])
