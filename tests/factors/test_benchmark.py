"""The factor benchmark's scores (factors/benchmark.py) against a direct numpy computation
on planted changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnedit.data.shapes import FACTORS
from attnedit.factors.benchmark import direction_scores, method_summary
from factor_reference import direct_scores


def planted_frame() -> tuple[pd.DataFrame, dict]:
    """Two methods; per direction a planted response of every factor to alpha."""
    rng = np.random.default_rng(0)
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    plans = {
        ("a", 0): {"pos_x": 0.30, "hue": 0.02},  # pos_x, linear
        ("a", 1): {"background": -0.2, "size": 0.15, "pos_y": 0.1},  # background, entangled
        ("b", 0): {"hue": 0.05, "pos_x": 0.05, "pos_y": 0.05, "size": 0.05, "background": 0.05},
    }
    rows = []
    for (method, direction), slopes in plans.items():
        for sample in range(6):
            for alpha in alphas:
                row = {"method": method, "direction": direction, "label": f"{method}{direction}",
                       "sample_id": f"s{sample}", "alpha": alpha}  # fmt: skip
                for k in FACTORS:
                    if k == "shape":
                        row["d_shape"] = 0.0 if alpha == 0 else abs(rng.normal(0, 0.01))
                    else:
                        row[f"d_{k}"] = slopes.get(k, 0.0) * alpha + (0 if alpha == 0 else rng.normal(0, 0.01))
                rows.append(row)
    return pd.DataFrame(rows), plans


def test_benchmark_scores_equal_a_direct_computation_on_planted_changes():
    frame, plans = planted_frame()
    scores = direction_scores(frame).set_index(["method", "direction"])
    assert len(scores) == 3
    for (method, direction), group in frame.groupby(["method", "direction"]):
        want, got = direct_scores(group), scores.loc[(method, direction)]
        assert got.dominant == want["dominant"]
        for key in ("share", "linearity", "slope", "total"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    assert scores.loc[("a", 0)].dominant == "pos_x" and scores.loc[("a", 0)].linearity > 0.99
    assert scores.loc[("a", 1)].dominant == "background"
    assert scores.loc[("a", 0)].share > scores.loc[("a", 1)].share > scores.loc[("b", 0)].share
    summary = method_summary(direction_scores(frame)).set_index("method")
    assert summary.loc["a", "distinct_dominant"] == 2 and summary.loc["b", "directions"] == 1
    assert summary.loc["a", "share"] == pytest.approx(np.mean([scores.loc[("a", d)].share for d in (0, 1)]))


def test_benchmark_refuses_rows_without_factor_columns():
    with pytest.raises(ValueError, match="d_shape"):
        direction_scores(pd.DataFrame({"method": ["sad"], "direction": [0], "alpha": [1.0], "ssim": [0.9]}))
