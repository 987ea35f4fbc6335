"""The factor benchmark's scores computed from scratch with numpy (the reference
attnedit.factors.benchmark is compared with)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnedit.data.shapes import FACTORS


def direct_scores(group: pd.DataFrame) -> dict:
    """The benchmark's definitions computed from scratch with numpy (R^2 as r^2)."""
    edits = group[group.alpha != 0]
    change = {k: np.abs(edits[f"d_{k}"].to_numpy()).mean() for k in FACTORS}
    dominant = max(change, key=change.get)
    alphas = np.array(sorted(group.alpha.unique()))
    means = np.array([group[group.alpha == a][f"d_{dominant}"].mean() for a in alphas])
    r = np.corrcoef(alphas, means)[0, 1]
    slope = np.cov(alphas, means, bias=True)[0, 1] / alphas.var()
    return {"dominant": dominant, "share": change[dominant] / sum(change.values()), "linearity": r**2,
            "slope": slope, "total": sum(change.values())}  # fmt: skip
