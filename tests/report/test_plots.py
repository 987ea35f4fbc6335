"""The alpha-sweep and cross-dataset figures: their grid layout on a finished run's rows,
and titles that name model, layer and alpha scale and overlap nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from attnedit.report.plots import alpha_sweep_grid, cross_dataset_grid
from attnedit.store.run_store import RunStore
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
