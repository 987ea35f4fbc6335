"""The columns of a run's rows and of the tables built from them: one spelling each,
and the few rules every reader of rows shares (which rows failed, which columns show a
case).

A case that raised is a row too (``failed`` True, its ``error`` text, metric columns
NaN); rows without a ``failed`` column count as successful.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

# Row columns written by the runner and read by every table, view and tool.
CASE_ID = "case_id"
SAMPLE_ID = "sample_id"
METHOD = "method"
CATEGORY = "category"
ALPHA = "alpha"
DIRECTION = "direction"
FAILED = "failed"  # True for a case that raised
ERROR = "error"  # "<ExceptionType>: <one line>" for a failed case, None otherwise
BATCH_FAILURE = "batch_failure"  # a case computed alone after its batch raised: the batch's error
SECONDS_PER_CASE = "seconds_per_case"
RANDOM_BACKBONE = "random_backbone"
MODEL_RANDOM_WEIGHTS = "model_random_weights"
METRIC_WEIGHTS = "metric_weights"
REFERENCE_KIND = "reference_kind"  # what a method with its own sampler was scored against (run/references.py):
UNEDITED, OWN_SAMPLER = "unedited", "own_sampler"  # the study's unedited sample | the one under the method's sampler
#: What a case varies over, in display order: the filters of the per-case views.
#: SAD and its baselines: direction / label / alpha; GRAG / DCAG: the grid point (dk, dv).
KEY_COLUMNS = (SAMPLE_ID, CATEGORY, METHOD, DIRECTION, "label", ALPHA, "dk", "dv")

# Table columns.
N = "n"  # cases in the group (rows, failed ones included)
SAMPLES = "samples"
SOURCE = "source"

# Per-metric statistics: CSV columns are "<metric>_<stat>"; Markdown and LaTeX show the
# formatted cell under the metric's name and the STAT_COLUMNS beside it.
MEAN, STD, CI_LOW, CI_HIGH = "mean", "std", "ci_low", "ci_high"
N_FINITE, N_NAN, N_FAILED = "n", "n_nan", "n_failed"
DIFF, P_VALUE, SIGNIFICANT = "diff", "p", "significant"


#: ``<column>_failed``: True where that column alone could not be computed (a judge's
#: unparsable reply, a refusal): the case's other columns stand, the tables count the
#: column's failures in its n_failed.
COLUMN_FAILED = "_failed"


def failed_mask(frame: pd.DataFrame, column: str | None = None) -> pd.Series:
    """True for the failed rows (and, with ``column``, the rows where that column failed);
    all False where the rows have no such flags."""
    failed = (frame[FAILED].fillna(False).astype(bool) if FAILED in frame
              else pd.Series(False, index=frame.index))
    flag = f"{column}{COLUMN_FAILED}" if column else None
    if flag and flag in frame:
        failed = failed | frame[flag].fillna(False).astype(bool)
    return failed


def successful(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~failed_mask(frame)]


def metric_names(manifest: Mapping[str, Any] | None, rows: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """The run's metric columns, in config order: the manifest's ``metric_order`` (or its
    ``metrics``); without a manifest, the ``metric_weights`` the runner writes in each row."""
    manifest = manifest or {}
    if manifest.get("metric_order") or manifest.get("metrics"):
        return list(manifest.get("metric_order") or manifest["metrics"])
    names: dict[str, None] = {}
    for row in rows:
        weights = row.get(METRIC_WEIGHTS)
        if isinstance(weights, str) and weights:
            names.update(dict.fromkeys(json.loads(weights)))
    return list(names)


def grid_columns(columns: Iterable[str], metrics: Iterable[str]) -> list[str]:
    """``case_id``, the key columns, then the metric columns: those present in ``columns``."""
    present = set(columns)
    wanted = [CASE_ID, *KEY_COLUMNS, *metrics]
    return [c for c in dict.fromkeys(wanted) if c in present]


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """The failed cases: ``case_id``, their key columns and the ``error`` text."""
    failed = frame[failed_mask(frame)]
    columns = grid_columns(failed.columns, []) + ([ERROR] if ERROR in failed else [])
    return failed[columns].reset_index(drop=True)
