"""attnedit-reproduce: a study run on the shipped shapes DDPM compared with its reference
CSV (experiments/quickstart/reference/shapes_smoke.csv, made by an independent run), a deliberately
failing tolerance, rows without a published value, and the tolerance rule itself checked
against numpy.isclose on planted values."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest

from attnedit.errors import ConfigError, DataError
from attnedit.cli.reproduce import main
from attnedit.run.reproduce import FAIL, NO_REFERENCE, NOT_MEASURED, PASS, compare, load_study
from harness import REPO

SHIPPED = REPO / "experiments" / "quickstart" / "reference" / "shapes_smoke.csv"


def run_main(*args: str) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, printed.getvalue()


@pytest.fixture(scope="module")
def shapes_smoke_study(tmp_path_factory):
    """attnedit-reproduce shapes_smoke: runs the study (8 edits of the shapes DDPM on the CPU)."""
    root = tmp_path_factory.mktemp("reproduce")
    code, text = run_main("shapes_smoke", f"paths.root_dir={root}", "device=cpu", "progress=false",
                          "numerical_floor.samples=0")
    run_dir = next((root / "results" / "runs" / "shapes_smoke").iterdir())
    return code, text, run_dir


def test_the_study_reproduces_its_reference(shapes_smoke_study):
    code, text, run_dir = shapes_smoke_study
    reference = pd.read_csv(SHIPPED)
    metrics = [c for c in ("ssim", "psnr", "factor_change") if c in reference]
    assert code == 0, text
    assert (printed_table(text).status == PASS).sum() == len(reference) * len(metrics), text
    assert "source" in text and reference.source.notna().all()
    # the measured means, recomputed from the stored cases with numpy
    rows = pd.read_parquet(run_dir / "cases")
    for _, ref in reference.iterrows():
        chosen = rows[(rows.method == ref.method) & np.isclose(rows.alpha, ref.alpha)]
        assert len(chosen) == 2 * 2  # samples x directions
        for metric in metrics:
            assert f"{chosen[metric].to_numpy(np.float64).mean():.6g}" in text, (ref.method, ref.alpha, metric)


def test_a_failing_tolerance_a_missing_reference_and_an_unmeasured_row(shapes_smoke_study, tmp_path):
    _, _, run_dir = shapes_smoke_study
    reference = pd.read_csv(SHIPPED)
    first = reference.iloc[0]
    shifted = first.copy()
    shifted["ssim"] = first.ssim + 2 * first.ssim_atol + 0.01  # outside its own tolerance
    blank = first.copy()
    blank[["ssim", "psnr", "factor_change"]] = math.nan  # nothing published: "no reference"
    blank["alpha"] = 0.6
    absent = first.copy()
    absent["method"] = "pullback"  # published, but the run has no such case
    edited = pd.concat([pd.DataFrame([shifted, blank, absent]), reference.iloc[1:]], ignore_index=True)
    path = tmp_path / "edited.csv"
    edited.to_csv(path, index=False)
    code, text = run_main("shapes_smoke", str(run_dir), "--reference", str(path))
    assert code == 1, text
    table = printed_table(text)
    failing = table[table.status == FAIL]
    assert failing[["row", "metric"]].values.tolist() == [[f"method=sad, alpha={first.alpha:g}", "ssim"]], text
    assert float(failing.published.iloc[0]) == pytest.approx(shifted.ssim, rel=1e-5)
    assert (table.status == NO_REFERENCE).sum() == 3 and (table.status == NOT_MEASURED).sum() == 3
    assert (table.status == PASS).sum() == len(table) - 7


def printed_table(text: str) -> pd.DataFrame:
    lines = [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("|")]
    return pd.DataFrame(lines[2:], columns=lines[0])


def test_tolerance_rule_is_numpys_isclose_on_planted_values():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"method": ["sad"] * 40 + ["random"] * 40, "alpha": np.tile([0.3, 0.6], 40),
                          "ssim": rng.uniform(0.5, 1.0, 80)})
    frame.loc[3, "ssim"] = math.nan  # skipped, as the tables skip it
    means = frame.groupby(["method", "alpha"]).ssim.mean()  # pandas skips NaN
    reference = pd.DataFrame([{"method": m.upper(), "alpha": a, "ssim": means[(m, a)] + shift, "ssim_atol": atol,
                               "ssim_rtol": rtol, "source": "planted"}
                              for (m, a), shift, atol, rtol in zip(means.index, (0.0, 0.02, -0.02, 0.03),
                                                                   (0.0, 0.01, 0.03, math.nan),
                                                                   (0.0, 0.01, math.nan, 0.05))])
    table = compare(frame, ["ssim"], reference, "planted.csv")
    expected = [PASS if np.isclose(means[(m, a)], p, rtol=0 if pd.isna(r) else r, atol=0 if pd.isna(t) else t)
                else FAIL for m, a, p, t, r in zip(reference.method.str.lower(), reference.alpha, reference.ssim,
                                                   reference.ssim_atol, reference.ssim_rtol)]
    assert table.status.tolist() == expected and PASS in expected and FAIL in expected
    assert np.allclose(table.measured, [means[(m.lower(), a)] for m, a in zip(reference.method, reference.alpha)])
    assert table.n.tolist() == frame.groupby(["method", "alpha"]).ssim.count().tolist()  # NaN not counted
    assert 19 in table.n.tolist()


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no reproduction 'nope'.*shapes_smoke"):
        load_study("nope")
    frame = pd.DataFrame({"method": ["sad"], "ssim": [0.5]})
    untolerant = pd.DataFrame({"method": ["sad"], "ssim": [0.5], "source": ["x"]})
    with pytest.raises(DataError, match="states no tolerance; fill ssim_atol or ssim_rtol"):
        compare(frame, ["ssim"], untolerant, "r.csv")
    code, _ = run_main("nope")
    assert code == 2 and "no reproduction 'nope'" in capsys.readouterr().err
