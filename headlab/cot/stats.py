"""Percentile bootstrap intervals for a mean and for a paired difference of means (numpy, vectorized)."""

from __future__ import annotations

import numpy as np

RESAMPLES = 10_000


def _resampled_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    means = np.empty(n_resamples)
    step = max(1, 4_000_000 // max(n, 1))  # bounded memory: at most ~4M indices at a time
    for lo in range(0, n_resamples, step):
        hi = min(lo + step, n_resamples)
        means[lo:hi] = x[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    return means


def bootstrap_ci(x, n_resamples: int = RESAMPLES, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of `x` (resampling items with replacement)."""
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    means = _resampled_means(x, n_resamples, np.random.default_rng(seed))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_ci(a, b, n_resamples: int = RESAMPLES, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Interval of mean(b) - mean(a) over the same items: the items are resampled together (paired)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    return bootstrap_ci(b - a, n_resamples, level, seed)


def verdict(lo: float, hi: float, better: str = "CoT", worse: str = "direct") -> str:
    """What a difference's interval (better minus worse) allows one to say."""
    if lo > 0:
        return f"{better} better"
    if hi < 0:
        return f"{worse} better"
    return "indistinguishable"
