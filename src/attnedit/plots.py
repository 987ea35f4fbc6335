"""Old import path of the alpha-sweep figures: attnedit.report.plots."""

from attnedit.report.plots import (alpha_sweep_figure, alpha_sweep_grid, alpha_sweep_path, cross_dataset_figure,
                                   cross_dataset_grid, sweep_columns)

__all__ = ["alpha_sweep_figure", "alpha_sweep_grid", "alpha_sweep_path", "cross_dataset_figure", "cross_dataset_grid", "sweep_columns"]
