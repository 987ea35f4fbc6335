"""Published numbers: the reference CSV a run names, also where a run made before the
study folders recorded it (the checkout's results/reference/)."""

from __future__ import annotations

import pandas as pd
import pytest

from attnedit.errors import DataError
from attnedit.report.reference import read_reference
from harness import REPO


def test_a_reference_recorded_under_results_reference_is_read_from_its_study_folder(tmp_path):
    shipped = REPO / "experiments" / "quickstart" / "reference" / "shapes_smoke.csv"
    recorded = tmp_path / "checkout" / "results" / "reference" / "shapes_smoke.csv"
    pd.testing.assert_frame_equal(read_reference(recorded), pd.read_csv(shipped, dtype={"method": str, "source": str}))
    with pytest.raises(DataError, match="does not exist"):
        read_reference(tmp_path / "results" / "reference" / "no_such_study.csv")
    with pytest.raises(DataError, match="does not exist"):
        read_reference(tmp_path / "elsewhere" / "shapes_smoke.csv")
