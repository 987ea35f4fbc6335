"""A full tiny SAD study with all four paper metrics (+ LPIPS) on random backbones: the
Directional CLIP texts follow each edit's sign, Table 2 is the paper's protocol (one edit
per (sample, direction) at the label's sign) with published rows beside the measured
ones, per-|alpha| tables show the rest, and every title carries the marks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnedit.config import REPO_ROOT, compose

from attnedit.cli.tables import main as tables
from attnedit.errors import ConfigError
from attnedit.run.runner import Runner
from attnedit.report.marks import RANDOM_BACKBONE_MARK
from attnedit.report.sad import build_tables, table2_cases

# direction 0: +alpha smiles; direction 1: -alpha ages the face (the label's sign is -1)
LABELS = ("+method.labels={0: {label: smiling, source: face, target: smiling face},"
          " 1: {label: old, source: face, target: old face, sign: -1}}")
SIGN = {0: 1, 1: -1}
TEXTS = {0: ("face", "smiling face"), 1: ("face", "old face")}


@pytest.fixture(scope="module")
def study_run(tiny_ddpm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cfg = compose("config", [
        "model=tiny_ddpm", f"paths.root_dir={root}", f"model.path={tiny_ddpm_dir}", "model.num_inference_steps=3",
        "metrics=sad", "metric_weights=random", "+metrics.directional_clip.model=ViT-S-32-alt",
        "+metrics.directional_clip.templates=['a photo of a {}.']", "dataset.num_samples=1", "method.directions=2",
        "method.alphas=[-0.4,-0.2,0.2,0.4]", LABELS, "batch_size=8", "progress=false", "device=cpu",
        f"tables.reference={REPO_ROOT}/experiments/celebahq_sad/reference/sad_celebahq_table2.csv", "+tables.table2_alpha=0.4",
    ])
    return Runner(cfg).run()


def test_rows_hold_every_metric_the_marks_and_texts_ordered_by_sign(study_run):
    frame = pd.read_parquet(study_run / "cases")
    assert len(frame) == 8
    for column in ("ssim", "psnr", "id_sim", "id_face_fallback", "directional_clip", "lpips"):
        assert column in frame and frame[column].notna().all(), column
    assert frame.random_backbone.all()
    assert frame.id_face_fallback.all(), "random-noise samples hold no face: the fallback crop is recorded"
    for row in frame.itertuples():  # the labeled change where sign(alpha) is the label's, its reverse elsewhere
        source, target = TEXTS[row.direction]
        expected = (source, target) if np.sign(row.alpha) == SIGN[row.direction] else (target, source)
        assert (row.source_text, row.target_text) == expected, row
        assert row.label_sign == SIGN[row.direction]
    assert (frame.directional_clip_templates == "custom(1)").all()
    assert (frame.window_bounds == "strict").all() and (frame.sad_matrix == "sum_qkv W^T W").all()


def test_table2_is_one_edit_per_sample_and_direction_at_the_label_sign(study_run, capsys):
    tables([str(study_run)])
    printed = capsys.readouterr().out
    table2 = pd.read_csv(study_run / "tables" / "table2.csv", keep_default_na=False)
    metrics = ["ssim", "psnr", "id_sim", "directional_clip", "lpips"]  # CSV: numbers in numeric columns (14.8)
    stats = ["mean", "std", "ci_low", "ci_high", "n", "n_nan", "n_failed"]
    assert list(table2.columns) == ["method", "n", *(f"{m}_{s}" for m in metrics for s in stats), "source"]
    assert table2.method.tolist() == ["sad", "SAD", "Riemannian pullback"]
    assert table2.source[0].startswith("measured") and "arXiv 2510.22650" in table2.source[1]
    frame = pd.read_parquet(study_run / "cases")
    chosen = frame[(frame.direction == 0) & (frame.alpha == 0.4) | (frame.direction == 1) & (frame.alpha == -0.4)]
    assert int(table2.n[0]) == len(chosen) == 2
    for metric in ("ssim", "directional_clip"):
        mean, std = float(table2[f"{metric}_mean"][0]), float(table2[f"{metric}_std"][0])
        assert mean == pytest.approx(chosen[metric].mean(), abs=1e-4)
        assert std == pytest.approx(chosen[metric].std(ddof=0), abs=1e-4)
    assert table2.ssim_mean[1] == ""  # unknown published numbers stay empty, never invented
    text = (study_run / "tables" / "table2.md").read_text()
    assert "Table 2 protocol" in text and "2 cases = 2 directions x 1 samples" in text
    for name in ("table2", "by_direction", "summary", "by_abs_alpha"):
        md = (study_run / "tables" / f"{name}.md").read_text()
        assert RANDOM_BACKBONE_MARK in md and "[alpha_scale=token_norm]" in md, name
        assert "[directional_clip: templates custom(1), not the reference's]" in md, name
        assert (study_run / "tables" / f"{name}.tex").exists()
    assert RANDOM_BACKBONE_MARK in printed
    by_direction = pd.read_csv(study_run / "tables" / "by_direction.csv")
    assert sorted(by_direction.label.unique()) == ["old", "smiling"] and set(by_direction.label_sign) == {1, -1}
    # the rest, per |alpha| and sign: each cell holds one case per (sample, direction)
    by_abs = pd.read_csv(study_run / "tables" / "by_abs_alpha.csv")
    assert sorted(zip(by_abs.abs_alpha, by_abs.edit_sign)) == [(0.2, "label"), (0.2, "opposite"),
                                                               (0.4, "label"), (0.4, "opposite")]
    assert (by_abs.n == 2).all()
    summary = pd.read_csv(study_run / "tables" / "summary.csv")
    assert sorted(summary.abs_alpha) == [0.2, 0.4] and (summary.n == 4).all(), "no mean pools edit strengths"


def test_table2_alpha_not_in_the_run_is_one_clear_error(study_run):
    frame = pd.read_parquet(study_run / "cases")
    with pytest.raises(ConfigError, match=r"table2_alpha=0.3 .*\|alpha\| held: \[0.2, 0.4\]"):
        table2_cases(frame, 0.3)
    with pytest.raises(ConfigError, match="table2_alpha"):
        build_tables(study_run, frame, None, 0.6)


def test_comparison_table_follows_the_table2_protocol(study_run, tmp_path):
    from attnedit.report.comparison import write_comparison

    folder, text = write_comparison([study_run], tmp_path)
    table = pd.read_csv(folder / "comparison.csv", keep_default_na=False)
    assert table.method[0] == "sad" and int(table.n[0]) == 2 and int(table.samples[0]) == 1
    frame = pd.read_parquet(study_run / "cases")
    chosen = frame[frame.alpha == frame.direction.map(SIGN) * 0.4]
    mean = float(table.psnr_mean[0])
    assert mean == pytest.approx(chosen.psnr.mean(), abs=1e-4)
    caption = (folder / "comparison.md").read_text().splitlines()[0]
    assert "Table 2 protocol" in caption and "[alpha_scale=token_norm]" in caption
    by_abs = pd.read_csv(folder / "comparison_by_abs_alpha.csv")
    assert len(by_abs) == 4 and (by_abs.n == 2).all()
