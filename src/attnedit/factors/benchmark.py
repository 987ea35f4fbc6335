"""The factor benchmark: which known factors does each discovered direction change?

From the per-case ``d_<factor>`` columns of the ``factors`` metric (metrics/factors.py),
for every (method, direction), over its edits (alpha != 0):

- ``change_<factor>``: mean |d_factor| (in units of the factor's range; shape: TV distance);
- ``dominant``: the factor with the largest mean change, ``total``: the sum over factors;
- ``share``: change of the dominant factor / total, the disentanglement score: 1 when a
  direction moves a single factor, 1/6 when it moves all six equally;
- ``linearity``: R^2 of a straight line fitted to the mean signed change of the dominant
  factor at each alpha (alpha 0 included when the run has it), against alpha; shape's
  change is a distance (never negative), so a shape-dominant direction cannot score high;
- ``slope``: that line's slope (change of the dominant factor per unit alpha).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnedit.data.shapes import FACTORS

CHANGE_COLUMNS = [f"d_{name}" for name in FACTORS]


def has_factor_columns(frame: pd.DataFrame) -> bool:
    return all(c in frame for c in CHANGE_COLUMNS) and "direction" in frame


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, R^2) of the least-squares line y = a + b x; R^2 is NaN when y is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    total = ((y - y.mean()) ** 2).sum()
    if total == 0:
        return float(slope), float("nan")
    return float(slope), float(1 - ((y - intercept - slope * x) ** 2).sum() / total)


def direction_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, direction): changes per factor, dominant, share, linearity, slope."""
    if not has_factor_columns(frame):
        raise ValueError(f"the factor benchmark needs the columns direction, {', '.join(CHANGE_COLUMNS)} "
                         "(metrics=shapes on model=shapes_ddpm)")
    rows = []
    for (method, direction), group in frame.groupby(["method", "direction"], sort=True):
        edits = group[group.alpha != 0]
        if edits.empty:
            continue
        change = {name: float(edits[f"d_{name}"].abs().mean()) for name in FACTORS}
        total = sum(change.values())
        dominant = max(change, key=change.get)
        per_alpha = group.groupby("alpha")[f"d_{dominant}"].mean()
        slope, r2 = line_fit(per_alpha.index.to_numpy(), per_alpha.to_numpy())
        label = group.label.iloc[0] if "label" in group else None
        rows.append({
            "method": method, "direction": direction, "label": label,
            **{f"change_{k}": v for k, v in change.items()},
            "total": total, "dominant": dominant, "share": change[dominant] / total if total > 0 else float("nan"),
            "linearity": r2, "slope": slope, "edits": len(edits),
        })  # fmt: skip
    return pd.DataFrame(rows)


def method_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per method: mean share and linearity over its directions, how many distinct
    factors its directions dominate, mean total change."""
    rows = []
    for method, group in scores.groupby("method", sort=True):
        rows.append({
            "method": method, "directions": len(group),
            "share": group.share.mean(), "linearity": group.linearity.mean(),
            "distinct_dominant": group.dominant.nunique(),
            "dominant_factors": ", ".join(sorted(set(group.dominant))),
            "total_change": group.total.mean(),
        })  # fmt: skip
    return pd.DataFrame(rows)


def factor_plot(scores: pd.DataFrame, note: str = "", cell: float = 0.55):
    """Per method, a heatmap of directions x factors: each factor's part of the direction's
    total change; the number is the share of the dominant factor. ``note``: the model,
    layers and alpha scale shown, in the title."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted(scores.method.unique())
    height = max(3, *(len(scores[scores.method == m]) for m in methods))  # >= 3 rows: room for the colorbar
    fig, axes = plt.subplots(1, len(methods), figsize=(len(methods) * cell * (len(FACTORS) + 2.5), cell * height + 1.6),
                             squeeze=False, layout="constrained")  # constrained: the suptitle gets its own row
    for ax, method in zip(axes[0], methods):
        group = scores[scores.method == method].sort_values("direction")
        with np.errstate(invalid="ignore", divide="ignore"):  # no change at all: an empty (NaN) row, no warning
            parts = group[[f"change_{k}" for k in FACTORS]].to_numpy() / group.total.to_numpy()[:, None]
        image = ax.imshow(parts, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(FACTORS)), FACTORS, rotation=60, fontsize=7)
        ax.set_yticks(range(len(group)), [f"{d} ({s:.2f})" for d, s in zip(group.direction, group.share)], fontsize=7)
        ax.set_title(f"{method}\nshare {group.share.mean():.2f}, linearity {group.linearity.mean():.2f}", fontsize=8)
    # below the panels: the label's length is the panels' width, not the height of a few rows
    bar = fig.colorbar(image, ax=list(axes[0]), location="bottom", fraction=0.05, shrink=0.6, aspect=30)
    bar.set_label("part of the direction's total change", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    title = "Factor benchmark: rows are directions (share of their dominant factor)" + (f"; {note}" if note else "")
    fig.suptitle("\n".join(textwrap.wrap(title, 70)), fontsize=8)
    return fig
