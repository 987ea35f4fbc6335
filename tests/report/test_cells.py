"""Table cells on a planted run: NaN and failed cases counted apart, means and CIs over
the finite values, numbers in numeric CSV columns (never "x ± y")."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from attnedit.report.studies import write_tables
from bootstrap import numpy_bootstrap
from planted_runs import sad_run
from table_files import notes_text


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
        assert "NaN (empty region, failed case) skipped" in notes_text(run / "tables" / f"{name}.md"), name
    assert tables["summary"].psnr[0].startswith(f"{kept.mean():.4f} ± {kept.std():.4f} (1 non-finite)")
    # the compact Markdown: one cell "mean [CI]" beside its non-finite count, failed cases in a column
    lines = (run / "tables" / "summary.md").read_text().splitlines()
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| "))
    cell = dict(zip(header, row))
    assert cell["failed"] == "2" and cell["n"] == "24" and cell["psnr"].endswith(" (1 non-finite)")
    shown = [float(x) for x in re.findall(r"-?\d+\.\d+", cell["psnr"])]
    places = len(re.findall(r"-?\d+\.(\d+)", cell["psnr"])[0])
    expected = [kept.mean(), *numpy_bootstrap(kept)]
    assert all(abs(a - b) <= 0.5 * 10.0 ** -places + 1e-12 for a, b in zip(shown, expected)), (cell["psnr"], expected)
    assert len(shown) == 3 and 3 <= len(f"{max(map(abs, expected)):.{places}f}".replace(".", "").lstrip("0")) <= 4


def _reference_compact(mean, low, high, digits):
    """The decimal module's rounding of the largest magnitude to ``digits`` significant
    figures fixes the decimal place; each value is then its exact binary value rounded
    half-even at that place (whole below 1e5)."""
    from decimal import ROUND_HALF_EVEN, Context, Decimal

    largest = Context(prec=digits, rounding=ROUND_HALF_EVEN).plus(Decimal(max(abs(mean), abs(low), abs(high))))
    places = max(-largest.as_tuple().exponent, 0)  # up to 1e5, integers are shown whole
    quantum = Decimal(1).scaleb(-places)
    return [Decimal(float(v)).quantize(quantum, ROUND_HALF_EVEN) for v in (mean, low, high)], places


@pytest.mark.parametrize("digits", [3, 4])
def test_compact_text_rounds_all_three_at_the_largest_ones_significant_figures(digits):
    from attnedit.report.cells import compact_text

    rng = np.random.default_rng(1)
    for _ in range(300):
        scale = 10.0 ** rng.uniform(-2.9, 3.9)
        mean = rng.normal() * scale
        low, high = sorted(mean + rng.normal(size=2) * scale * rng.uniform(0.01, 2))
        text = compact_text(mean, low, high, digits)
        expected, places = _reference_compact(mean, low, high, digits)
        numbers = text.replace("[", "").replace("]", "").replace(",", "").split()
        assert [len(n.split(".")[1]) if "." in n else 0 for n in numbers] == [places] * 3, text
        assert [float(n) for n in numbers] == [float(e) for e in expected], (mean, low, high, text)
        assert text == f"{numbers[0]} [{numbers[1]}, {numbers[2]}]"


def test_compact_text_edge_cases_nan_missing_ci_and_shared_exponent():
    from attnedit.report.cells import compact_text

    assert compact_text(float("nan"), 0.0, 1.0) == "n/a"
    assert compact_text(1.5, float("nan"), float("nan")) == f"{1.5:.3f}"
    mean, low, high = 2.345678e-5, 1.98765e-5, 3.01234e-5  # below 1e-3: one exponent, the largest's
    exponent = int(f"{high:.3e}".split("e")[1])
    assert compact_text(mean, low, high) == " ".join(
        [f"{mean / 10.0 ** exponent:.3f}e{exponent:+03d}", f"[{low / 10.0 ** exponent:.3f}e{exponent:+03d},",
         f"{high / 10.0 ** exponent:.3f}e{exponent:+03d}]"])
    assert "-0.0" not in compact_text(-1e-9, -0.5, 0.5)
