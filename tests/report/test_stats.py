"""95% CIs and paired Wilcoxon tests against numpy / scipy on planted data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from attnedit.report import stats
from bootstrap import numpy_bootstrap


def test_mean_ci_is_the_percentile_bootstrap():
    values = np.random.default_rng(3).lognormal(size=80)
    assert stats.mean_ci(values) == pytest.approx(numpy_bootstrap(values), abs=1e-12)
    assert stats.mean_ci(np.r_[values, np.nan, np.inf]) == pytest.approx(numpy_bootstrap(values), abs=1e-12)
    assert stats.mean_ci([2.0, 2.0]) == (2.0, 2.0) and all(map(math.isnan, stats.mean_ci([np.nan])))


def test_paired_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(7)
    a = rng.normal(size=60)
    real = a + 0.3 + rng.normal(scale=0.2, size=60)
    noise = rng.normal(scale=0.2, size=30)
    null = a + np.r_[noise, -noise]  # a planted null: symmetric differences, mean exactly 0
    for b, significant in ((real, True), (null, False)):
        result = stats.paired(a, b)
        want = sps.wilcoxon(b - a)  # scipy's defaults: two-sided, zero_method "wilcox"
        assert result.p == pytest.approx(want.pvalue, rel=1e-12) and result.n == 60
        assert result.diff == pytest.approx(np.mean(b - a), abs=1e-15)
        assert (result.ci_low, result.ci_high) == pytest.approx(numpy_bootstrap(b - a), abs=1e-12)
        assert result.significant is significant and (result.ci_low > 0) is significant
    b = null.copy()
    b[:5] = np.nan  # a pair with a NaN side is dropped
    assert stats.paired(a, b).n == 55 and stats.paired(a, b).p == pytest.approx(sps.wilcoxon(b[5:] - a[5:]).pvalue)
