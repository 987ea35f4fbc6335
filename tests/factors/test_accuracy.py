"""Factors of images by analysis-by-synthesis (factors/accuracy.py): the fit recovers the
factors of renderings from a perturbed start."""

from __future__ import annotations

import numpy as np

from attnedit.data.shapes import ShapeFactors, draw_factors, render
from attnedit.factors.accuracy import factor_accuracy, fit_factors


def test_fit_recovers_the_factors_of_renderings_from_a_perturbed_start():
    rng = np.random.default_rng(3)
    truth = draw_factors(rng, 24)
    start = ShapeFactors(
        shape=rng.integers(0, 3, 24), size=truth.size + 0.01, hue=(truth.hue + 0.03) % 1,
        pos_x=truth.pos_x - 0.03, pos_y=truth.pos_y + 0.03, background=truth.background - 0.03,
    )  # fmt: skip
    fitted, residual = fit_factors(render(truth), start)
    accuracy = factor_accuracy(fitted, truth)
    assert min(accuracy.values()) >= 0.95, accuracy
    assert np.median(residual) < 0.01
