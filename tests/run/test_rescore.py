"""attnedit-rescore: metric columns recomputed from a run's saved images give
the run's own values, a changed convention gives other values and says so, a new column
is added, and tables refuse a column scored under two settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from attnedit.config import compose
from attnedit.errors import ConfigError
from attnedit.cli.rescore import main as rescore_main
from attnedit.run.runner import Runner
from attnedit.store.run_store import RunStore
from attnedit.report.studies import write_tables
from harness import run_overrides
from images import read_png
from table_files import notes


SAMPLES, DIRECTIONS, ALPHAS = 3, 2, (-0.4, 0.0, 0.4)
BATCH = 4  # the run's batch size, which attnedit-rescore takes: batches straddle samples (6 rows each)


@pytest.fixture(scope="module")
def small_run(tiny_ddpm_dir, tmp_path_factory):
    """3 samples x 2 directions x alphas -0.4, 0, 0.4 (alpha 0: the reference itself); batches
    of 4 rows straddle two samples, each row to be scored against its own sample's reference."""
    root = tmp_path_factory.mktemp("rescore")
    cfg = compose("config", run_overrides(root, tiny_ddpm_dir, f"dataset.num_samples={SAMPLES}",
                                          f"method.directions={DIRECTIONS}",
                                          f"method.alphas=[{','.join(map(str, ALPHAS))}]", f"batch_size={BATCH}",
                                          "numerical_floor.samples=0", "figures=false"))
    return Runner(cfg).run()


def _frame(run_dir) -> pd.DataFrame:
    return RunStore(run_dir).read().set_index("case_id").sort_index()


def test_rescoring_gives_the_runs_values_then_a_changed_border_and_a_new_column(small_run, capsys):
    run_dir = small_run
    before = _frame(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metric_settings"]["ssim"]["images"] == "uint8"
    assert manifest["metric_settings"]["ssim"]["convention"] == "crop"

    rows = SAMPLES * DIRECTIONS * len(ALPHAS)
    order = RunStore(run_dir).read()  # the order attnedit-rescore batches the rows in
    assert len(order) == rows and order.sample_id.nunique() == SAMPLES
    batches = [order.iloc[i : i + BATCH] for i in range(0, rows, BATCH)]
    assert any(b.reference_path.nunique() > 1 for b in batches), "some batch holds rows of several samples"
    references = [read_png(run_dir / p) for p in sorted(set(order.reference_path))]
    assert all(np.abs(a - b).max() > 0 for i, a in enumerate(references) for b in references[i + 1 :])

    rescore_main([str(run_dir), "metrics=fidelity"])
    assert f"rescored {rows} rows: psnr, ssim, ssim_border" in capsys.readouterr().out
    same = _frame(run_dir)
    for column in ("ssim", "psnr"):  # inf (alpha 0: identical images) stays inf
        a, b = before[column].to_numpy(), same[column].to_numpy()
        infinite = SAMPLES * DIRECTIONS if column == "psnr" else 0  # one alpha-0 row per sample and direction
        assert np.array_equal(np.isinf(a), np.isinf(b)) and np.isinf(a).sum() == infinite
        assert np.abs(a[np.isfinite(a)] - b[np.isfinite(b)]).max() <= 1e-6, column
    # the stored PSNR is the PSNR of the saved PNGs (numpy float64): the runner scores 8-bit images
    for row in same[np.isfinite(same.psnr)].itertuples():
        mse = np.mean((read_png(run_dir / row.image_path) - read_png(run_dir / row.reference_path)) ** 2)
        assert row.psnr == pytest.approx(-10 * math.log10(mse), abs=1e-4)

    rescore_main([str(run_dir), "metrics.ssim.border=pad"])  # SSIM only, the torchmetrics 1.5+ reading
    padded = _frame(run_dir)
    edited = np.isfinite(before.psnr)
    assert (np.abs(padded.ssim[edited] - before.ssim[edited]) > 1e-6).all()
    assert (padded.ssim_border == "pad").all() and np.array_equal(padded.psnr, same.psnr)
    settings = json.loads((run_dir / "manifest.json").read_text())["metric_settings"]
    assert settings["ssim"]["config"]["border"] == "pad" and settings["ssim"]["convention"] == "pad"
    assert settings["ssim"]["hash"] != manifest["metric_settings"]["ssim"]["hash"]
    assert settings["psnr"] == manifest["metric_settings"]["psnr"]
    assert {json.loads(v)["ssim"] for v in padded.metric_settings} == {settings["ssim"]["hash"]}
    assert "ssim: border pad, not the reference's" in notes(run_dir / "tables" / "summary.md")

    rescore_main([str(run_dir), "+metrics.mse._target_=attnedit.metrics.fidelity.MSE"])  # a new column
    added = _frame(run_dir)
    for row in added.itertuples():
        mse = np.mean((read_png(run_dir / row.image_path) - read_png(run_dir / row.reference_path)) ** 2)
        assert row.mse == pytest.approx(mse, abs=1e-9)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metric_order"][-1] == "mse" and len(manifest["rescores"]) == 3
    assert pd.read_parquet(run_dir / "cases").mse.notna().all()


def test_tables_refuse_a_column_scored_under_two_settings(small_run, tmp_path):
    import shutil

    run_dir = shutil.copytree(small_run, tmp_path / small_run.name)
    store = RunStore(run_dir)
    row = store.read().iloc[0].to_dict()  # a row of the same column under other settings
    row.update(case_id="other", metric_settings=json.dumps({**json.loads(row["metric_settings"]), "psnr": "0" * 12}))
    store.append([row])
    with pytest.raises(ConfigError, match="column 'psnr' holds values computed with different settings"):
        write_tables(run_dir)


def test_bad_rescore_arguments_are_one_clear_error(small_run, capsys):
    for args, message in (([str(small_run), "model=tiny_ddpm"], "changes metric columns only"),
                          ([str(small_run)], "name the columns to rescore"),
                          ([str(small_run), "metrics.nope.x=1"], "are not metrics of this run"),
                          ([str(small_run.parent)], "is not a run directory")):
        with pytest.raises(SystemExit):
            rescore_main(args)
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
