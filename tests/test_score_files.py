"""Score files (issue #21): ragged per-head lists and head sets of different geometries are one-line errors."""

from __future__ import annotations

import json

from headlab.cli import main


def grid(n_layers: int, n_heads: int, n: int = 2) -> dict[str, list[float]]:
    return {f"{layer}-{h}": [0.5 if (layer, h) == (0, 0) else 0.0] * n
            for layer in range(n_layers) for h in range(n_heads)}


def one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("headlab: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_ragged_score_lists_are_refused(tmp_path, capsys):
    bad = tmp_path / "ragged.json"
    bad.write_text(json.dumps({"0-0": [1, 1, 1, 1], "0-1": [1], "1-0": [1, 0], "1-1": [0, 0, 0], "2-0": [1]}))
    one_line_error(capsys, ["knockout", "--heads", str(bad), "--out", str(tmp_path / "out")],
                   "ragged.json", "'0-1'", "1 scores", "'0-0' has 4")
    assert not (tmp_path / "out").exists()
    one_line_error(capsys, ["heads", "compare", str(bad), str(bad)], "ragged.json", "'0-1'")


def test_different_geometries_are_refused(tmp_path, capsys):
    a, b = tmp_path / "small.json", tmp_path / "big.json"
    a.write_text(json.dumps(grid(6, 8)))
    b.write_text(json.dumps(grid(30, 9)))
    one_line_error(capsys, ["heads", "compare", str(a), str(b)], "small.json", "big.json",
                   "6 layers x 8 heads", "30 layers x 9 heads")
    one_line_error(capsys, ["compare", str(a), "--reference", str(b)], "small.json", "big.json")


def test_summary_geometry_is_used(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "retrieval_scores.json").write_text(json.dumps({"0-0": [0.5], "1-1": [0.2]}))  # partial file
    (run / "summary.json").write_text(json.dumps({"geometry": {"n_layers": 30, "n_heads": 9}}))
    other = tmp_path / "small.json"
    other.write_text(json.dumps(grid(6, 8, 1)))
    one_line_error(capsys, ["heads", "compare", str(run), str(other)], "30 layers x 9 heads", "6 layers x 8 heads")


def test_valid_files_still_compare(tmp_path, capsys):
    a, b, part = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "part.json"
    a.write_text(json.dumps(grid(6, 8)))
    b.write_text(json.dumps({k: sum(v) / len(v) for k, v in grid(6, 8).items()}))  # means only: fine
    part.write_text(json.dumps({"0-0": [0.9], "29-8": [0.0]}))  # partial: geometry unknown, not checked
    assert main(["heads", "compare", str(a), str(b)]) == 0
    assert "recall 1.000" in capsys.readouterr().out
    assert main(["heads", "compare", str(a), str(part)]) == 0
