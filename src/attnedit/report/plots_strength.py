"""Fidelity against edit strength: how much of the image an edit keeps (SSIM, PSNR, LPIPS,
...) for how much it changes what it should (the factor change of the shapes model, or
Directional CLIP), one panel per fidelity metric. Points are per (series, direction,
alpha) means over the cases where both values are finite (failed cases left out), sized by
|alpha|, pointing up for alpha > 0 and down for alpha < 0; single cases in grey behind
them. The unedited alpha = 0 rows are left out (no edit, no strength)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from attnedit.columns import ALPHA, DIRECTION, failed_mask
from attnedit.report.plots import wrapped_title
from attnedit.report.plots_alpha import colors, legend_columns, legend_height, metric_label, plain_ticks

#: Edit-strength columns, the first a run holds is the x axis.
STRENGTH = ("factor_change", "directional_clip", "clip_similarity_target_image")
#: Fidelity metrics (and their region variants, ``lpips_unedit_part``), one panel each.
FIDELITY = ("ssim", "psnr", "lpips", "mse", "id_sim")


def strength_metric(metrics: list[str]) -> str | None:
    return next((m for m in STRENGTH if m in metrics), None)


def fidelity_metrics(metrics: list[str]) -> list[str]:
    return [m for m in metrics if m not in STRENGTH and any(m == f or m.startswith(f"{f}_") for f in FIDELITY)]


def strength_means(frame: pd.DataFrame, x: str, y: str, series: str) -> pd.DataFrame:
    """A row per (``series``, direction, alpha != 0): the means of ``x`` and ``y`` over the
    cases where both are finite, and their count."""
    cases = frame[~failed_mask(frame) & (frame[ALPHA] != 0)]
    cases = cases.assign(_x=cases[x].astype(float), _y=cases[y].astype(float))
    cases = cases[np.isfinite(cases._x) & np.isfinite(cases._y)]
    keys = [series, DIRECTION, ALPHA] if DIRECTION in cases else [series, ALPHA]
    means = cases.groupby(keys, sort=True).agg(x=("_x", "mean"), y=("_y", "mean"), n=("_x", "size"))
    return means.reset_index()


def fidelity_vs_strength(frame: pd.DataFrame, metrics: list[str], series: str, title: str, legend_title: str,
                         panel: float = 3.2):
    """The figure (not saved) or None without a strength and a fidelity metric: colour =
    the ``series`` column (a run's directions, or a comparison's methods)."""
    x = strength_metric(metrics)
    panels = fidelity_metrics(metrics)
    if x is None or not panels or ALPHA not in frame or x not in frame:
        return None
    names = list(dict.fromkeys(frame[series]))
    palette = dict(zip(names, colors(len(names))))
    columns = legend_columns(len(names) + 3)  # + the marker and grey-dot keys
    height = max(3.2, legend_height([*names, 1, 2, 3], columns) + 1.3)  # the legend fits beside the panels
    fig, axes = plt.subplots(1, len(panels), figsize=(panel * len(panels) + 1.7 * columns, height), squeeze=False,
                             layout="constrained")
    largest = float(np.abs(frame[ALPHA].astype(float)).max()) or 1.0
    for ax, y in zip(axes[0], panels):
        cases = frame[~failed_mask(frame) & (frame[ALPHA] != 0)]
        ax.scatter(cases[x].astype(float), cases[y].astype(float), s=4, c="0.75", linewidths=0, zorder=1,
                   rasterized=True)
        means = strength_means(frame, x, y, series)
        for sign, marker in ((1, "^"), (-1, "v")):
            part = means[np.sign(means[ALPHA].astype(float)) == sign]
            if len(part):
                size = 14 + 46 * np.abs(part[ALPHA].astype(float)) / largest
                dots = ax.scatter(part.x, part.y, marker=marker, s=size,
                                  c=[palette[v] for v in part[series]], edgecolors="k", linewidths=0.4, zorder=3)
                dots.set_gid(f"{y}|{sign:+d}")
        ax.set_xlabel(metric_label(x), fontsize=8)
        ax.set_ylabel(metric_label(y), fontsize=8)
        plain_ticks(ax, 7)
    handles = [Line2D([], [], marker="o", linestyle="", color=palette[n], label=str(n)) for n in names]
    handles += [Line2D([], [], marker=m, linestyle="", color="0.4", label=text)
                for m, text in (("^", "α > 0"), ("v", "α < 0"))]
    handles.append(Line2D([], [], marker="o", linestyle="", color="0.75", markersize=3, label="one case"))
    axes[0][-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=7,
                       title=legend_title, title_fontsize=7, ncols=columns)  # an Axes legend: the layout places it
    keys = ", ".join(dict.fromkeys([legend_title, "direction", "α"]))
    wrapped_title(fig, f"{title}; points: means per ({keys}), marker size grows with |α|; "
                       "alpha = 0 (no edit) left out")
    return fig
