"""Metric-against-alpha curves with their 95% CI bands: per (series, alpha) the mean and
the bootstrap CI of the tables (stats.mean_ci over the finite values of the cases that did
not fail), drawn as a line with a band. ``curves``: one panel per metric, every series on
it (a run's directions, or a comparison's methods); ``small_multiples``: a row of panels
per direction, a column per metric, a line per method in a comparison. Values are
unscaled, as in the SAD tables."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from attnedit.columns import ALPHA, failed_mask
from attnedit.metrics.registry import metric_info
from attnedit.report.plots import wrapped_title
from attnedit.report.stats import CI_TEXT, finite, mean_ci


def metric_label(metric: str) -> str:
    """'PSNR [dB] (↑ better)': the unscaled value's unit only (a scaled unit like x10^2 does
    not apply to raw values)."""
    info = metric_info(metric)
    text = info.display_name if info.region == "whole" else f"{info.display_name} ({info.region})"
    if info.scale == 1 and info.unit not in ("", "raw"):
        text += f" [{info.unit}]"
    if info.higher_is_better is not None:
        text += f" ({'↑' if info.higher_is_better else '↓'} better)"
    return text


def alpha_means(frame: pd.DataFrame, metrics: list[str], by: list[str]) -> pd.DataFrame:
    """A row per (``by`` keys, alpha, metric): mean, ci_low, ci_high, n over the finite
    values of the cases that did not fail; groups without one are left out."""
    keys = [c for c in by if c in frame] + [ALPHA]
    kept = frame[~failed_mask(frame)]
    rows = []
    for key, group in kept.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in (m for m in metrics if m in group):
            values = finite(group[metric])
            if len(values):
                low, high = mean_ci(values)
                rows.append({**dict(zip(keys, key)), "metric": metric, "mean": float(values.mean()),
                             "ci_low": low, "ci_high": high, "n": len(values)})
    return pd.DataFrame(rows, columns=[*keys, "metric", "mean", "ci_low", "ci_high", "n"])


def colors(count: int) -> list:
    """Distinct colours for ``count`` series: tab10, tab20, then a sampled colormap."""
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, count)]


def plain_ticks(ax, size: float) -> None:
    """Tick values as they are: an offset ("1e-7+1") would hide the values the tables show."""
    ax.ticklabel_format(useOffset=False)
    ax.tick_params(labelsize=size)
    ax.yaxis.get_offset_text().set_fontsize(size)  # a scientific multiplier, where one is left
    ax.xaxis.get_offset_text().set_fontsize(size)
    ax.grid(alpha=0.3)


def draw_curve(ax, points: pd.DataFrame, color, label: str, gid: str):
    """One series: the mean line (markers at each alpha) and its CI band (an error bar at a
    single alpha); the artists carry ``gid`` so a reader finds them."""
    points = points.sort_values(ALPHA)
    x = points[ALPHA].to_numpy(float)
    (line,) = ax.plot(x, points["mean"].to_numpy(float), "o-", color=color, markersize=3, linewidth=1.2, label=label)
    low, high = points.ci_low.to_numpy(float), points.ci_high.to_numpy(float)
    if len(x) == 1:  # one alpha: a band has no width, an error bar shows the CI
        bars = ax.errorbar(x, low, yerr=[[0.0], high - low], fmt="none", ecolor=color, capsize=3, linewidth=1)
        band = bars.lines[2][0]
    else:
        band = ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    line.set_gid(gid)
    band.set_gid(gid)
    return line


def legend_columns(count: int) -> int:
    return 1 if count <= 12 else 2


def legend_height(names, columns: int) -> float:
    """Inches a 7 pt legend of these entries takes in ``columns`` columns (labels may hold line breaks)."""
    lines = sum(str(n).count("\n") + 1 for n in names)
    return 0.17 * math.ceil(lines / max(columns, 1))


def _legend(ax, handles, title: str) -> None:
    """Beside the top-right panel: constrained layout counts an Axes' legend (never a
    figure legend) when it places the suptitle, so they cannot overlap."""
    if len(handles) > 1:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=7,
                  title=title, title_fontsize=7, ncols=legend_columns(len(handles)))


def curves(means: pd.DataFrame, metrics: list[str], series: str, title: str, legend_title: str, panel: float = 3.0):
    """The figure (not saved) or None: one panel per metric, a line + band per value of the
    ``series`` column (in its order of appearance), alpha on x."""
    metrics = [m for m in metrics if (means.metric == m).any()]
    if not metrics:
        return None
    names = list(dict.fromkeys(means[series]))
    palette = dict(zip(names, colors(len(names))))
    columns = legend_columns(len(names)) if len(names) > 1 else 0
    height = max(2.9, legend_height(names, columns) + 1.3)  # the legend fits beside the panels
    fig, axes = plt.subplots(1, len(metrics), figsize=(panel * len(metrics) + 1.6 * columns, height), squeeze=False,
                             layout="constrained")
    handles = {}
    for ax, metric in zip(axes[0], metrics):
        for name, points in means[means.metric == metric].groupby(series, sort=False):
            handles[name] = draw_curve(ax, points, palette[name], str(name), f"{name}|{metric}")
        _axes_text(ax, metric)
    _legend(axes[0][-1], [handles[n] for n in names if n in handles], legend_title)
    wrapped_title(fig, f"{title}; bands: {CI_TEXT}")
    return fig


def small_multiples(means: pd.DataFrame, metrics: list[str], panel: str, series: str, title: str,
                    legend_title: str, limit: int = 15, cell: tuple[float, float] = (2.4, 1.45)):
    """The figure (not saved) or None: a row per value of ``panel`` (the first ``limit``:
    directions), a column per metric (shared alpha axis, a y axis per metric), a line +
    band per ``series`` value. One figure for every metric: each costs a layout pass."""
    metrics = [m for m in metrics if (means.metric == m).any()]
    panels = list(dict.fromkeys(means[panel]))
    if not metrics or not panels:
        return None
    shown = panels[:limit]
    names = list(dict.fromkeys(means[series]))
    palette = dict(zip(names, colors(len(names))))
    legend = series != panel and len(names) > 1
    fig, axes = plt.subplots(len(shown), len(metrics), squeeze=False, sharex=True, sharey="col",
                             figsize=(cell[0] * len(metrics) + 0.5 + (1.6 if legend else 0),
                                      cell[1] * len(shown) + 1.0),
                             layout="constrained")
    handles = {}
    for r, value in enumerate(shown):
        for ax, metric in zip(axes[r], metrics):
            chosen = means[(means[panel] == value) & (means.metric == metric)]
            for name, points in chosen.groupby(series, sort=False):
                handles[name] = draw_curve(ax, points, palette[name], str(name), f"{name}|{value}|{metric}")
            plain_ticks(ax, 6)
            if r == 0:
                ax.set_title(metric_label(metric), fontsize=7)
        axes[r][0].set_ylabel(textwrap.shorten(str(value), int(cell[1] * 16), placeholder="…"), fontsize=7)
    fig.supxlabel("α", fontsize=8)
    if legend:
        _legend(axes[0][-1], [handles[n] for n in names if n in handles], legend_title)
    capped = f" (the first {limit} of {len(panels)})" if len(panels) > limit else ""
    wrapped_title(fig, f"{title}; a row per direction{capped}; bands: {CI_TEXT}")
    return fig


def _axes_text(ax, metric: str) -> None:
    ax.set_xlabel("α", fontsize=8)
    ax.set_ylabel(metric_label(metric), fontsize=8)
    plain_ticks(ax, 7)
