"""Several runs' study: paired comparisons on sample ids with runs named by the config
keys in which they differ, a seeds axis for runs differing only in the first seed, and
attnedit-tables over runs of two models drawing the cross-dataset figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps

from attnedit.cli.tables import main as tables
from attnedit.config import compose
from attnedit.report.runs import load_runs, run_labels
from attnedit.report.studies import write_study
from attnedit.run.runner import Runner
from harness import run_overrides
from planted_runs import sad_run
from table_files import notes_text


def test_comparison_pairs_on_sample_ids_and_names_runs_by_their_config(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(0.7, 0.1, size=(40, 2))
    better = base + 0.05 + rng.normal(0, 0.02, size=(40, 2))
    same = base + rng.normal(0, 0.02, size=(40, 2))
    runs = [sad_run(tmp_path, "sad", {"ssim": base}), sad_run(tmp_path, "better", {"ssim": better}, method="pullback"),
            sad_run(tmp_path, "same", {"ssim": same}, method="sad",
                    config={"method": {"name": "sad", "position": "before_norm"}})]
    kind, folder, text = write_study(runs, tmp_path / "cmp")
    assert kind == "comparison"
    table = pd.read_csv(folder / "comparison_paired.csv")
    assert table.method.tolist() == ["pullback", "sad (position=before_norm)"]
    assert (table.against == "sad (position=after_norm)").all()
    for method, b in (("pullback", better), ("sad (position=before_norm)", same)):
        row = table.set_index("method").loc[method]
        diff = b.mean(axis=1) - base.mean(axis=1)  # per sample: the mean over its cases
        assert row.ssim_p == pytest.approx(sps.wilcoxon(diff).pvalue, rel=1e-12)
        assert row.ssim_diff == pytest.approx(diff.mean(), abs=1e-12) and row.ssim_n == 40
    assert bool(table.ssim_significant[0]) and not bool(table.ssim_significant[1])
    rows = [line for line in (folder / "comparison_paired.md").read_text().splitlines() if line.startswith("| ")]
    assert "n.s." in rows[-1] and "n.s." not in rows[-2]  # the last row: sad (position=before_norm), the same values
    assert "Wilcoxon signed-rank" in notes_text(folder / "comparison_paired.md")
    comparison = pd.read_csv(folder / "comparison.csv")
    assert comparison.method.tolist() == ["sad (position=after_norm)", "pullback", "sad (position=before_norm)"]


def test_runs_differing_only_in_first_seed_give_a_seeds_axis(tmp_path):
    rng = np.random.default_rng(2)
    values = [rng.normal(25, 1, size=(6, 2)) for _ in range(3)]
    runs = [sad_run(tmp_path, f"seed{i}", {"psnr": v}, config={"dataset": {"first_seed": 100 * i}})
            for i, v in enumerate(values)]
    assert run_labels(load_runs(runs)) == [f"sad (first_seed={100 * i})" for i in range(3)]
    _, folder, _ = write_study(runs, tmp_path / "cmp")
    seeds = pd.read_csv(folder / "comparison_seeds.csv").iloc[0]
    means = np.array([v.mean() for v in values])
    assert (seeds.method, seeds.first_seeds, seeds.psnr_seeds) == ("sad", "0, 100, 200", 3)
    assert (seeds.psnr_mean, seeds.psnr_std) == pytest.approx((means.mean(), means.std()), abs=1e-12)
    assert (seeds.psnr_min, seeds.psnr_max) == pytest.approx((means.min(), means.max()), abs=1e-12)
    assert "RUNS DIFFER IN SAMPLES" not in (folder / "comparison.md").read_text()


def test_tables_of_runs_of_two_models_draw_the_cross_dataset_figure(finished_run, tiny_ddpm_dir, tmp_path, capsys):
    """lsun_sad's path: attnedit-tables over runs of different models -> comparison + figure."""
    cfg, _, run_dir = finished_run
    other = compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "model.name=tiny_ddpm_b", "dataset.num_samples=1"))
    other_dir = Runner(other).run()
    assert 0.0 not in other.method.alphas and "numerical floor" in (other_dir / "tables" / "summary.md").read_text()
    tables([str(run_dir), str(other_dir), "--out", str(tmp_path / "cmp")])
    printed = capsys.readouterr().out
    assert f"figure: {(tmp_path / 'cmp' / 'cross_dataset.png').resolve()}" in printed
    # 2 models x 2 dirs, 3 columns of 1.2 in, + 0.6 in for the title naming model, layer and alpha scale
    assert Image.open(tmp_path / "cmp" / "cross_dataset.png").size == (360, 540)
