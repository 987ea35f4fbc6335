"""The judged tables every report adds: a GEdit run's benchmark tables per edit (grid
point), titled with who judged and whose prompts; two judges of one run compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attnedit.report.judged import edit_labelled, judged_tables
from attnedit.report.runs import Run


def stack(prefix: str, official) -> dict:
    return {"hash": f"h{prefix}", "backend": {"model": f"judge-{prefix}"},
            "prompts": {"official": official, "sha256": "ab" * 32}, "protocol": {"protocol": "VIEScoreTie"}}


def planted(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for dk in (1.1, 1.15):
        for i in range(12):
            row = {"case_id": f"{i}|{dk}", "sample_id": f"k{i}", "method": "dcag", "dk": dk, "dv": 1.15,
                   "category": ("color_alter", "subject-add")[i % 2], "intersection_exist": i % 3 == 0,
                   "instruction_language": "en", "failed": False, "judge_stack": '{"a": "ha", "b": "hb"}'}
            for prefix in ("a", "b"):
                sc, pq = rng.integers(0, 11), rng.integers(0, 11)
                row.update({f"{prefix}_sc": float(sc), f"{prefix}_pq": float(pq), f"{prefix}_o": float(np.sqrt(sc * pq)),
                            **{f"{prefix}_{c}_failed": False for c in ("sc", "pq", "o")}})
            rows.append(row)
    return pd.DataFrame(rows)


def test_a_gedit_run_gets_tables_per_grid_point_titled_and_two_judges_compared(tmp_path):
    frame = planted()
    run = Run(Path(tmp_path), frame, {"dataset": {"name": "gedit_bench"},
                                      "judge_stacks": {"a": stack("a", None), "b": stack("b", True)}})
    tables = {t.name: t for t in judged_tables([run])}
    agreement = tables["agreement_a_o_b_o"].frame.set_index("method")
    for label, part in edit_labelled(frame).groupby("method"):
        rho = stats.spearmanr(part.a_o, part.b_o).statistic
        tau = stats.kendalltau(part.a_o, part.b_o).statistic
        assert agreement.loc[label, "spearman"] == pytest.approx(rho, abs=1e-12)
        assert agreement.loc[label, "kendall"] == pytest.approx(tau, abs=1e-12)
    assert set(edit_labelled(frame).method) == {"dcag dk=1.1", "dcag dk=1.15"}  # dv is constant: not in the label
    gedit = [t for name, t in tables.items() if name.startswith("a_") or name.startswith("b_")]
    assert len(gedit) == 4  # 2 judges x 2 grid points
    for table in gedit:
        if table.name.startswith("a_"):
            assert "ATTNEDIT'S OWN PROMPTS" in table.title and "judge-a" in table.title
        else:
            assert "official prompts" in table.title and "OWN PROMPTS" not in table.title


def test_runs_of_other_datasets_get_no_benchmark_tables(tmp_path):
    run = Run(Path(tmp_path), planted(), {"dataset": {"name": "piebench"},
                                          "judge_stacks": {"a": stack("a", None)}})
    assert judged_tables([run]) == []
