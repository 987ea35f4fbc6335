"""A full tiny SAD study with all four paper metrics (+ LPIPS) on random backbones:
Table 2 with published rows beside the measured ones and the random-backbone mark."""

from __future__ import annotations


import pandas as pd
import pytest

from attnedit.cli import REPO_ROOT, compose, tables
from attnedit.runner import Runner
from attnedit.tables import RANDOM_BACKBONE_MARK

LABELS = ("+method.labels={0: {label: smiling, source: a face, target: a smiling face},"
          " 1: {label: old, source: a face, target: an old face}}")


@pytest.fixture(scope="module")
def study_run(tiny_ddpm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    cfg = compose("config", [
        "model=tiny_ddpm", f"paths.root_dir={root}", f"model.path={tiny_ddpm_dir}", "model.num_inference_steps=3",
        "metrics=sad", "metric_weights=random", "+metrics.directional_clip.model=ViT-S-32-alt", "dataset.num_samples=1", "method.directions=2",
        "method.alphas=[-0.4,0.4]", LABELS, "batch_size=4", "progress=false", "device=cpu",
        f"tables.reference={REPO_ROOT}/results/reference/sad_celebahq_table2.csv",
    ])
    return Runner(cfg).run()


def test_rows_hold_every_metric_and_the_marks(study_run):
    frame = pd.read_parquet(study_run / "cases")
    assert len(frame) == 4
    for column in ("ssim", "psnr", "id_sim", "id_face_fallback", "directional_clip", "lpips"):
        assert column in frame and frame[column].notna().all(), column
    assert frame.random_backbone.all()
    assert frame.id_face_fallback.all(), "random-noise samples hold no face: the fallback crop is recorded"
    assert set(frame.target_text) == {"a smiling face", "an old face"}
    assert all(-1 <= v <= 1 for v in frame.directional_clip)


def test_table2_has_measured_and_published_rows_and_the_mark(study_run, capsys):
    tables([str(study_run)])
    printed = capsys.readouterr().out
    table2 = pd.read_csv(study_run / "tables" / "table2.csv", keep_default_na=False)
    assert list(table2.columns) == ["method", "n", "ssim", "psnr", "id_sim", "directional_clip", "lpips", "source"]
    assert table2.method.tolist() == ["sad", "SAD", "Riemannian pullback"]
    assert table2.source[0].startswith("measured") and "arXiv 2510.22650" in table2.source[1]
    frame = pd.read_parquet(study_run / "cases")
    mean, std = (float(x) for x in table2.ssim[0].split(" ± "))
    assert mean == pytest.approx(frame.ssim.mean(), abs=1e-4)
    assert std == pytest.approx(frame.ssim.std(ddof=0), abs=1e-4)
    assert table2.ssim[1] == ""  # unknown published numbers stay empty, never invented
    for name in ("table2", "by_direction", "summary"):
        assert RANDOM_BACKBONE_MARK in (study_run / "tables" / f"{name}.md").read_text()
        assert (study_run / "tables" / f"{name}.tex").exists()
    assert RANDOM_BACKBONE_MARK in printed
    by_direction = pd.read_csv(study_run / "tables" / "by_direction.csv")
    assert sorted(by_direction.label.unique()) == ["old", "smiling"]
