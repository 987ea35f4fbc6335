"""Which columns show one case: its id, its keys (what was edited, and how) and its metrics.

One definition for every per-case view (the W&B case table, the HTML report's image
grid), so they show the same columns. Failed cases (``failed=True``, with the
``error`` text; runs older than failure accounting have neither column and count as
no failures) are listed apart by :func:`failures`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

CASE_ID = "case_id"
FAILED = "failed"
ERROR = "error"
#: What a case varies over, in display order: the filters of the per-case views.
#: SAD and its baselines: direction / label / alpha; GRAG / DCAG: the grid point (dk, dv).
KEY_COLUMNS = ("sample_id", "category", "method", "direction", "label", "alpha", "dk", "dv")


def metric_names(manifest: Mapping[str, Any] | None, rows: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """The run's metric columns, in config order: the manifest's ``metric_order`` (or its
    ``metrics``); without a manifest, the ``metric_weights`` the runner writes in each row."""
    manifest = manifest or {}
    if manifest.get("metric_order") or manifest.get("metrics"):
        return list(manifest.get("metric_order") or manifest["metrics"])
    names: dict[str, None] = {}
    for row in rows:
        weights = row.get("metric_weights")
        if isinstance(weights, str) and weights:
            names.update(dict.fromkeys(json.loads(weights)))
    return list(names)


def grid_columns(columns: Iterable[str], metrics: Iterable[str]) -> list[str]:
    """``case_id``, the key columns, then the metric columns: those present in ``columns``."""
    present = set(columns)
    wanted = [CASE_ID, *KEY_COLUMNS, *metrics]
    return [c for c in dict.fromkeys(wanted) if c in present]


def failed_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the failed cases; all False for runs written before failures were recorded."""
    if FAILED not in frame:
        return pd.Series(False, index=frame.index)
    return frame[FAILED].fillna(False).astype(bool)


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    """The failed cases: ``case_id``, their key columns and the ``error`` text."""
    failed = frame[failed_mask(frame)]
    columns = grid_columns(failed.columns, []) + ([ERROR] if ERROR in failed else [])
    return failed[columns].reset_index(drop=True)
