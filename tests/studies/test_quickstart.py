"""The quickstart (experiments/quickstart): the default run on the shipped shapes DDPM
reports the factor benchmark, and real shapes images are edited through inversion."""

from __future__ import annotations

import pandas as pd
import pytest

from attnedit.config import compose
from attnedit.data.shapes import FACTORS, ShapesDataset
from attnedit.run.runner import Runner
from factor_reference import direct_scores


def test_quickstart_on_the_shipped_model_reports_the_factor_benchmark(tmp_path):
    cfg = compose("config", [f"paths.root_dir={tmp_path}", "dataset.num_samples=2", "method.directions=2",
                             "method.alphas=[-0.6,0.0,0.6]", "batch_size=6", "device=cpu", "progress=false"])
    run_dir = Runner(cfg).run()
    frame = pd.read_parquet(run_dir / "cases")
    assert len(frame) == 2 * 2 * 3 and not frame.model_random_weights.any()
    unedited = frame[frame.alpha == 0]
    assert unedited[[f"d_{k}" for k in FACTORS]].abs().to_numpy().max() < 0.01  # alpha 0 = the unedited sample
    scores = pd.read_csv(run_dir / "tables" / "factor_directions.csv")
    assert list(scores.direction) == [0, 1] and set(scores.dominant) <= set(FACTORS)
    want = direct_scores(frame[frame.direction == 0])
    assert scores.share[0] == pytest.approx(want["share"], rel=1e-3)  # the CSV rounds to 4 digits
    assert (run_dir / "figures" / "factor_benchmark.png").stat().st_size > 0
    # Means over alphas leave the alpha-0 rows (no edit, PSNR ~130 dB) out; per-alpha tables keep them.
    summary = pd.read_csv(run_dir / "tables" / "summary.csv")
    edits = frame[frame.alpha != 0]
    assert summary.n[0] == len(edits) == 8
    assert summary.psnr_mean[0] == pytest.approx(edits.psnr.mean(), rel=1e-12)  # CSV: numeric columns
    assert summary.psnr_std[0] == pytest.approx(edits.psnr.std(ddof=0), rel=1e-12)
    by_direction = pd.read_csv(run_dir / "tables" / "by_direction.csv")
    assert sorted(by_direction.alpha.unique()) == [-0.6, 0.0, 0.6]
    assert "alpha = 0 rows (no edit) left out" in (run_dir / "tables" / "summary.md").read_text()


def test_real_shapes_images_are_edited_through_inversion(tmp_path):
    cfg = compose("config", [f"paths.root_dir={tmp_path}", "dataset=shapes", "dataset.num_samples=2", "method.directions=1",
                             "method.alphas=[0.0,0.6]", "batch_size=4", "device=cpu", "progress=false", "save_images=false"])
    frame = pd.read_parquet(Runner(cfg).run() / "cases")
    data = ShapesDataset(num_samples=2)
    assert sorted(frame.sample_id.unique()) == data.sample_ids()
    assert dict(zip(frame.sample_id, frame.category)) == {i: data.load(i).category for i in data.sample_ids()}
    assert frame[frame.alpha == 0][[f"d_{k}" for k in FACTORS]].abs().to_numpy().max() < 0.01
