"""Published numbers beside measured ones: a reference CSV (method, metric columns,
source) merged under a measured table, every row saying where it comes from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnedit.config import studies
from attnedit.errors import DataError


def read_reference(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        path = in_study_folder(path) or path
    if not path.exists():
        raise DataError(f"reference table {path} does not exist; see experiments/README.md for the format")
    try:
        frame = pd.read_csv(path, dtype={"method": str, "source": str})
    except Exception as err:
        raise DataError(f"reference table {path} is not a readable CSV ({err})") from err
    for column in ("method", "source"):
        if column not in frame:
            raise DataError(f"reference table {path} lacks the '{column}' column")
    return frame


def in_study_folder(path: Path) -> Path | None:
    """Where a reference CSV that a run recorded under the checkout's ``results/reference/``
    lives: ``experiments/<study>/reference/<file>`` (None: no study holds the file)."""
    if (path.parent.name, path.parent.parent.name) != ("reference", "results"):
        return None
    return next((folder / "reference" / path.name for folder in studies().values()
                 if (folder / "reference" / path.name).is_file()), None)


def with_reference(measured: pd.DataFrame, reference: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Measured rows (source 'measured') then published rows; empty published cells stay empty."""
    measured = measured.assign(source="measured (this harness)")
    published = reference.copy()
    for metric in metrics:
        if metric in published:
            published[metric] = published[metric].map(lambda v: "" if pd.isna(v) else f"{v:g}")
    published = published.assign(n="")
    columns = [c for c in measured.columns if c != "source"] + ["source"]
    return pd.concat([measured, published.reindex(columns=columns, fill_value="")], ignore_index=True)[columns]
