"""Change of each generative factor between an edit and its unedited sample (shapes data),
read by the shipped factor regressor: the raw material of the factor benchmark.

Columns per case (all scaled so that 1 is a factor's whole prior range):
- ``d_<factor>`` for the continuous factors: signed change / range (hue: the circular
  change in turns, in [-0.5, 0.5));
- ``d_shape``: total-variation distance between the predicted shape distributions (0..1);
- ``factor_change``: the sum of the absolute values of the above.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from attnedit.data.shapes import FACTOR_RANGES
from attnedit.factors.accuracy import circular_difference
from attnedit.factors.regressor import load_regressor
from attnedit.metrics.base import PairMetric


def factor_changes(edited: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-factor normalized changes from two regressor predictions (see module doc)."""
    out = {"d_shape": 0.5 * np.abs(edited["shape_probs"] - reference["shape_probs"]).sum(-1)}
    for name, (low, high) in FACTOR_RANGES.items():
        diff = circular_difference(edited[name], reference[name]) if name == "hue" else edited[name] - reference[name]
        out[f"d_{name}"] = diff / (high - low)
    return out


class FactorChange(PairMetric):
    name = "factor_change"
    higher_is_better = None  # a description of the edit, not a quality
    display_name = "factor change"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = str(path)
        self.model = load_regressor(path)
        self.weights = "trained(shapes_regressor)"

    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        changes = factor_changes(self.model.predict(edited.cpu()), self.model.predict(reference.cpu()))
        out = {k: torch.from_numpy(v) for k, v in changes.items()}
        out[self.name] = sum(v.abs() for v in out.values())
        return out
