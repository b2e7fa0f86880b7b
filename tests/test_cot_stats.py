"""Bootstrap intervals against scipy.stats.bootstrap (percentile method) on known inputs."""

import numpy as np
import pytest
from scipy import stats

from headlab.cot.stats import bootstrap_ci, paired_ci, verdict


@pytest.mark.parametrize("x", [
    np.array([1.0] * 30 + [0.0] * 20),                          # accuracy 0.6 on 50 items
    np.random.default_rng(3).normal(2.0, 1.5, size=80),
])
def test_mean_interval_matches_scipy(x):
    ours = bootstrap_ci(x, n_resamples=20_000, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(2))
    ci = ref.confidence_interval
    assert ours == pytest.approx((ci.low, ci.high), abs=0.025 * x.std() + 0.01)
    assert ours[0] < x.mean() < ours[1]


def test_paired_interval_matches_scipy_and_beats_unpaired():
    rng = np.random.default_rng(0)
    direct = (rng.random(120) < 0.5).astype(float)
    cot = direct.copy()
    flip = rng.choice(120, 20, replace=False)
    cot[flip] = 1.0  # CoT fixes some items and keeps every other answer: a clear paired gain
    ours = paired_ci(direct, cot, n_resamples=20_000, seed=1)
    ref = stats.bootstrap((direct, cot), lambda a, b: np.mean(b) - np.mean(a), paired=True, vectorized=False,
                          n_resamples=5_000, method="percentile", rng=np.random.default_rng(2)).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.015)
    assert ours[0] > 0 and verdict(*ours) == "CoT better"
    unpaired = np.subtract(bootstrap_ci(cot), bootstrap_ci(direct)[::-1])  # widest difference of marginal CIs
    assert ours[1] - ours[0] < unpaired[1] - unpaired[0]


def test_degenerate_and_verdicts():
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)
    assert verdict(-0.1, 0.2) == "indistinguishable" and verdict(-0.3, -0.1) == "direct better"
    with pytest.raises(ValueError):
        paired_ci([1, 0], [1])
