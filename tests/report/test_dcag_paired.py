"""Paired tests of the DCAG grid points: each point against the unedited one (per image,
per category) and two points against each other on request, against scipy's Wilcoxon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from attnedit.store.run_store import RunStore


def dcag_run(root: Path, name: str, points: dict, categories: list[str]) -> Path:
    """``points``: {(dk, dv): lpips_whole per image}; (1, 1) alone is an unedited run."""
    store = RunStore(root / name)
    unedited = list(points) == [(1.0, 1.0)]
    target = "attnedit.methods.base.NoEdit" if unedited else "attnedit.methods.bias_delta.method.BiasDelta"
    store.write_json("manifest.json", {"config": {"name": "planted_dcag", "method": {"_target_": target}},
                                       "metric_order": ["lpips_whole"], "model": {"name": "qwen", "weights_sha256_16": "w"}})
    rows = []
    for (dk, dv), values in points.items():
        for i, value in enumerate(values):
            scales = {} if unedited else {"dk": dk, "dv": dv}
            rows.append({"case_id": f"{i}|{dk}|{dv}", "sample_id": f"img{i}", "category": categories[i],
                         "method": "none" if unedited else "dcag", **scales, "lpips_whole": float(value),
                         "random_backbone": False, "model_random_weights": False})
    store.append(rows)
    return store.run_dir


def test_dcag_points_are_paired_with_the_unedited_point_and_on_request(tmp_path, capsys):
    from attnedit.cli.tables import main as tables

    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 0.4, size=40)
    noise = rng.normal(0, 0.01, size=20)
    lower = base - 0.02 + rng.normal(0, 0.01, size=40)  # a real improvement
    null = base + np.r_[noise, -noise]  # planted null
    categories = [str(i % 2) for i in range(40)]
    none = dcag_run(tmp_path, "none", {(1.0, 1.0): base}, categories)
    grid = dcag_run(tmp_path, "grid", {(1.1, 1.15): lower, (1.1, 1.0): null}, categories)
    tables([str(grid), str(none), "--out", str(tmp_path / "study"), "--pair", "dk=1.1,dv=1", "dk=1.1,dv=1.15"])
    paired_csv = pd.read_csv(tmp_path / "study" / "tables" / "paired_vs_none.csv").set_index(["dk", "dv"])
    column = "LPIPS whole [x10^3] Δ"
    for point, values, significant in (((1.1, 1.15), lower, True), ((1.1, 1.0), null, False)):
        row = paired_csv.loc[point]
        assert row[f"{column}_p"] == pytest.approx(sps.wilcoxon(values - base).pvalue, rel=1e-12)
        assert row[f"{column}_diff"] == pytest.approx((values - base).mean() * 1e3, abs=1e-9)
        assert bool(row[f"{column}_significant"]) is significant
    by_category = pd.read_csv(tmp_path / "study" / "tables" / "paired_vs_none_by_category_lpips_whole.csv")
    odd = np.arange(40) % 2 == 1
    row = by_category.set_index(["dk", "dv"]).loc[(1.1, 1.15)]
    assert row["1 " + __import__("attnedit.data.piebench", fromlist=["x"]).CATEGORY_NAMES["1"] + " [x10^3] Δ_p"] == \
        pytest.approx(sps.wilcoxon(lower[odd] - base[odd]).pvalue, rel=1e-12)
    pair = pd.read_csv(tmp_path / "study" / "tables" / "paired_1.csv")
    assert pair.category[0] == "all" and pair[f"{column}_p"][0] == pytest.approx(sps.wilcoxon(lower - null).pvalue)
    assert "grid point dk=1.1,dv=1.15 against dk=1.1,dv=1" in (tmp_path / "study" / "tables" / "paired_1.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tables([str(grid), str(none), "--pair", "dk=1.3", "dk=1.1,dv=1"])
    assert "grid point 'dk=1.3' is not in these runs" in capsys.readouterr().err
