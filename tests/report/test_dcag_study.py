"""The DCAG study's report (write_report, the runner's tables): each run gets its own
tables; on a synthetic 3x3 grid, what the tiny run cannot reach cheaply: NaN skipping, a
full contour grid, points off the (dk, dv) plane, extra scales, run selection, a
reference without scales, runs without the PIE-Bench fidelity metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnedit.data.piebench import CATEGORY_NAMES
from attnedit.errors import DataError
from attnedit.report.dcag.points import GRID_KEYS, guidance_label
from attnedit.report.dcag.runs import study_runs
from attnedit.report.dcag.study import write_report
from attnedit.report.runs import load_runs
from attnedit.store.run_store import RunStore
from dcag_study import REFERENCE, mean_std, read_table


def parse(cell: str) -> tuple[float, float]:
    mean, std = cell.split(" (")[0].split(" ± ")
    return float(mean), float(std)


def test_each_run_gets_its_own_study_tables(dcag_study_runs):
    _, dcag, none = dcag_study_runs
    unedited = read_table(none, "main")  # the unedited run alone: its point beside the published ones
    assert unedited.run.tolist() == ["none"] + ["not run"] * 4 and unedited.dk.tolist()[:1] == [1.0]
    for name in ("main", "grid", "by_category_lpips_whole", "by_category_lpips_unedit_part"):
        assert (dcag / "tables" / f"{name}.md").exists() and (dcag / "tables" / f"{name}.tex").exists(), name
    main = read_table(dcag, "main")
    assert main[main.run == "dcag"].guidance.tolist() == ["DCAG", "DCAG"]  # one row per grid point, not pooled
    assert (dcag / "figures" / "fidelity_vs_editability.png").exists()


# -- report logic on a synthetic 3x3 grid ----------------------------------------------
SYNTHETIC = {"lpips_whole": (0.1, 0.5), "psnr_unedit_part": (15, 30), "clip_similarity_target_image": (20, 30)}


def fake_run(root, name, method, points, samples, reference=None, seed=0, nan_sample=None, metrics=SYNTHETIC):
    """A run directory like the runner writes one: manifest and rows of random metric values."""
    rng = np.random.default_rng(seed)
    store = RunStore(root / name)
    target = "attnedit.methods.base.NoEdit" if method == "none" else "attnedit.methods.bias_delta.method.BiasDelta"
    store.write_json("manifest.json", {"config": {"name": "synthetic", "method": {"_target_": target},
                                                  "tables": {"reference": reference}},
                                       "metric_order": list(metrics), "model": {"weights_sha256_16": "abc"}})
    rows = []
    for sample, category in samples:
        for point in points:
            scales = dict(zip(GRID_KEYS, (*point, 1.0, 1.0, 1.0, 1.0)[:6]))
            row = {"case_id": f"{sample}|{method}|{point}", "sample_id": sample, "category": category, "method": method,
                   **({} if method == "none" else scales), **{m: rng.uniform(*span) for m, span in metrics.items()},
                   "random_backbone": False, "model_random_weights": False}
            if sample == nan_sample:
                row["psnr_unedit_part"] = float("nan")  # an all-ones mask: the background is empty
            rows.append(row)
    store.append(rows)
    return store.run_dir


def test_synthetic_grid_nan_skipping_and_full_contours(tmp_path):
    samples = [("a", "0"), ("b", "3"), ("c", "3")]
    grid = [(dk, dv) for dk in (1.0, 1.1, 1.2) for dv in (1.0, 1.1, 1.2)]
    run = fake_run(tmp_path, "grid", "dcag", grid, samples, reference=str(REFERENCE), nan_sample="b")
    report = write_report([run])
    assert report.folder == run and len(report.figures) == 2
    rows = RunStore(run).read()
    grid_table = report.tables["grid"]
    assert len(grid_table) == 9 and grid_table.guidance.tolist()[:5] == ["none", "GRAG", "GRAG", "V only", "V only"]
    for row in grid_table.to_dict("records"):
        group = rows[(rows.dk.round(4) == row["dk"]) & (rows.dv.round(4) == row["dv"])]
        cell = row["PSNR background [dB]"]
        assert cell.endswith("(1 non-finite)")
        assert parse(cell) == pytest.approx(mean_std(group.psnr_unedit_part, "psnr"), abs=0.006)
    main = report.tables["main"]
    for row in main[main.run == "dcag"].to_dict("records"):
        group = rows[(rows.dk.round(4) == row["dk"]) & (rows.dv.round(4) == row["dv"])]
        assert parse(row["LPIPS whole [x10^3]"]) == pytest.approx(mean_std(group.lpips_whole, "lpips"), abs=0.006)
    by_category = report.tables["by_category_lpips_whole"]
    for row in by_category.to_dict("records"):
        group = rows[(rows.dk.round(4) == row["dk"]) & (rows.dv.round(4) == row["dv"])]
        for category in ("0", "3"):
            want = group[group.category == category].lpips_whole.mean() * 1e3
            assert float(row[f"{category} {CATEGORY_NAMES[category]} [x10^3]"]) == pytest.approx(want, abs=0.006)
    assert main[(main.dk == 1.1) & (main.dv == 1.0)]["published source"].str.contains("unverified").all()
    assert main[main.run == "dcag"].shape[0] == 9
    not_run = main[main.run == "not run"]  # published points off this grid: shown, nothing measured
    assert sorted(zip(not_run.dk, not_run.dv)) == [(1.1, 1.15), (1.15, 1.0), (1.15, 1.15)]
    assert (not_run["LPIPS whole [x10^3]"] == "not run").all()
    means = pd.read_csv(run / "tables" / "grid_means.csv")
    assert len(means) == 9 and means.psnr_unedit_part.notna().all()


def test_synthetic_points_off_the_plane_and_run_selection(tmp_path):
    samples = [("a", "0"), ("b", "1")]
    run = fake_run(tmp_path, "q", "dcag", [(1.1, 1.0, 1.0, 1.0, 1.3)], samples)  # dq = 1.3
    none = fake_run(tmp_path, "none", "none", [()], samples, seed=1)
    assert study_runs(load_runs([run, none])) and not study_runs(load_runs([none]))
    report = write_report([run, none], tmp_path / "out")
    main = report.tables["main"]
    assert "dq" in main and main.guidance.tolist() == ["none", "GRAG +Q"]
    assert "published source" not in main  # no reference configured
    means = pd.read_csv(tmp_path / "out" / "tables" / "grid_means.csv")
    assert list(zip(means.dk, means.dv)) == [(1.0, 1.0)]  # the dq point is off the (dk, dv) plane
    assert guidance_label(1.0, 1.2) == "V only" and guidance_label(1.1, 1.2, bq=0.9) == "DCAG +Q"


def test_reference_without_scales_is_a_clear_error(tmp_path):
    bad = tmp_path / "ref.csv"
    bad.write_text("method,lpips_whole,source\nDCAG,0.2,somewhere\n")
    run = fake_run(tmp_path, "grid", "dcag", [(1.1, 1.15)], [("a", "0")], reference=str(bad))
    with pytest.raises(DataError, match="lacks the 'dk' column"):
        write_report([run])


def test_runs_without_piebench_fidelity_metrics_get_the_grid_table(tmp_path):
    run = fake_run(tmp_path, "plain", "grag", [(1.1, 1.0), (1.2, 1.0)], [("a", None)],
                   metrics={"ssim": (0.5, 0.9), "psnr": (20, 30)})
    report = write_report([run])
    assert list(report.tables) == ["grid"] and report.figures == []
    assert report.tables["grid"].columns.tolist()[-2:] == ["SSIM whole [x10^2]", "PSNR whole [dB]"]
