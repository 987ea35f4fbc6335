"""Table cells on a planted run: NaN and failed cases counted apart, means and CIs over
the finite values, numbers in numeric CSV columns (never "x ± y")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnedit.report.studies import write_tables
from bootstrap import numpy_bootstrap
from planted_runs import sad_run


def test_tables_count_nan_and_failed_cases_and_write_numbers(tmp_path):
    rng = np.random.default_rng(0)
    psnr = rng.normal(30, 2, size=(12, 2))
    psnr[3, 1] = np.nan  # an empty region: NaN, not a failure
    run = sad_run(tmp_path, "run", {"psnr": psnr}, failed={(5, 0), (6, 1)})
    tables = write_tables(run)
    csv = pd.read_csv(run / "tables" / "summary.csv")
    kept = np.delete(psnr.ravel(), [3 * 2 + 1, 5 * 2, 6 * 2 + 1])
    row = csv.iloc[0]
    assert (row.psnr_n_nan, row.psnr_n_failed, row.psnr_n, row.n) == (1, 2, 21, 24)
    assert row.psnr_mean == pytest.approx(kept.mean(), abs=1e-12) and row.psnr_std == pytest.approx(kept.std(), abs=1e-12)
    assert (row.psnr_ci_low, row.psnr_ci_high) == pytest.approx(numpy_bootstrap(kept), abs=1e-12)
    for name in ("summary", "by_abs_alpha", "by_direction"):  # numbers in numeric columns, never "x ± y"
        frame = pd.read_csv(run / "tables" / f"{name}.csv")
        assert not frame.astype(str).apply(lambda c: c.str.contains("±")).any().any(), name
        assert {"psnr_mean", "psnr_ci_low", "psnr_ci_high", "psnr_n_nan", "psnr_n_failed"} <= set(frame), name
        markdown = (run / "tables" / f"{name}.md").read_text()
        assert "NaN (empty region, failed case) skipped" in markdown.splitlines()[0] and "psnr 95% CI" in markdown
    assert tables["summary"].psnr[0].startswith(f"{kept.mean():.4f} ± {kept.std():.4f} (1 non-finite)")
