"""Failure accounting for the runner: a case that raises becomes a failed row, not the end of the run.

The policy:
- a batch that raises is retried case by case, so only the case that fails fails (an
  out-of-memory error at batch 8 may pass at batch 1); a row computed alone after its
  batch failed says so in ``batch_failure`` (the batch's error text);
- a case that still raises alone is stored as a failed row: ``failed=True``,
  ``error="<ExceptionType>: <first line>"``, its metric columns NaN, no edited image
  (``image_path`` None). Successful rows have ``failed=False``, ``error=None``; rows
  without these columns count as successful;
- errors that would fail every case (:data:`STOP_ERRORS`: a bad config value, missing
  weights, a run folder that cannot be written) stop the run at once;
- resuming retries failed and missing cases: only successful rows are "done". A retry's
  row replaces the failed one (:meth:`attnedit.store.run_store.RunStore.drop_failed`), so the store
  ends with one row per case; until then ``RunStore.read`` prefers a successful row of
  a case over a failed one, and the newest failed row over older ones;
- the run exits non-zero at the end if any case of the run is failed, after printing
  how many (:func:`failure_line`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import pandas as pd
import torch

from attnedit.columns import BATCH_FAILURE, ERROR, FAILED, failed_mask
from attnedit.errors import ConfigError, ResultsFolderError, WeightsNotFoundError

log = logging.getLogger(__name__)

#: Errors that no case can survive: the run stops at once instead of failing every case.
STOP_ERRORS = (ConfigError, WeightsNotFoundError, ResultsFolderError)
#: The longest error text kept in a row (a message that embeds a tensor can be huge).
ERROR_CHARS = 500

Case = tuple[str, dict[str, Any]]


def error_text(err: BaseException) -> str:
    """``"<ExceptionType>: <first line of the message>"``, at most ERROR_CHARS characters."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def run_cases(cases: list[Case], process: Callable[[list[Case]], list[dict[str, Any]]],
              failed_row: Callable[[Case, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``cases`` from ``process`` (one row per case, in order); a batch that raises
    is retried one case at a time and a case that raises alone gets ``failed_row``."""
    try:
        return [_succeeded(row) for row in process(cases)]
    except STOP_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - any per-case error is recorded, not fatal
        batch_error = error_text(err)
        _release_memory(err)
    if len(cases) == 1:
        log.warning("case %s failed: %s", _case_label(cases[0]), batch_error)
        return [failed_row(cases[0], batch_error)]
    log.warning("a batch of %d cases failed (%s); retrying its cases one by one", len(cases), batch_error)
    rows = []
    for case in cases:
        try:
            row = _succeeded(process([case])[0])
            row[BATCH_FAILURE] = batch_error  # passed alone: what happened to its batch
        except STOP_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001
            _release_memory(err)
            log.warning("case %s failed: %s", _case_label(case), error_text(err))
            row = failed_row(case, error_text(err))
            row[BATCH_FAILURE] = batch_error
        rows.append(row)
    return rows


def _succeeded(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, FAILED: False, ERROR: None, BATCH_FAILURE: row.get(BATCH_FAILURE)}


def _release_memory(err: BaseException) -> None:
    """After an out-of-memory error, hand the cached blocks back before the retry."""
    if isinstance(err, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _case_label(case: Case) -> str:
    sid, edit = case
    return f"{sid} {({k: v for k, v in edit.items() if k not in ('label', 'source_text', 'target_text')})}"



def failure_line(frame: pd.DataFrame, run_dir: Any) -> str | None:
    """The one line a run prints at its end when cases failed (None when none did)."""
    failed = frame[failed_mask(frame)]
    if failed.empty:
        return None
    kinds = failed[ERROR].astype(str).str.split(":", n=1).str[0].value_counts()
    summary = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    return (f"attnedit: {len(failed)} of {len(frame)} cases failed ({summary}); their rows hold the error "
            f"(columns 'failed', 'error' in {run_dir}/cases); rerun the same command to retry only them")
