"""Table cells that keep their numbers: Markdown and LaTeX show the text (e.g. the
"mean ± std" of the existing tables) with the CI and the NaN / failure counts beside it;
CSV files get the numbers in numeric columns ("<column>_mean", "<column>_ci_low", ...).
A table is a DataFrame whose metric cells are ``Cell`` objects; render.py splits them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from attnedit.columns import (
    CI_HIGH,
    CI_LOW,
    DIFF,
    MEAN,
    N_FAILED,
    N_FINITE,
    N_NAN,
    P_VALUE,
    SIGNIFICANT,
    STD,
    failed_mask,
)
from attnedit.report.stats import LEVEL, Paired, mean_ci

CI_LABEL = f"{LEVEL:.0%} CI"
STATS_NOTE = ("[means and std over finite values: NaN (empty region, failed case) skipped; n_nan: non-finite values "
              "skipped, n_failed: cases that raised; {ci}]")


@dataclass(frozen=True)
class Cell:
    text: str
    numbers: dict = field(default_factory=dict)  # CSV: "<column>_<key>" -> number
    extra: dict = field(default_factory=dict)  # Markdown / LaTeX: "<column> <key>" -> text beside the cell
    kind: str = "stat"

    def __str__(self) -> str:
        return self.text


def split_failed(group: pd.DataFrame, metric: str) -> tuple[pd.Series, int]:
    """(the metric's values of the cases that did not fail, float; how many failed)."""
    failed = failed_mask(group)
    return group.loc[~failed, metric].astype(float), int(failed.sum())


def stat_cell(values: pd.Series, failed: int = 0, digits: int = 4, scale: float = 1.0, std: bool = True) -> Cell:
    """"mean ± std" (or the mean alone, ``std=False``) over the finite scaled values, with
    the count of non-finite ones; numbers: mean, std, CI, n, n_nan, n_failed."""
    values = values.astype(float) * scale
    kept = values[values.map(math.isfinite)]
    n_nan = len(values) - len(kept)
    if kept.empty:
        text, mean, sd = "n/a", float("nan"), float("nan")
    else:
        mean, sd = float(kept.mean()), float(kept.std(ddof=0))
        text = f"{mean:.{digits}f} ± {sd:.{digits}f}" if std else f"{mean:.{digits}f}"
        if std and n_nan:
            text += f" ({n_nan} non-finite)"
    low, high = mean_ci(kept.to_numpy())
    numbers = {MEAN: mean, STD: sd, CI_LOW: low, CI_HIGH: high, N_FINITE: len(kept), N_NAN: n_nan, N_FAILED: failed}
    ci = "n/a" if not math.isfinite(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"
    return Cell(text, numbers, {CI_LABEL: ci, N_NAN: str(n_nan), N_FAILED: str(failed)})


def group_cell(group: pd.DataFrame, metric: str, digits: int = 4, scale: float = 1.0, std: bool = True) -> Cell:
    values, failed = split_failed(group, metric)
    return stat_cell(values, failed, digits, scale, std)


def paired_cell(result: Paired, digits: int = 4, scale: float = 1.0) -> Cell:
    """"+0.0123 [+0.0050, +0.0200] p=0.002 (n=100)", "n.s." where p >= 0.05."""
    numbers = {DIFF: result.diff * scale, CI_LOW: result.ci_low * scale, CI_HIGH: result.ci_high * scale,
               P_VALUE: result.p, N_FINITE: result.n, SIGNIFICANT: result.significant}
    if result.n == 0:
        return Cell("n/a (no pairs)", numbers, kind="paired")
    d = digits
    text = (f"{result.diff * scale:+.{d}f} [{result.ci_low * scale:+.{d}f}, {result.ci_high * scale:+.{d}f}] "
            f"p={result.p:.3g} (n={result.n})")
    return Cell(text if result.significant else f"{text} n.s.", numbers, kind="paired")


def spread_cell(means: list[float], digits: int = 4, unit: str = "seeds", kind: str = "spread") -> Cell:
    """Across seeds (or another ``unit``: label permutations): "mean ± std (k seeds)" of the
    per-seed means; numbers: mean, std, min, max, and the count under ``unit``."""
    values = np.asarray([m for m in means if math.isfinite(m)], dtype=float)
    if len(values) == 0:
        return Cell("n/a", {MEAN: float("nan"), STD: float("nan"), "min": float("nan"), "max": float("nan"),
                            unit: 0}, kind=kind)
    numbers = {MEAN: float(values.mean()), STD: float(values.std(ddof=0)), "min": float(values.min()),
               "max": float(values.max()), unit: len(values)}
    text = f"{values.mean():.{digits}f} ± {values.std(ddof=0):.{digits}f} ({len(values)} {unit})"
    return Cell(text, numbers, {"min..max": f"{values.min():.{digits}f}..{values.max():.{digits}f}"}, kind=kind)
