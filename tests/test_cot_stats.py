"""The CoT report's intervals and verdicts: headlab.core.stats's bootstrap, checked on known inputs."""

import numpy as np
import pytest
from scipy import stats

from headlab.cot.report import group_stats


def records(direct, cot):
    def mode(ok):
        return {"correct": bool(ok), "status": "ok", "tokens": 1}
    return [{"direct": mode(d), "cot": mode(c)} for d, c in zip(direct, cot, strict=True)]


def test_accuracy_interval_contains_the_mean_and_matches_scipy():
    cot = np.array([1.0] * 30 + [0.0] * 20)  # accuracy 0.6 on 50 items
    out = group_stats(records(np.zeros(50), cot), ["direct", "cot"], resamples=20_000)
    lo, hi = out["cot"]["ci"]
    ref = stats.bootstrap((cot,), np.mean, n_resamples=20_000, method="percentile",
                          rng=np.random.default_rng(2)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=0.03)
    assert out["cot"]["accuracy"] == pytest.approx(0.6) and lo < 0.6 < hi
    assert out["direct"]["ci"] == [0.0, 0.0]  # every item wrong: every resample is 0


def test_paired_difference_beats_unpaired_and_calls_a_clear_gain():
    rng = np.random.default_rng(0)
    direct = (rng.random(120) < 0.5).astype(float)
    cot = direct.copy()
    cot[rng.choice(120, 20, replace=False)] = 1.0  # CoT fixes some items and keeps every other answer
    out = group_stats(records(direct, cot), ["direct", "cot"])
    diff = out["cot_minus_direct"]
    ref = stats.bootstrap((direct, cot), lambda a, b: np.mean(b) - np.mean(a), paired=True, vectorized=False,
                          n_resamples=5_000, method="percentile", rng=np.random.default_rng(2)).confidence_interval
    assert diff["ci"] == pytest.approx([ref.low, ref.high], abs=0.015)
    assert diff["ci"][0] > 0 and diff["p"] < 0.05 and diff["verdict"] == "CoT better"
    assert diff["diff"] == pytest.approx(cot.mean() - direct.mean())
    unpaired = out["cot"]["ci"][1] - out["direct"]["ci"][0] - (out["cot"]["ci"][0] - out["direct"]["ci"][1])
    assert diff["ci"][1] - diff["ci"][0] < unpaired


def test_identical_answers_and_a_loss():
    same = (np.arange(40) % 3 == 0).astype(float)
    diff = group_stats(records(same, same), ["direct", "cot"])["cot_minus_direct"]
    assert diff["ci"] == [0.0, 0.0] and diff["p"] == 1.0 and diff["verdict"] == "indistinguishable"
    worse = group_stats(records(np.ones(40), same), ["direct", "cot"])["cot_minus_direct"]
    assert worse["ci"][1] < 0 and worse["verdict"] == "direct better"
    one = group_stats(records([1.0], [0.0]), ["direct", "cot"])  # one item: no interval, no verdict
    assert one["cot"]["ci"] == [None, None] and one["cot_minus_direct"]["verdict"] == "indistinguishable"
