"""The percentile bootstrap in numpy, which the report's 95% CIs are checked against."""

from __future__ import annotations

import numpy as np


def numpy_bootstrap(values, seed=0, resamples=1000):
    values = np.asarray(values, dtype=np.float64)
    index = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    return tuple(np.percentile(values[index].mean(axis=1), [2.5, 97.5]))
