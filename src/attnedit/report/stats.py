"""Uncertainty of the tables' means: a bootstrap confidence interval for a mean, and a
paired test of two methods on the same sample ids.

- ``mean_ci``: percentile bootstrap over the values (samples / images / cases, as the
  table groups them), ``RESAMPLES`` resamples from ``numpy.random.default_rng(SEED)``,
  via ``scipy.stats.bootstrap(method="percentile")``; fixed seed, so a table is the same
  every time it is written.
- ``paired``: the mean of the paired differences b - a over the ids both hold, its
  bootstrap CI (as above), and the two-sided Wilcoxon signed-rank p-value
  (``scipy.stats.wilcoxon``, zero_method "wilcox": zero differences dropped);
  ``significant`` is p < ALPHA_LEVEL.

Non-finite values (NaN: an empty region, a failed case) are left out before anything is
computed; their count is reported by the caller.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
RESAMPLES = 1000
SEED = 0
ALPHA_LEVEL = 0.05
CI_TEXT = f"{LEVEL:.0%} CI: percentile bootstrap, {RESAMPLES} resamples, seed {SEED}"
PAIRED_TEXT = (f"paired on the same sample ids: mean difference with its {CI_TEXT}; p: two-sided Wilcoxon "
               f"signed-rank (scipy.stats.wilcoxon); n.s. = not significant (p >= {ALPHA_LEVEL:g})")


def finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def mean_ci(values, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """(low, high) of the bootstrap CI of the mean of the finite values; (nan, nan) for
    none; (v, v) for one value or values all equal (every resample has that mean)."""
    values = finite(values)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean())
    result = sps.bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=level, method="percentile",
                           vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class Paired:
    diff: float  # mean of b - a
    ci_low: float
    ci_high: float
    p: float  # Wilcoxon signed-rank, two-sided; nan with fewer than one non-zero pair
    n: int  # pairs (ids with finite values on both sides)

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.p) and self.p < ALPHA_LEVEL)


def paired(a, b) -> Paired:
    """Paired comparison of b against a: two aligned arrays (the same ids, same order);
    pairs with a non-finite side are dropped."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired() needs aligned arrays, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    diff = b[keep] - a[keep]
    if len(diff) == 0:
        return Paired(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    low, high = mean_ci(diff)
    p = float("nan")
    if np.any(diff != 0):
        with warnings.catch_warnings():  # small n: scipy warns that the normal approximation is rough
            warnings.simplefilter("ignore")
            p = float(sps.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
    return Paired(float(diff.mean()), low, high, p, int(len(diff)))
