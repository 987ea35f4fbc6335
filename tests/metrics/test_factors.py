"""The factor changes of the shapes benchmark (metrics/factors.py): hue wraps around, shape
is a distance of probabilities; the shipped regressor reads a planted position change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnedit.assets import asset_path
from attnedit.data.shapes import FACTOR_RANGES, FACTORS, ShapeFactors, draw_factors, render
from attnedit.factors.accuracy import circular_difference
from attnedit.metrics.factors import factor_changes
from attnedit.metrics.registry import build_metric


def test_factor_changes_wrap_hue_and_take_the_shape_distance():
    ref = {"shape_probs": np.array([[1.0, 0, 0], [0.2, 0.8, 0]]), "hue": np.array([0.95, 0.5]),
           "size": np.array([0.12, 0.2]), "pos_x": np.array([0.5, 0.5]), "pos_y": np.array([0.3, 0.3]),
           "background": np.array([0.1, 0.6])}  # fmt: skip
    edit = {**ref, "shape_probs": np.array([[0.0, 0, 1], [0.2, 0.8, 0]]), "hue": np.array([0.05, 0.4]),
            "size": np.array([0.24, 0.2])}  # fmt: skip
    d = factor_changes(edit, ref)
    np.testing.assert_allclose(d["d_hue"], [0.1, -0.1], atol=1e-12)  # 0.95 -> 0.05 is +0.1 turn
    np.testing.assert_allclose(d["d_shape"], [1.0, 0.0])
    np.testing.assert_allclose(d["d_size"], [1.0, 0.0])  # the whole range
    assert np.all(d["d_pos_x"] == 0) and set(d) == {f"d_{k}" for k in FACTORS}
    assert circular_difference(0.0, 0.75) == pytest.approx(0.25)


def test_factor_metric_reads_a_planted_position_change():
    metric = build_metric("factors", path=asset_path("shapes_regressor"))
    base = draw_factors(np.random.default_rng([77]), 8)
    base = ShapeFactors(**{**base.as_dict(), "pos_x": np.full(8, 0.42)})
    moved = ShapeFactors(**{**base.as_dict(), "pos_x": np.full(8, 0.58)})
    out = metric(torch.from_numpy(render(moved)).float(), torch.from_numpy(render(base)).float())
    span = FACTOR_RANGES["pos_x"][1] - FACTOR_RANGES["pos_x"][0]
    np.testing.assert_allclose(out["d_pos_x"].numpy(), 0.16 / span, atol=0.04)
    for k in ("size", "hue", "pos_y", "background", "shape"):
        assert out[f"d_{k}"].abs().max() < 0.04, k
    torch.testing.assert_close(out["factor_change"], sum(out[f"d_{k}"].abs() for k in FACTORS))
