"""Uncertainty for the study's numbers: bootstrap intervals, paired differences and sentences that follow them.

    est = mean_interval(scores)                    # 95% bootstrap interval of a mean, seeded
    diff = paired_difference(real, synthetic)      # same examples: difference, its interval, permutation p
    rho = spearman_interval(recalls, scores)       # Spearman rho, bootstrap interval over points, n
    difference_sentence("real", "symbolic-symbolic", diff)
        -> "real beats symbolic-symbolic by 0.14 [0.05, 0.23] (n=128, p=0.003)"
        -> "real is indistinguishable from symbolic-symbolic (difference +0.02 [-0.07, +0.11], n=128, p=0.62)"

A difference is called a win or a loss only when its interval excludes 0 *and* its permutation p-value is
below alpha; everything else is "indistinguishable", whatever the point estimate. The p-values are per
comparison (not corrected for the number of comparisons a report makes).
"""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from headlab.core.errors import HeadlabError

CONFIDENCE = 0.95
RESAMPLES = 9999
ALPHA = 0.05
# Resampled values drawn at once, at most (~32 MB): a CoT run pools thousands of items. Draws in chunks follow
# the same random stream, so the numbers do not depend on it.
MAX_DRAWS = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """A mean (or difference of means) with its bootstrap interval; low/high are None when n < 2."""

    value: float
    low: float | None
    high: float | None
    n: int

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        return None if not self.has_interval else (self.high - self.low) / 2

    def text(self, digits: int = 2, signed: bool = False) -> str:
        """"0.14 [0.05, 0.23]" (or "+0.14 [+0.05, +0.23]"); without an interval, the value alone."""
        f = f"{{:{'+' if signed else ''}.{digits}f}}".format
        return f(self.value) + (f" [{f(self.low)}, {f(self.high)}]" if self.has_interval else "")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    """Paired difference a - b over the same examples."""

    diff: Estimate
    p: float  # two-sided paired permutation (sign-flip) test of mean difference 0
    mean_a: float
    mean_b: float

    @property
    def n(self) -> int:
        return self.diff.n

    def verdict(self, alpha: float = ALPHA) -> str:
        """"higher", "lower" or "indistinguishable": the interval must exclude 0 and p be below alpha."""
        d = self.diff
        if d.has_interval and self.p < alpha:
            if d.low > 0:
                return "higher"
            if d.high < 0:
                return "lower"
        return "indistinguishable"

    def to_dict(self) -> dict:
        return {**self.diff.to_dict(), "p": self.p, "mean_a": self.mean_a, "mean_b": self.mean_b,
                "verdict": self.verdict()}


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise HeadlabError(f"{what}: need a non-empty list of numbers (got {a.size} values)")
    if not np.all(np.isfinite(a)):
        raise HeadlabError(f"{what}: values must be finite")
    return a


def _rng_kwargs(func, seed: int) -> dict:
    """scipy >= 1.15 takes rng=, older releases random_state=; same generator either way."""
    key = "rng" if "rng" in inspect.signature(func).parameters else "random_state"
    return {key: np.random.default_rng(seed)}


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE, n_resamples: int = RESAMPLES,
                  seed: int = 0, method: str = "BCa") -> Estimate:
    """Mean with a bootstrap interval (scipy.stats.bootstrap; BCa by default, "percentile" on request).

    n = 1 has no interval. Identical values have the point interval [x, x] (every resample is x). BCa is
    undefined when the jackknife is degenerate (e.g. a single differing value); those fall back to percentile.
    """
    a = _as_array(values, "mean_interval")
    mean = float(a.mean())
    if a.size == 1:
        return Estimate(mean, None, None, 1)
    if np.ptp(a) == 0:
        return Estimate(mean, mean, mean, int(a.size))
    for m in dict.fromkeys([method, "percentile"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's degenerate-data warning: handled by the fallback below
            ci = sps.bootstrap((a,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method=m,
                               vectorized=True, batch=max(1, MAX_DRAWS // a.size),
                               **_rng_kwargs(sps.bootstrap, seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
        if math.isfinite(low) and math.isfinite(high):
            # Clip to what a mean of these values can be: BCa can step a hair outside on tiny samples.
            return Estimate(mean, max(low, float(a.min())), min(high, float(a.max())), int(a.size))
    raise HeadlabError("mean_interval: the bootstrap interval is undefined for these values")


def paired_p(d: Sequence[float], n_resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p of mean(d) = 0: the paired permutation test that
    scipy.stats.permutation_test(permutation_type="samples") runs, vectorised (the report makes hundreds).

    Exact (every sign pattern) when 2^n <= n_resamples; otherwise n_resamples random patterns with the
    observed one counted, (hits + 1) / (n_resamples + 1).
    """
    d = np.asarray(d, dtype=float)
    if d.size < 2 or not np.any(d):
        return 1.0
    observed = abs(d.mean())
    n = d.size
    if 2 ** n <= n_resamples:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        hits, total = int(np.sum(np.abs(signs @ d) / n >= observed * (1 - 1e-12))), 2 ** n
    else:
        rng, step, hits = np.random.default_rng(seed), max(1, MAX_DRAWS // n), 1
        for lo in range(0, n_resamples, step):
            signs = rng.integers(0, 2, size=(min(step, n_resamples - lo), n)) * 2.0 - 1.0
            hits += int(np.sum(np.abs(signs @ d) / n >= observed * (1 - 1e-12)))
        total = n_resamples + 1
    return float(min(1.0, hits / total))


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE,
                      n_resamples: int = RESAMPLES, seed: int = 0, method: str = "BCa") -> Difference:
    """mean(a - b) over paired values (the same examples under two conditions), its bootstrap interval
    (resampling examples, so both conditions move together) and the permutation p-value."""
    x, y = _as_array(a, "paired_difference"), _as_array(b, "paired_difference")
    if x.shape != y.shape:
        raise HeadlabError(f"paired_difference: {x.size} and {y.size} values are not paired")
    d = x - y
    return Difference(mean_interval(d, confidence, n_resamples, seed, method), paired_p(d, n_resamples, seed),
                      float(x.mean()), float(y.mean()))


def _row_ranks_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair (NaN where a row is constant)."""
    rx, ry = sps.rankdata(x, axis=-1), sps.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _pairing_p(a: np.ndarray, b: np.ndarray, rho: float, n_resamples: int, seed: int) -> float:
    """Two-sided permutation p of Spearman rho: every re-pairing of b with a when n! <= n_resamples (what
    scipy.stats.permutation_test(permutation_type="pairings") computes), else n_resamples random ones."""
    n = a.size
    if math.factorial(n) <= n_resamples:
        perms, extra = np.array(list(itertools.permutations(range(n)))), 0
    else:
        perms, extra = np.argsort(np.random.default_rng(seed).random((n_resamples, n)), axis=1), 1
    null = _row_ranks_corr(np.broadcast_to(a, perms.shape), b[perms])
    hits = int(np.sum(np.abs(null) >= abs(rho) * (1 - 1e-9)))
    return min(1.0, (hits + extra) / (len(perms) + extra))


def spearman_interval(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE,
                      n_resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Spearman rho, its permutation p-value, and a percentile bootstrap interval over points.

    The p-value permutes the pairing (exact when n! <= n_resamples): with 3-7 points the usual t
    approximation is far too small (3 points in perfect order give p=0 there, 1/3 exactly). Resamples in
    which either side is constant have no rank correlation and are left out; how many were
    used is reported. rho is None when the data themselves are constant or there are fewer than 3 points.
    """
    a, b = _as_array(x, "spearman_interval"), _as_array(y, "spearman_interval")
    if a.shape != b.shape:
        raise HeadlabError(f"spearman_interval: {a.size} and {b.size} values are not paired")
    n = int(a.size)
    out = {"rho": None, "p": None, "low": None, "high": None, "n": n, "resamples_used": 0}
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    rho = sps.spearmanr(a, b).statistic
    p = _pairing_p(a, b, float(rho), n_resamples, seed)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    boot = _row_ranks_corr(a[idx], b[idx])
    boot = boot[np.isfinite(boot)]
    out.update(rho=float(rho), p=float(p), resamples_used=int(boot.size))
    if boot.size:
        tail = (1 - confidence) / 2 * 100
        out.update(low=float(np.percentile(boot, tail)), high=float(np.percentile(boot, 100 - tail)))
    return out


def format_p(p: float | None) -> str:
    if p is None:
        return "p undefined"
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def difference_sentence(a: str, b: str, d: Difference, higher: str = "beats", lower: str = "falls behind",
                        same: str = "is indistinguishable from", digits: int = 2) -> str:
    """One sentence that says no more than the interval: a win or loss only when it excludes 0 (and p < alpha).

    "real beats X by 0.14 [0.05, 0.23] (n=128, p=0.003)"; "real is indistinguishable from X (difference
    +0.02 [-0.07, +0.11], n=128, p=0.62)". `higher`/`lower`/`same` let a caller name the direction
    ("lowers the score more than").
    """
    e, v = d.diff, d.verdict()
    stats = f"n={e.n}, {format_p(d.p)}"
    if v == "higher":
        return f"{a} {higher} {b} by {e.text(digits)} ({stats})"
    if v == "lower":
        flipped = Estimate(-e.value, -e.high, -e.low, e.n)
        return f"{a} {lower} {b} by {flipped.text(digits)} ({stats})"
    if not e.has_interval:
        return f"{a} {same} {b} (difference {e.text(digits, signed=True)}, n={e.n}: too few for an interval)"
    if e.low > 0 or e.high < 0:  # the interval alone would call it; the test does not
        stats += ": the interval excludes 0 but the test does not reject"
    return f"{a} {same} {b} (difference {e.text(digits, signed=True)}, {stats})"


def estimate_text(e: Estimate, digits: int = 2) -> str:
    """"0.25 [0.18, 0.33] (n=128)"."""
    return f"{e.text(digits)} (n={e.n})"
