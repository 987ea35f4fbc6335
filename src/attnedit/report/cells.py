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


def _decimals(magnitude: float, digits: int) -> int:
    """Decimal places that give ``magnitude`` ``digits`` significant figures (after rounding:
    9.99996 to 4 figures is 10.00, two decimals)."""
    if magnitude == 0:
        return digits - 1
    rounded = float(f"{magnitude:.{digits - 1}e}")
    return digits - 1 - math.floor(math.log10(rounded))


def compact_text(mean: float, low: float, high: float, digits: int = 4) -> str:
    """"mean [low, high]" with the largest of the three at ``digits`` significant figures and
    all three at its decimal place (so they line up and compare); "n/a" for a NaN mean, the
    mean alone without a finite CI. Magnitudes below 1e-3 or from 1e5 share one exponent
    ("1.234e-05 [1.100e-05, 1.300e-05]")."""
    if not math.isfinite(mean):
        return "n/a"
    shown = [mean] + ([low, high] if math.isfinite(low) and math.isfinite(high) else [])
    magnitude = max(abs(v) for v in shown)
    decimals = _decimals(magnitude, digits)
    exponent = 0
    if magnitude and not 1e-3 <= float(f"{magnitude:.{digits - 1}e}") < 1e5:
        exponent = digits - 1 - decimals
        decimals = digits - 1
    suffix = f"e{exponent:+03d}" if exponent else ""

    def text(value: float) -> str:
        value = round(value / 10.0 ** exponent, max(decimals, 0)) + 0.0  # + 0.0: no "-0.00"
        return f"{value:.{max(decimals, 0)}f}{suffix}"

    if len(shown) == 1:
        return text(mean)
    return f"{text(mean)} [{text(low)}, {text(high)}]"


def plus_minus_text(mean: float, std: float, digits: int = 4) -> str:
    """"mean ± std" at the decimal place of the larger one's ``digits`` significant figures
    (as compact_text; outside 1e-3..1e5 each in its own exponent); "n/a" for a NaN mean."""
    if not math.isfinite(mean):
        return "n/a"
    magnitude = max(abs(mean), abs(std)) if math.isfinite(std) else abs(mean)
    if magnitude and not 1e-3 <= magnitude < 1e5:
        return f"{mean:.{digits - 1}e} ± {std:.{digits - 1}e}"
    decimals = max(_decimals(magnitude, digits), 0)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def compact_cell(cell: Cell, digits: int = 4) -> str:
    """A cell's text in the compact tables: "mean [CI]" (compact_text); a paired difference
    with its p ("n.s." where not significant); a spread "mean ± std (k seeds)". Counts (n,
    n_nan, n_failed) are the table's columns, not the cell's."""
    numbers = cell.numbers
    if cell.kind == "paired":
        if not numbers.get(N_FINITE):
            return "n/a (no pairs)"
        p = numbers.get(P_VALUE, float("nan"))  # no p for a single pair (a CSV cell left empty)
        p_text = f"p={p:.2g}" if math.isfinite(p) else "p n/a"
        text = f"{compact_text(numbers[DIFF], numbers[CI_LOW], numbers[CI_HIGH], digits)} {p_text}"
        return text if numbers.get(SIGNIFICANT) else f"{text} n.s."
    if cell.kind in ("spread", "permuted"):
        unit = next((k for k in numbers if k not in (MEAN, STD, "min", "max")), None)
        text = plus_minus_text(numbers.get(MEAN, float("nan")), numbers.get(STD, float("nan")), digits)
        return f"{text} ({numbers[unit]} {unit})" if unit and numbers.get(MEAN) == numbers.get(MEAN) else text
    if MEAN not in numbers:
        return cell.text
    return compact_text(numbers[MEAN], numbers.get(CI_LOW, float("nan")), numbers.get(CI_HIGH, float("nan")), digits)


def split_failed(group: pd.DataFrame, metric: str) -> tuple[pd.Series, int]:
    """(the metric's values of the cases that did not fail, float; how many failed)."""
    failed = failed_mask(group, metric)
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
