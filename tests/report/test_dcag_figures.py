"""The DCAG study's figures: they draw the grid means of the tiny study's rows, and their
titles (and the factor benchmark's) stay clear of each other and of the axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dcag_study import points_of
from figures import assert_titles_clear


def test_figures_draw_the_grid_means(dcag_study_report):
    out, rows = dcag_study_report
    means = pd.read_csv(out / "tables" / "grid_means.csv")
    by_point = points_of(rows)
    assert sorted(zip(means.dk, means.dv)) == sorted(by_point)
    for record in means.to_dict("records"):
        group = by_point[(record["dk"], record["dv"])]
        assert record["lpips_whole"] == pytest.approx(group.lpips_whole.mean(), rel=1e-9)
        assert record["clip_similarity_target_image"] == pytest.approx(group.clip_similarity_target_image.mean())
    for name in ("lpips_contours.png", "fidelity_vs_editability.png"):
        with Image.open(out / "figures" / name) as image:
            assert image.size[0] > 400 and image.size[1] > 300


def test_dcag_and_factor_figures_keep_their_titles_clear():
    from attnedit.factors.benchmark import FACTORS, factor_plot
    from attnedit.report.dcag.figures import INSTRUCTION_FOLLOWING, fidelity_vs_editability, lpips_contours

    grid = [(dk, dv) for dk in (1.0, 1.1, 1.2) for dv in (1.0, 1.1, 1.2)]
    rng = np.random.default_rng(0)
    means = pd.DataFrame([{"dk": dk, "dv": dv, "n": 3, "lpips_whole": rng.uniform(0.1, 0.3),
                           "lpips_unedit_part": rng.uniform(0.05, 0.2), "psnr_unedit_part": rng.uniform(20, 30),
                           "clip_similarity_target_image": rng.uniform(20, 30)} for dk, dv in grid])
    means["viescore_sc"] = rng.uniform(2, 9, len(means))
    metrics = [c for c in means.columns if c not in ("dk", "dv", "n")]
    long = "piebench_dcag_grid (model qwen_image_edit) " + "[RANDOM-BACKBONE METRICS: test-only] " * 3
    judged = fidelity_vs_editability(means, metrics, long, INSTRUCTION_FOLLOWING)
    for fig in (lpips_contours(means, metrics, long), fidelity_vs_editability(means, metrics, long), judged):
        assert "model qwen_image_edit" in fig._suptitle.get_text().replace("\n", " ")
        assert_titles_clear(fig)
    # the instruction-following figure: VIEScore SC on x, one point per grid point, as the means hold them
    x = judged.axes[0].collections[0].get_offsets()[:, 0]
    np.testing.assert_allclose(x, means.viescore_sc.to_numpy(), rtol=0, atol=1e-12)
    assert "instruction" in judged.axes[0].get_xlabel() and "VLM judge" in judged._suptitle.get_text()
    assert fidelity_vs_editability(means.drop(columns="viescore_sc"), metrics[:-1], long, INSTRUCTION_FOLLOWING) is None
    scores = pd.DataFrame([{"method": m, "direction": d, "share": 0.5, "linearity": 0.9, "total": 1.0,
                            **{f"change_{k}": 1.0 / len(FACTORS) for k in FACTORS}} for m in ("sad", "pca") for d in range(3)])
    fig = factor_plot(scores, "model shapes_ddpm, layer mid_block.attentions.0, alpha_scale token_norm")
    assert "alpha_scale token_norm" in fig._suptitle.get_text().replace("\n", " ")
    assert_titles_clear(fig)
