"""The SAD tables of one run: on a planted run, the editing-time table's median, IQR and
load; on the tiny SAD study (all four paper metrics + LPIPS on random backbones), Table 2
is the paper's protocol (one edit per (sample, direction) at the label's sign) with the
published rows beside the measured ones, per-|alpha| tables show the rest, every title
carries the marks, and the comparison table follows the same protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnedit.cli.tables import main as tables
from attnedit.errors import ConfigError
from attnedit.report.marks import RANDOM_BACKBONE_MARK
from attnedit.report.runs import load_run
from attnedit.report.sad import run_frames, table2_cases
from attnedit.report.studies import write_tables
from planted_runs import sad_run
from sad_study import SIGN
from table_files import notes, notes_text


def test_editing_time_gives_median_iqr_and_load(tmp_path):
    seconds = np.random.default_rng(4).exponential(2.0, size=(10, 2))
    run = sad_run(tmp_path, "run", {"psnr": np.ones((10, 2))}, seconds=seconds)
    write_tables(run)
    row = pd.read_csv(run / "tables" / "editing_time.csv").iloc[0]
    q25, median, q75 = np.quantile(seconds.ravel(), [0.25, 0.5, 0.75])
    assert (row.edit_median_s, row.edit_q25_s, row.edit_q75_s) == pytest.approx((median, q25, q75), abs=1e-12)
    assert row.edit_iqr_s == pytest.approx(q75 - q25, abs=1e-12) and row.load_average == "1.5/1.2/1.0"
    assert "load average (1/5/15 min) per session: sad: 1.5/1.2/1.0" in (run / "tables" / "editing_time.md").read_text()


def test_table2_is_one_edit_per_sample_and_direction_at_the_label_sign(sad_study_run, capsys):
    tables([str(sad_study_run)])
    printed = capsys.readouterr().out
    table2 = pd.read_csv(sad_study_run / "tables" / "table2.csv", keep_default_na=False)
    metrics = ["ssim", "psnr", "id_sim", "directional_clip", "lpips"]  # CSV: numbers in numeric columns
    stats = ["mean", "std", "ci_low", "ci_high", "n", "n_nan", "n_failed"]
    assert list(table2.columns) == ["method", "n", *(f"{m}_{s}" for m in metrics for s in stats), "source"]
    assert table2.method.tolist() == ["sad", "SAD", "Riemannian pullback"]
    assert table2.source[0].startswith("measured") and "arXiv 2510.22650" in table2.source[1]
    frame = pd.read_parquet(sad_study_run / "cases")
    chosen = frame[(frame.direction == 0) & (frame.alpha == 0.4) | (frame.direction == 1) & (frame.alpha == -0.4)]
    assert int(table2.n[0]) == len(chosen) == 2
    for metric in ("ssim", "directional_clip"):
        mean, std = float(table2[f"{metric}_mean"][0]), float(table2[f"{metric}_std"][0])
        assert mean == pytest.approx(chosen[metric].mean(), abs=1e-4)
        assert std == pytest.approx(chosen[metric].std(ddof=0), abs=1e-4)
    assert table2.ssim_mean[1] == ""  # unknown published numbers stay empty, never invented
    text = (sad_study_run / "tables" / "table2.md").read_text()
    assert "Table 2 protocol" in text and "2 cases = 2 directions x 1 samples" in text
    for name in ("table2", "by_direction", "summary", "by_abs_alpha"):  # every note under its table
        md = notes(sad_study_run / "tables" / f"{name}.md")
        assert RANDOM_BACKBONE_MARK[1:-1] in md and "alpha_scale=token_norm" in md, name
        assert "directional_clip: templates custom(1), not the reference's" in md, name
        assert any(n.startswith("id_sim: FaceNet (facenet-pytorch InceptionResnetV1, VGGFace2, 160x160) on MTCNN face "
                                "crops") for n in md), name
        assert (sad_study_run / "tables" / f"{name}.tex").exists()
    printed_tables = printed.split("### ")[1:]  # the console: the warning under every table, not once
    assert len(printed_tables) >= 4 and all(RANDOM_BACKBONE_MARK[1:-1] in " ".join(t.split()) for t in printed_tables)
    by_direction = pd.read_csv(sad_study_run / "tables" / "by_direction.csv")
    assert sorted(by_direction.label.unique()) == ["old", "smiling"] and set(by_direction.label_sign) == {1, -1}
    # the rest, per |alpha| and sign: each cell holds one case per (sample, direction)
    by_abs = pd.read_csv(sad_study_run / "tables" / "by_abs_alpha.csv")
    assert sorted(zip(by_abs.abs_alpha, by_abs.edit_sign)) == [(0.2, "label"), (0.2, "opposite"),
                                                               (0.4, "label"), (0.4, "opposite")]
    assert (by_abs.n == 2).all()
    summary = pd.read_csv(sad_study_run / "tables" / "summary.csv")
    assert sorted(summary.abs_alpha) == [0.2, 0.4] and (summary.n == 4).all(), "no mean pools edit strengths"


def test_table2_alpha_not_in_the_run_is_one_clear_error(sad_study_run):
    frame = pd.read_parquet(sad_study_run / "cases")
    with pytest.raises(ConfigError, match=r"table2_alpha=0.3 .*\|alpha\| held: \[0.2, 0.4\]"):
        table2_cases(frame, 0.3)
    with pytest.raises(ConfigError, match="table2_alpha"):
        run_frames(load_run(sad_study_run), None, 0.6)


def test_comparison_table_follows_the_table2_protocol(sad_study_run, tmp_path):
    from attnedit.report.studies import write_study

    _, folder, text = write_study([sad_study_run], tmp_path)
    table = pd.read_csv(folder / "comparison.csv", keep_default_na=False)
    assert table.method[0] == "sad" and int(table.n[0]) == 2 and int(table.samples[0]) == 1
    frame = pd.read_parquet(sad_study_run / "cases")
    chosen = frame[frame.alpha == frame.direction.map(SIGN) * 0.4]
    mean = float(table.psnr_mean[0])
    assert mean == pytest.approx(chosen.psnr.mean(), abs=1e-4)
    caption = notes_text(folder / "comparison.md")
    assert "Table 2 protocol" in caption and "alpha_scale=token_norm" in notes(folder / "comparison.md")
    by_abs = pd.read_csv(folder / "comparison_by_abs_alpha.csv")
    assert len(by_abs) == 4 and (by_abs.n == 2).all()
