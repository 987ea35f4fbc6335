"""The tiny DCAG study's report folder (attnedit-tables over its two runs), read by the
DCAG tables' and figures' tests; one per session."""

from __future__ import annotations

import pandas as pd
import pytest



@pytest.fixture(scope="session")
def dcag_study_report(dcag_study_runs):
    """(report folder, the rows of both runs)."""
    from attnedit.cli.tables import main as tables

    base, dcag, none = dcag_study_runs
    out = base / "report"
    tables([str(dcag), str(none), "--out", str(out)])
    return out, pd.concat([pd.read_parquet(dcag / "cases"), pd.read_parquet(none / "cases")], ignore_index=True)
