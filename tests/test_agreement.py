"""Agreement between methods: rank correlation and top-K overlap, worked out by hand."""

import pytest

from headlab.core.errors import HeadlabError
from headlab.experiments.agreement import agreement, plot_agreement

A = {"0-0": 0.9, "0-1": 0.5, "0-2": 0.1, "0-3": 0.0}
SAME_ORDER = {"0-0": 10.0, "0-1": 5.0, "0-2": 2.0, "0-3": 1.0}
REVERSED = {"0-0": 0.0, "0-1": 0.1, "0-2": 0.5, "0-3": 0.9}


def test_rank_correlation_and_top_k_overlap_of_every_pair(tmp_path):
    result = agreement({"a": A, "b": SAME_ORDER, "c": REVERSED}, k=2)
    assert result["methods"] == ["a", "b", "c"] and result["n_heads"] == 4
    rho, share = result["spearman"], result["top_k_overlap"]
    assert rho[0][1] == pytest.approx(1.0) and rho[0][2] == pytest.approx(-1.0) and rho[2][1] == rho[1][2]
    assert share[0][1] == 1.0 and share[0][2] == 0.0 and share[1][1] == 1.0
    assert result["top_k"]["c"] == ["0-2", "0-3"]
    plot_agreement(result, tmp_path / "m.png", "toy")
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_only_shared_heads_count_and_a_constant_method_has_no_correlation():
    result = agreement({"a": {**A, "9-9": 5.0}, "flat": dict.fromkeys(A, 0.3)}, k=1)
    assert result["n_heads"] == 4
    assert result["spearman"][0][1] != result["spearman"][0][1]  # NaN: a constant vector has no ranking


@pytest.mark.parametrize("scores, message", [({"a": A}, "at least two methods"),
                                             ({"a": A, "b": {"5-5": 1.0}}, "share fewer than two heads")])
def test_bad_input_is_one_line(scores, message):
    with pytest.raises(HeadlabError, match=message):
        agreement(scores)
