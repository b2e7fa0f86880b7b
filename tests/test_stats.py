"""headlab.core.stats against scipy and plain references; the finding sentence follows its interval."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from headlab.core.errors import HeadlabError
from headlab.core.stats import (
    Difference,
    Estimate,
    difference_sentence,
    mean_interval,
    paired_difference,
    paired_p,
    spearman_interval,
)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_mean_interval_is_scipys_bootstrap(method):
    x = np.random.default_rng(3).normal(0.4, 0.3, 40)
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, method=method, vectorized=True,
                        rng=np.random.default_rng(11)).confidence_interval
    e = mean_interval(x, n_resamples=2000, seed=11, method=method)
    assert e.n == 40 and e.value == pytest.approx(x.mean())
    assert (e.low, e.high) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_mean_interval_matches_the_normal_interval_on_a_large_sample():
    x = np.random.default_rng(0).integers(0, 2, 400).astype(float)
    e = mean_interval(x)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert e.low == pytest.approx(x.mean() - half, abs=0.01) and e.high == pytest.approx(x.mean() + half, abs=0.01)


def test_mean_interval_edge_cases():
    one = mean_interval([0.7])
    assert (one.value, one.low, one.high, one.n) == (0.7, None, None, 1) and not one.has_interval
    same = mean_interval([0.25] * 9)
    assert (same.low, same.high) == (0.25, 0.25)
    # One differing value: BCa's jackknife is degenerate; the percentile interval stands in.
    lone = mean_interval([0.0] * 15 + [1.0])
    assert lone.has_interval and 0.0 <= lone.low <= lone.value <= lone.high <= 1.0
    with pytest.raises(HeadlabError):
        mean_interval([])
    with pytest.raises(HeadlabError):
        mean_interval([0.1, float("nan")])


def _exact_sign_flip_p(d):
    d = np.asarray(d, float)
    obs = abs(d.mean())
    flips = [abs((d * np.array(s)).mean()) >= obs - 1e-12 for s in itertools.product([1, -1], repeat=d.size)]
    return sum(flips) / len(flips)


def test_paired_p_is_the_exact_sign_flip_test_and_scipys():
    rng = np.random.default_rng(5)
    for n in (2, 6, 11):
        d = rng.normal(0.4, 1.0, n)
        ref = sps.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                   vectorized=True, n_resamples=9999).pvalue
        assert paired_p(d) == pytest.approx(_exact_sign_flip_p(d)) == pytest.approx(ref)
    # Randomised for large n: close to scipy's randomised test and to the paired t-test.
    d = rng.normal(0.15, 1.0, 80)
    assert paired_p(d) == pytest.approx(sps.ttest_1samp(d, 0).pvalue, abs=0.03)
    assert paired_p([1.0]) == 1.0 and paired_p([0.0, 0.0, 0.0]) == 1.0


def test_paired_difference_resamples_examples_together():
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.3, 60)
    a, b = base + 0.1 + rng.normal(0, 0.01, 60), base  # big shared variance, tiny paired noise
    d = paired_difference(a, b, seed=2)
    assert d.diff.value == pytest.approx(0.1, abs=0.01)
    assert d.diff.high - d.diff.low < 0.02  # an unpaired interval would be ~0.2 wide
    assert d.p < 0.001 and d.verdict() == "higher"
    assert d.mean_a == pytest.approx(a.mean()) and d.mean_b == pytest.approx(b.mean())
    with pytest.raises(HeadlabError, match="not paired"):
        paired_difference([1, 2], [1, 2, 3])


def test_spearman_interval_against_scipy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=30)
    y = x + rng.normal(scale=1.0, size=30)
    s = spearman_interval(x, y, n_resamples=4000, seed=0)
    rho, p = sps.spearmanr(x, y)
    # 30! pairings: a random sample of them, close to the t approximation at this n.
    assert (s["rho"], s["n"]) == (pytest.approx(rho), 30) and s["p"] == pytest.approx(p, abs=0.01)

    def stat(a, b):
        return sps.spearmanr(a, b).statistic

    ref = sps.bootstrap((x, y), stat, paired=True, n_resamples=4000, method="percentile", vectorized=False,
                        rng=np.random.default_rng(9)).confidence_interval
    # Different resampling streams: equal up to Monte Carlo error.
    assert s["low"] == pytest.approx(ref.low, abs=0.05) and s["high"] == pytest.approx(ref.high, abs=0.05)
    assert s["resamples_used"] == 4000


@pytest.mark.parametrize("y", [[0.1, 0.3, 0.2, 0.5, 0.4], [0.5, 0.1, 0.3, 0.2, 0.4], [1, 2, 3, 4, 5]])
def test_spearman_p_is_the_exact_permutation_test(y):
    x = [0.0, 0.25, 0.5, 0.75, 1.0]
    ref = sps.permutation_test((x, y), lambda u, v: sps.spearmanr(u, v).statistic, permutation_type="pairings",
                               n_resamples=np.inf).pvalue
    assert spearman_interval(x, y)["p"] == pytest.approx(ref)
    # Three points in perfect order: the t approximation says p=0; one ordering in three is as extreme.
    assert spearman_interval([1, 2, 3], [4, 5, 6])["p"] == pytest.approx(1 / 3)


def test_spearman_interval_undefined_and_tiny():
    assert spearman_interval([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4])["rho"] is None
    assert spearman_interval([1, 2], [1, 2])["rho"] is None
    five = spearman_interval([0.0, 0.25, 0.5, 0.75, 1.0], [0.1, 0.3, 0.2, 0.5, 0.4])
    # Five points: resamples that repeat one point on either side are constant and are dropped.
    assert five["n"] == 5 and 0 < five["resamples_used"] < 9999 and five["low"] < five["rho"] < five["high"]


def _diff(value, low, high, p, n=100):
    return Difference(Estimate(value, low, high, n), p, 0.5 + value, 0.5)


@pytest.mark.parametrize("value,low,high,p,verdict", [
    (0.14, 0.05, 0.23, 0.003, "higher"),
    (-0.10, -0.17, -0.03, 0.01, "lower"),
    (0.02, -0.07, 0.11, 0.6, "indistinguishable"),
    (0.30, -0.01, 0.61, 0.04, "indistinguishable"),  # p says yes, the interval spans 0: no verdict
    (0.30, 0.01, 0.61, 0.07, "indistinguishable"),  # the interval says yes, p does not: no verdict, said so
    (0.0, 0.0, 0.0, 1.0, "indistinguishable"),  # all equal
])
def test_sentence_follows_its_interval(value, low, high, p, verdict):
    d = _diff(value, low, high, p)
    assert d.verdict() == verdict
    s = difference_sentence("real", "symbolic-symbolic", d)
    if verdict == "higher":
        assert s == "real beats symbolic-symbolic by 0.14 [0.05, 0.23] (n=100, p=0.003)"
    elif verdict == "lower":
        assert s == "real falls behind symbolic-symbolic by 0.10 [0.03, 0.17] (n=100, p=0.01)"
    else:
        assert s.startswith("real is indistinguishable from symbolic-symbolic (difference ")
        assert "beats" not in s and "behind" not in s
        assert f"[{low:+.2f}, {high:+.2f}]" in s
        assert ("the interval excludes 0 but the test does not reject" in s) == (low > 0 or high < 0)


def test_sentence_from_real_data_edge_cases():
    one = paired_difference([1.0], [0.0])
    assert one.verdict() == "indistinguishable"
    assert difference_sentence("real", "X", one) == (
        "real is indistinguishable from X (difference +1.00, n=1: too few for an interval)")
    equal = paired_difference([0.5] * 10, [0.5] * 10)
    assert equal.p == 1.0 and equal.verdict() == "indistinguishable"
    # Every example better by exactly 1: the point interval [1, 1] excludes 0, p is exact 2/2^n.
    ones = paired_difference([1.0] * 8, [0.0] * 8)
    assert ones.p == pytest.approx(2 / 2 ** 8) and ones.verdict() == "higher"
    assert difference_sentence("top-K", "random", ones, higher="lowers the score more than") .startswith(
        "top-K lowers the score more than random by 1.00 [1.00, 1.00]")
