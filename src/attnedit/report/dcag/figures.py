"""The study's figures over the (dk, dv) plane, from per-point means: iso-LPIPS contours
and fidelity against editability."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from attnedit.metrics.registry import metric_info
from attnedit.report.dcag.points import EXTRA_KEYS, scale

EDITABILITY = ("clip_similarity_target_image", "clip_similarity_target_image_edit_part")
#: Instruction following as a VLM judge measures it (VIEScore SC, then O: attnedit.judge).
INSTRUCTION_FOLLOWING = ("viescore_sc", "viescore_o")
# Plain tick values: an offset ("+2.5e2") would hide the scale the axis labels state.
PLAIN_TICKS = {"axes.formatter.useoffset": False}


def grid_means(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per (dk, dv): cases n and the mean of each metric over its finite values (unscaled)."""
    plane = frame[(frame[list(EXTRA_KEYS)] == 1).all(axis=1)]
    rows = []
    for (dk, dv), group in plane.groupby(["dk", "dv"], sort=True):
        row = {"dk": dk, "dv": dv, "n": len(group)}
        for metric in metrics:
            values = group[metric].astype(float)
            finite = values[values.map(math.isfinite)]
            row[metric] = finite.mean() if len(finite) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["dk", "dv", "n", *metrics])


def _label(metric: str) -> str:
    return metric_info(metric).header


def _suptitle(fig, text: str) -> None:
    fig.suptitle("\n".join(textwrap.wrap(text, 110)), fontsize=8)


def _contour_panel(ax, points: pd.DataFrame, metric: str) -> None:
    x, y = points.dk.to_numpy(float), points.dv.to_numpy(float)
    z = points[metric].to_numpy(float) * scale(metric)
    xs, ys = np.unique(x), np.unique(y)
    full = len(xs) >= 2 and len(ys) >= 2 and len(points) == len(xs) * len(ys)
    spread = len(points) >= 3 and np.linalg.matrix_rank(np.c_[x - x[0], y - y[0]]) == 2
    if np.ptp(z) > 0 and (full or spread):
        if full:
            grid = points.pivot(index="dv", columns="dk", values=metric).loc[ys, xs].to_numpy(float)
            grid = grid * scale(metric)
            filled = ax.contourf(xs, ys, grid, levels=10, cmap="viridis_r")
            lines = ax.contour(xs, ys, grid, levels=filled.levels, colors="k", linewidths=0.5)
        else:
            filled = ax.tricontourf(x, y, z, levels=10, cmap="viridis_r")
            lines = ax.tricontour(x, y, z, levels=filled.levels, colors="k", linewidths=0.5)
        ax.clabel(lines, fmt="%.1f", fontsize=6)
        ax.figure.colorbar(filled, ax=ax, label=_label(metric))
    else:
        ax.set_title("(contours need >= 3 points off one line and unequal values)", fontsize=7)
    ax.scatter(x, y, c="w", edgecolors="k", s=18, zorder=3)
    for xi, yi, zi in zip(x, y, z):
        ax.annotate(f"{zi:.1f}", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.margins(0.08)
    ax.set_xlabel("dk (Key scale)")
    ax.set_ylabel("dv (Value scale)")
    if not ax.get_title():
        ax.set_title(f"iso-{_label(metric)}", fontsize=8)


@matplotlib.rc_context(PLAIN_TICKS)
def lpips_contours(means: pd.DataFrame, metrics: list[str], title: str):
    """The figure (not saved), or None without LPIPS means."""
    panels = [m for m in metrics if m.startswith("lpips") and means[m].notna().any()]
    if means.empty or not panels:
        return None
    fig, axes = _figure(len(panels), 4.6)
    for ax, metric in zip(axes[0], panels):
        _contour_panel(ax, means[means[metric].notna()], metric)
    _suptitle(fig, f"{title} — mean LPIPS over (dk, dv); lower = closer to the source image")
    return fig


@matplotlib.rc_context(PLAIN_TICKS)
def fidelity_vs_editability(means: pd.DataFrame, metrics: list[str], title: str,
                             editability: tuple[str, ...] = EDITABILITY):
    """The figure (not saved), or None without an ``editability`` column (the first found:
    a CLIP score, or a judge's instruction following) and a fidelity metric."""
    clip = next((m for m in editability if m in metrics and means[m].notna().any()), None)
    lpips = next((m for m in ("lpips_whole", "lpips_unedit_part") if m in metrics), None)
    fidelity = [m for m in (lpips, "psnr_unedit_part") if m in metrics]
    if means.empty or clip is None or not fidelity:
        return None
    fig, axes = _figure(len(fidelity), 4.8)
    for ax, metric in zip(axes[0], fidelity):
        x = means[clip].to_numpy(float) * scale(clip)
        y = means[metric].to_numpy(float) * scale(metric)
        identity = ((means.dk == 1) & (means.dv == 1)).to_numpy()
        scatter = ax.scatter(x, y, c=means.dv, cmap="plasma", edgecolors="k", s=28, zorder=3)
        ax.scatter(x[identity], y[identity], marker="*", s=160, c="none", edgecolors="k", zorder=4, label="none (1, 1)")
        for xi, yi, dk, dv in zip(x, y, means.dk, means.dv):
            ax.annotate(f"({dk:g}, {dv:g})", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.margins(0.12)
        ax.set_xlabel(f"{_label(clip)} (higher = {'instruction followed' if clip in INSTRUCTION_FOLLOWING else 'more edited'})")
        better = "higher" if metric_info(metric).higher_is_better else "lower"
        ax.set_ylabel(f"{_label(metric)} ({better} = more faithful)")
        fig.colorbar(scatter, ax=ax, label="dv")
        if identity.any():
            ax.legend(fontsize=7)
    what = "instruction following (VLM judge)" if clip in INSTRUCTION_FOLLOWING else "editability"
    _suptitle(fig, f"{title} — fidelity vs {what} per (dk, dv), labels (dk, dv)")
    return fig


def _figure(panels: int, width: float):
    # constrained layout: the suptitle, panel titles and colorbars get their own space
    return plt.subplots(1, panels, figsize=(width * panels, 4.2), squeeze=False, layout="constrained")
