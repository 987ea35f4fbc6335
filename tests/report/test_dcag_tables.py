"""The DCAG study's tables on the tiny study's report: every number of the main, relative,
per-category and grid tables against an aggregation of the stored rows written here;
the published rows beside them carry their "secondary source, unverified" mark."""

from __future__ import annotations

import pandas as pd
import pytest

from attnedit.data.piebench import CATEGORY_NAMES
from attnedit.report.marks import (
    FUSED_ARITHMETIC_MARK, PNG_EDITS_MARK, RANDOM_BACKBONE_MARK, STOCK_UNGUIDED_MARK, title_marks,
)
from dcag_study import REFERENCE, WHOLE, mean_std, points_of, read_table
from table_files import heading, notes_text

HEADERS = {"lpips_whole": "LPIPS whole [x10^3]", "ssim_whole": "SSIM whole [x10^2]", "psnr_whole": "PSNR whole [dB]",
           "mse_whole": "MSE whole [x10^4]", "lpips_unedit_part": "LPIPS background [x10^3]",
           "psnr_unedit_part": "PSNR background [dB]",
           "clip_similarity_target_image": "CLIP score whole [CLIP score 0-100]"}


def numbers(row: dict, header: str) -> tuple[float, float]:
    """(mean, std) of a cell from its numeric CSV columns (CSV holds numbers, never "mean ± std" strings)."""
    return float(row[f"{header}_mean"]), float(row[f"{header}_std"])


def test_main_table_equals_the_rows_with_published_beside(dcag_study_report):
    out, rows = dcag_study_report
    main = read_table(out, "main")
    reference = pd.read_csv(REFERENCE)
    by_point = points_of(rows)
    measured = main[main.run != "not run"]
    assert [(r.guidance, r.dk, r.dv) for r in measured.itertuples()] == [
        ("none", 1.0, 1.0), ("DCAG", 1.10, 1.15), ("DCAG", 1.15, 1.15)]
    for row in measured.to_dict("records"):
        group = by_point[(row["dk"], row["dv"])]
        assert row["n"] == len(group) == 2
        for metric in WHOLE:
            want = mean_std(group[metric], metric)
            assert numbers(row, HEADERS[metric]) == pytest.approx(want, abs=1e-9), (row["dk"], row["dv"], metric)
    for published in reference.itertuples():
        row = main[(main.dk == published.dk) & (main.dv == published.dv)].iloc[0]
        assert float(row["LPIPS published† [x10^3]"]) == pytest.approx(published.lpips_whole * 1e3, abs=0.006)
        assert float(row["SSIM published† [x10^2]"]) == pytest.approx(published.ssim_whole * 1e2, abs=0.006)
        assert float(row["PSNR published† [dB]"]) == pytest.approx(published.psnr_whole, abs=0.006)
        assert float(row["MSE published† [as transcribed, unit not stated]"]) == published.mse_whole
        assert "secondary source, unverified" in row["published source"]
    not_run = main[main.run == "not run"]
    assert [(r.guidance, r.dk, r.dv) for r in not_run.itertuples()] == [("GRAG", 1.10, 1.0), ("GRAG", 1.15, 1.0)]
    assert (not_run[HEADERS["lpips_whole"] + "_mean"] == "").all()  # nothing measured: no number
    assert "| not run " in (out / "tables" / "main.md").read_text()
    title = notes_text(out / "tables" / "main.md")
    assert "piebench_dcag" in heading(out / "tables" / "main.md")
    for words in ("region: whole image", "secondary source, unverified", RANDOM_BACKBONE_MARK[1:-1],
                  FUSED_ARITHMETIC_MARK[1:-1], STOCK_UNGUIDED_MARK[1:-1], PNG_EDITS_MARK[1:-1]):  # not the official's
        assert words in title, words
    assert set(rows.guidance_arithmetic.dropna()) == {"fused"}
    official = rows.assign(guidance_arithmetic=rows.guidance_arithmetic.where(rows.guidance_arithmetic.isna(), "official"))
    assert FUSED_ARITHMETIC_MARK not in title_marks(official) and FUSED_ARITHMETIC_MARK in title_marks(rows)


def test_relative_change_equals_the_paired_rows(dcag_study_report):
    out, rows = dcag_study_report
    table = read_table(out, "main_relative")
    by_point = points_of(rows)
    none = by_point[(1.0, 1.0)].set_index("sample_id")
    reference = pd.read_csv(REFERENCE).set_index(["dk", "dv"])
    for row in table.to_dict("records"):
        point = by_point[(row["dk"], row["dv"])].set_index("sample_id")
        for metric in WHOLE:
            name = metric.split("_")[0].upper()
            want = (point[metric].mean() / none.loc[point.index, metric].mean() - 1) * 100
            assert float(row[f"{name} whole Δ% measured"]) == pytest.approx(want, abs=0.051)
            published = reference.loc[(row["dk"], row["dv"])]
            want = (published[metric] / reference.loc[(1.0, 1.0)][metric] - 1) * 100
            assert float(row[f"{name} Δ% published†"]) == pytest.approx(want, abs=0.051)


def test_category_and_grid_tables_equal_the_rows(dcag_study_report):
    out, rows = dcag_study_report
    by_point = points_of(rows)
    for metric, region in (("lpips_whole", "whole image"), ("lpips_unedit_part", "background")):
        table = read_table(out, f"by_category_{metric}")
        assert f"region: {region}" in notes_text(out / "tables" / f"by_category_{metric}.md")
        for row in table.to_dict("records"):
            group = by_point[(row["dk"], row["dv"])]
            for category in ("1", "2"):
                part = group[group.category == category]
                column = f"{category} {CATEGORY_NAMES[category]} [x10^3]"
                assert float(row[f"{column}_mean"]) == pytest.approx(part[metric].mean() * 1e3, abs=1e-9)
            assert float(row["all [x10^3]_mean"]) == pytest.approx(group[metric].mean() * 1e3, abs=1e-9)
    grid = read_table(out, "grid")
    clip = [c for c in grid.columns if c.startswith("CLIP")]
    assert grid.columns.tolist().index(clip[-1]) < grid.columns.tolist().index(HEADERS["lpips_whole"] + "_mean")
    for row in grid.to_dict("records"):
        group = by_point[(row["dk"], row["dv"])]
        for metric in ("clip_similarity_target_image", "lpips_unedit_part", "psnr_unedit_part", "mse_whole"):
            assert numbers(row, HEADERS[metric]) == pytest.approx(mean_std(group[metric], metric), abs=1e-9)
    title = notes_text(out / "tables" / "grid.md")
    assert "whole image" in title and "background" in title and "edit region" in title


def test_each_guided_point_is_compared_with_the_unguided_row_of_its_arithmetic():
    """A study holding both unguided rows, the stock one (dcag_row=none) and the official
    scripts' (1, 1) (dcag_row=none_official): official points change against the official
    (1, 1), fused points against the stock row; each table's title says which rows are not
    the official scripts' arithmetic."""
    from attnedit.report.dcag.tables import relative_table

    values = {("stock", 1.0): [0.20, 0.30], ("official", 1.0): [0.25, 0.45],
              ("official", 1.1): [0.30, 0.50], ("fused", 1.1): [0.28, 0.52]}
    frame = pd.DataFrame([
        {"run": f"{arithmetic}-{dk}", "guidance_arithmetic": arithmetic, "dk": dk, "dv": dk, "bk": 1.0, "bv": 1.0,
         "dq": 1.0, "bq": 1.0, "guidance": "none" if dk == 1 else "DCAG", "sample_id": sample, "category": "1",
         "lpips_whole": value}
        for (arithmetic, dk), column in values.items() for sample, value in zip(("a", "b"), column)])
    table = relative_table(frame, ["lpips_whole"], None).set_index("run")
    change = {run: float(table.loc[run, "LPIPS whole Δ% measured"]) for run in table.index}
    percent = {name: (sum(values[name]) / sum(values[base]) - 1) * 100
               for name, base in ((("official", 1.1), ("official", 1.0)), (("fused", 1.1), ("stock", 1.0)))}
    assert change == pytest.approx({"official-1.1": percent[("official", 1.1)],
                                    "fused-1.1": percent[("fused", 1.1)]}, abs=0.051)
    official = frame[frame.guidance_arithmetic == "official"]
    assert STOCK_UNGUIDED_MARK in title_marks(frame) and FUSED_ARITHMETIC_MARK in title_marks(frame)
    assert STOCK_UNGUIDED_MARK not in title_marks(official) and FUSED_ARITHMETIC_MARK not in title_marks(official)
