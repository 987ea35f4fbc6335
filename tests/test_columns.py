"""Column helpers shared by the runner, the tables and the trackers."""

from __future__ import annotations

import pandas as pd

from attnedit.columns import failures


def test_failures_of_runs_without_failure_columns_and_of_missing_flags():
    plain = pd.DataFrame({"case_id": ["a", "b"], "alpha": [0.2, 0.4], "ssim": [0.5, 0.7]})  # no failed, error columns
    assert failures(plain).empty and list(failures(plain).columns) == ["case_id", "alpha"]
    mixed = pd.DataFrame({"case_id": ["a", "b", "c"], "failed": [None, True, False], "error": [None, "E: x", None]})
    assert failures(mixed).to_dict("list") == {"case_id": ["b"], "error": ["E: x"]}
