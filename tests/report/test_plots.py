"""The figures: the alpha-sweep and cross-dataset grids (layout on a finished run's rows,
titles naming model, layer and alpha scale), the report's curves against alpha (numpy means
and bootstrap CIs of the rows), galleries, methods side by side, fidelity against edit
strength, the factor heatmap; every title, label and legend inside the figure and clear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attnedit.report.plots import alpha_sweep_grid, cross_dataset_grid
from attnedit.store.run_store import RunStore
from bootstrap import numpy_bootstrap
from figures import assert_titles_clear


def _grid_of(fig) -> list[list]:
    """The figure's axes as rows of columns, ordered by their position on the canvas."""
    axes = sorted(fig.axes, key=lambda ax: (-round(ax.get_position().y0, 4), round(ax.get_position().x0, 4)))
    rows = sorted({round(ax.get_position().y0, 4) for ax in axes}, reverse=True)
    return [[ax for ax in axes if round(ax.get_position().y0, 4) == y] for y in rows]


def test_alpha_sweep_and_cross_dataset_figures_have_the_grid_layout(finished_run, tmp_path):
    """Rows = directions, columns = negative alphas, the unedited sample, positive alphas;
    each cell shows the PNG of its case; cells are square; the saved PNG is the declared size."""
    import matplotlib.pyplot as plt

    _, _, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    sample = frame[frame.sample_id == "seed000000"]
    fig = alpha_sweep_grid(sample, run_dir)
    grid = _grid_of(fig)
    # expected from the rows alone: directions 0, 1 by rows; alphas -0.4, (unedited), +0.4
    assert [len(row) for row in grid] == [3, 3]
    for r, direction in enumerate([0, 1]):
        for c, alpha in enumerate([-0.4, None, 0.4]):
            path = sample.reference_path.iloc[0] if alpha is None else \
                sample[(sample.direction == direction) & (sample.alpha == alpha)].image_path.iloc[0]
            shown = np.asarray(grid[r][c].images[0].get_array())
            assert np.array_equal(shown, np.asarray(Image.open(run_dir / path))), (r, c)
    assert [ax.get_title() for ax in grid[0]] == ["α=-0.4", "unedited", "α=+0.4"]
    fig.canvas.draw()  # imshow keeps the aspect at draw time
    for ax in fig.axes:  # square cells: the images are square
        box = ax.get_window_extent()
        assert box.width == pytest.approx(box.height, rel=0.02)
    saved = Image.open(run_dir / "figures" / "alpha_sweep_seed000000.png").size
    assert saved == tuple(round(v * 100) for v in fig.get_size_inches())  # dpi 100, nothing cropped
    plt.close(fig)

    fig = cross_dataset_grid([run_dir, run_dir], directions=2)
    grid = _grid_of(fig)
    assert [len(row) for row in grid] == [3] * 4  # 2 runs x 2 directions, 2 alphas + unedited
    assert [ax.get_ylabel().split("dir ")[-1] for ax in (row[0] for row in grid)] == ["0", "1", "0", "1"]
    assert grid[0][1].get_title() == "unedited"
    plt.close(fig)


def test_alpha_sweep_title_names_model_layer_scale_and_overlaps_nothing(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "gray").save(tmp_path / "images" / "ref.png")
    rows = [{"sample_id": "seed000000", "reference_path": "images/ref.png", "image_path": "images/ref.png",
             "direction": d, "label": f"direction {d}", "alpha": a, "model": "ddpm_celebahq",
             "layers": "mid_block.attentions.0", "alpha_scale": "token_norm"}
            for d in (0, 1) for a in (-0.4, 0.4)]
    fig = alpha_sweep_grid(pd.DataFrame(rows), tmp_path)
    title = fig._suptitle.get_text().replace("\n", " ")
    for words in ("model ddpm_celebahq", "layer mid_block.attentions.0", "alpha_scale token_norm"):
        assert words in title, words
    assert_titles_clear(fig)
    store = RunStore(tmp_path / "run")
    store.write_json("manifest.json", {"model": {"name": "ddpm_celebahq"}})
    store.append([{**r, "case_id": f"c{i}", "reference_path": "../images/ref.png", "image_path": "../images/ref.png"}
                  for i, r in enumerate(rows)])
    assert_titles_clear(cross_dataset_grid([store.run_dir]))


# -- the report's figures ------------------------------------------------------------------
def _curves(fig) -> tuple[dict, dict]:
    """The drawn curves by gid: {gid: {alpha: mean}} of the lines, {gid: {alpha: (low, high)}} of the bands."""
    lines, bands = {}, {}
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_gid():
                x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
                lines[line.get_gid()] = dict(zip(x, y))
        for band in ax.collections:
            if band.get_gid():
                vertices = np.concatenate([p.vertices for p in band.get_paths()])
                at = {x: vertices[vertices[:, 0] == x, 1] for x in np.unique(vertices[:, 0])}
                bands[band.get_gid()] = {x: (y.min(), y.max()) for x, y in at.items()}
    return lines, bands


def _expected(rows: pd.DataFrame, metric: str) -> dict:
    """{alpha: (mean, (ci low, ci high))} over the finite values of the cases that did not fail, in numpy."""
    rows = rows[~rows.failed.fillna(False).astype(bool)] if "failed" in rows else rows
    out = {}
    for alpha in sorted(rows.alpha.unique()):
        values = rows.loc[rows.alpha == alpha, metric].to_numpy(np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            out[float(alpha)] = (values.mean(), numpy_bootstrap(values))
    return out


def _assert_curve(lines, bands, gid, expected) -> None:
    assert sorted(lines[gid]) == pytest.approx(sorted(expected)), gid  # alphas without a finite value: no point
    for alpha, (mean, ci) in expected.items():
        assert lines[gid][alpha] == pytest.approx(mean, rel=1e-12, abs=1e-12), (gid, alpha)
        assert bands[gid][alpha] == pytest.approx(ci, rel=1e-9, abs=1e-12), (gid, alpha)


def test_a_run_gets_curves_with_the_tables_ci_and_a_gallery_per_direction(finished_run):
    """The runner wrote the figures; each curve is the numpy mean of its rows per alpha, each
    band numpy's percentile bootstrap; the gallery shows each (sample, alpha) image."""
    import matplotlib.pyplot as plt

    from attnedit.report.figures_sad import run_figures
    from attnedit.report.plots import GAP
    from attnedit.report.runs import load_run

    _, _, run_dir = finished_run
    frame = pd.read_parquet(run_dir / "cases")
    for name in ("metric_vs_alpha", "metric_vs_alpha_by_direction", "gallery_direction_0", "gallery_direction_1"):
        assert (run_dir / "figures" / f"{name}.png").stat().st_size > 0, name
    figures = {Path(f.path).stem: f.figure for f in run_figures(load_run(run_dir))}
    assert "fidelity_vs_strength" not in figures  # no edit-strength metric in this run
    for name in ("metric_vs_alpha", "metric_vs_alpha_by_direction"):
        lines, bands = _curves(figures[name])
        drawn = {(int(gid.split(":")[0]), gid.split("|")[-1]) for gid in lines}
        assert drawn == {(d, m) for d in (0, 1) for m in ("ssim", "psnr")}, name
        for gid in lines:
            direction, metric = int(gid.split(":")[0]), gid.split("|")[-1]
            _assert_curve(lines, bands, gid, _expected(frame[frame.direction == direction], metric))
        assert all(0.0 not in lines[gid] for gid in lines if gid.endswith("|psnr"))  # alpha = 0: PSNR inf, no point
    ax = figures["gallery_direction_0"].axes[0]
    mosaic = np.asarray(ax.images[0].get_array())
    samples = sorted(frame.sample_id.unique())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["α=-0.4", "unedited", "α=+0.4"]
    assert [t.get_text() for t in ax.get_yticklabels()] == samples
    for r, sample in enumerate(samples):
        rows = frame[(frame.sample_id == sample) & (frame.direction == 0)]
        for c, alpha in enumerate([-0.4, None, 0.4]):
            path = rows.reference_path.iloc[0] if alpha is None else rows[rows.alpha == alpha].image_path.iloc[0]
            png = np.asarray(Image.open(run_dir / path).convert("RGB"), dtype=np.float64) / 255
            h, w = png.shape[:2]
            pad = max(1, round(GAP * h))
            block = mosaic[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w]
            assert np.allclose(block, png, atol=1e-6), (sample, alpha)
    for fig in figures.values():
        assert_titles_clear(fig)
        plt.close(fig)


def test_a_comparison_puts_methods_side_by_side_and_against_edit_strength(finished_run, sad_study_run):
    """Two runs that share a sample: pooled curves per run against numpy; the side-by-side grid
    holds each run's image of the same (sample, direction, alpha) at the strongest shared |alpha|;
    fidelity vs Directional CLIP plots per (direction, alpha) means of the rows with both values."""
    import matplotlib.pyplot as plt

    from attnedit.report.comparison import build_several
    from attnedit.report.figures_sad import figure_labels
    from attnedit.report.runs import load_runs, run_labels

    runs = load_runs([finished_run[2], sad_study_run])
    labels = figure_labels(run_labels(runs))  # labels of hundreds of characters, cut for the legend
    assert all(len(line) <= 31 for label in labels for line in label.splitlines())
    figures = {f.path: f.figure for f in build_several(runs).figures}
    assert {"comparison_metric_vs_alpha.png", "comparison_metric_vs_alpha_by_direction.png",
            "comparison_fidelity_vs_strength.png", "comparison_side_by_side.png"} <= set(figures)
    frames = [pd.read_parquet(r.run_dir / "cases") for r in runs]
    lines, bands = _curves(figures["comparison_metric_vs_alpha.png"])
    for label, frame in zip(labels, frames):
        for metric in ("ssim", "psnr"):
            _assert_curve(lines, bands, f"{label}|{metric}", _expected(frame, metric))

    grid = _grid_of(figures["comparison_side_by_side.png"])
    picks = [("seed000000", d, a) for d in (0, 1) for a in (-0.4, 0.4)]  # the keys both hold at |alpha| 0.4
    assert [len(row) for row in grid] == [len(picks)] * 3
    assert [ax.get_title() for ax in grid[0]] == [f"{s}\ndir {d}, α={a:+g}" for s, d, a in picks]
    for c, (sample, direction, alpha) in enumerate(picks):
        for r, (run, frame) in enumerate(zip(runs, frames), start=1):
            case = frame[(frame.sample_id == sample) & (frame.direction == direction) & np.isclose(frame.alpha, alpha)]
            for ax, column in ((grid[r][c], "image_path"), (grid[0][c], "reference_path")):
                if column == "reference_path" and r > 1:
                    continue  # the unedited row: the first run's
                shown = np.asarray(ax.images[0].get_array())
                png = np.asarray(Image.open(run.run_dir / case[column].iloc[0]).convert("RGB"))
                assert np.array_equal(shown, png), (r, c)

    study = frames[1][(frames[1].alpha != 0)]
    ax = next(ax for ax in figures["comparison_fidelity_vs_strength.png"].axes if ax.get_ylabel().startswith("SSIM"))
    drawn = np.concatenate([c.get_offsets() for c in ax.collections if (c.get_gid() or "").startswith("ssim|")])
    both = study[np.isfinite(study.directional_clip) & np.isfinite(study.ssim)]
    expected = np.array([(g.directional_clip.mean(), g.ssim.mean()) for _, g in both.groupby(["direction", "alpha"])])
    assert sorted(map(tuple, drawn.round(12))) == sorted(map(tuple, expected.round(12)))  # the other run: no CLIP
    for fig in figures.values():
        assert_titles_clear(fig)
        plt.close(fig)


def test_comparison_figures_of_six_methods_without_images_stay_clear(all_runs):
    """celebahq_compare's six methods (no images saved): curves and their legends clear, one
    alpha's CI as an error bar (numpy's bootstrap), no side-by-side."""
    import matplotlib.pyplot as plt

    from attnedit.report.figures_sad import comparison_figures, figure_labels
    from attnedit.report.runs import load_runs, run_labels

    runs = load_runs(list(all_runs.values()))
    figures = {f.path: f.figure for f in comparison_figures(runs, run_labels(runs), "celebahq_compare")}
    assert set(figures) == {"comparison_metric_vs_alpha.png", "comparison_metric_vs_alpha_by_direction.png"}
    legend = figures["comparison_metric_vs_alpha.png"].axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == figure_labels(run_labels(runs))  # the runs' order
    lines, bands = _curves(figures["comparison_metric_vs_alpha.png"])
    for label, run in zip(figure_labels(run_labels(runs)), runs):
        _assert_curve(lines, bands, f"{label}|psnr", _expected(run.frame[run.frame.alpha != 0], "psnr"))
    for fig in figures.values():
        assert_titles_clear(fig)
        plt.close(fig)


def test_big_runs_cap_their_galleries_and_say_so(tmp_path, monkeypatch):
    """17 directions x 5 samples, the caps lowered to 2 directions and 3 samples (the same code
    as 15 and 8, at a fraction of the drawing): galleries for the first directions only, the
    first samples in each, titles saying so; 17 directions' legends fit beside the panels."""
    import matplotlib.pyplot as plt

    from attnedit.report import figures_sad
    from attnedit.report.runs import Run

    monkeypatch.setattr(figures_sad, "GALLERY_DIRECTIONS", 2)
    monkeypatch.setattr(figures_sad, "GALLERY_SAMPLES", 3)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "gray").save(tmp_path / "images" / "x.png")
    rng = np.random.default_rng(0)
    rows = [{"sample_id": f"seed{s:06d}", "direction": d, "label": f"d{d}", "alpha": a, "ssim": rng.uniform(),
             "factor_change": 0.1 * d, "image_path": "images/x.png", "reference_path": "images/x.png"}
            for s in range(5) for d in range(17) for a in (-0.5, 0.5)]
    frame = pd.DataFrame(rows)
    run = Run(tmp_path, frame, {"config": {"name": "big"}, "metric_order": ["ssim", "factor_change"]})
    figures = {Path(f.path).stem: f.figure for f in figures_sad.run_figures(run)}
    lines, bands = _curves(figures["metric_vs_alpha"])  # five distinct values per point: the bootstrap tells
    assert len(lines) == 17 * 2
    for d in range(17):
        _assert_curve(lines, bands, f"{d}: d{d}|ssim", _expected(frame[frame.direction == d], "ssim"))
    assert sorted(n for n in figures if n.startswith("gallery_")) == ["gallery_direction_0", "gallery_direction_1"]
    title = figures["gallery_direction_1"]._suptitle.get_text().replace("\n", " ")
    assert "the first 3 of 5 samples" in title and "the first 2 of 17 directions" in title
    assert [t.get_text() for t in figures["gallery_direction_1"].axes[0].get_yticklabels()] == \
        [f"seed{s:06d}" for s in range(3)]
    grid = figures["metric_vs_alpha_by_direction"]
    assert len(grid.axes) == 2 * 2 and "the first 2 of 17" in grid._suptitle.get_text().replace("\n", " ")
    for name in ("gallery_direction_1", "metric_vs_alpha", "metric_vs_alpha_by_direction", "fidelity_vs_strength"):
        assert_titles_clear(figures[name])
    plt.close("all")


@pytest.mark.parametrize("directions", [1, 2])
def test_the_factor_heatmap_keeps_its_colorbar_label_inside(directions):
    """One method, one or two directions: a short figure, whose colorbar label must still fit."""
    from attnedit.factors.benchmark import FACTORS, factor_plot

    scores = pd.DataFrame([{"method": "sad", "direction": d, "share": 0.5, "linearity": 0.9, "total": 1.0,
                            **{f"change_{k}": 1.0 / len(FACTORS) for k in FACTORS}} for d in range(directions)])
    fig = factor_plot(scores, "model shapes_ddpm, layer mid_block.attentions.0, alpha_scale token_norm")
    assert "part of the direction's total change" in [ax.xaxis.label.get_text() for ax in fig.axes]
    assert_titles_clear(fig)
