"""Paired tests of the study: each grid point against the unedited point (or one point
against another, on request) on the images both hold."""

from __future__ import annotations

import pandas as pd

from attnedit.columns import CATEGORY, SAMPLE_ID
from attnedit.data.piebench import CATEGORY_NAMES
from attnedit.metrics.registry import metric_info
from attnedit.report.cells import paired_cell
from attnedit.report.dcag.points import (
    FIDELITY, guided_points, header, main_region, point_cases, scale, unguided_for,
)
from attnedit.report.stats import paired


def _by_sample(group: pd.DataFrame, metric: str) -> pd.Series:
    """Each image's value (the mean of its cases at one point), NaN kept (paired() drops them)."""
    return group.groupby(SAMPLE_ID)[metric].mean().astype(float)


def _paired(group: pd.DataFrame, identity: pd.DataFrame, metric: str):
    a, b = _by_sample(identity, metric), _by_sample(group, metric)
    common = a.index.intersection(b.index)
    return paired_cell(paired(a[common].to_numpy(), b[common].to_numpy()), digits=2, scale=scale(metric))


def paired_table(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame | None:
    """Per point (not the unedited one): a paired cell per fidelity metric of the main region."""
    region = main_region(metrics)
    identity = frame[frame.guidance == "none"]
    if region is None or identity.empty:
        return None
    shown = [f"{b}_{region}" for b in FIDELITY if f"{b}_{region}" in metrics]
    rows = []
    for row, group in guided_points(frame):
        base = unguided_for(identity, group)
        rows.append({**row, **{f"{header(m)} Δ": _paired(group, base, m) for m in shown}})
    return pd.DataFrame(rows) if rows else None


def paired_category_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Per point and PIE-Bench category (and all): the paired cell of ``metric`` against the unedited point."""
    identity = frame[frame.guidance == "none"]
    if identity.empty:
        return None
    categories = sorted(frame[CATEGORY].dropna().astype(str).unique(), key=lambda c: (not c.isdigit(), c.zfill(4)))
    unit = metric_info(metric).unit
    rows = []
    for row, group in guided_points(frame):
        unguided = unguided_for(identity, group)
        for category in categories:
            part = group[group[CATEGORY].astype(str) == category]
            base = unguided[unguided[CATEGORY].astype(str) == category]
            name = f"{category} {CATEGORY_NAMES.get(category, '')} [{unit}] Δ".replace("  ", " ")
            row[name] = _paired(part, base, metric) if len(part) else ""
        row[f"all [{unit}] Δ"] = _paired(group, unguided, metric)
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def pair_table(frame: pd.DataFrame, metrics: list[str], a: str, b: str) -> pd.DataFrame:
    """Point ``b`` against point ``a`` (e.g. "dk=1.1,dv=1.15" vs "dk=1,dv=1") on the images
    both hold: a paired cell per metric, over all images and per PIE-Bench category."""
    first, second = point_cases(frame, a), point_cases(frame, b)
    rows = []
    categories = sorted(frame[CATEGORY].dropna().astype(str).unique()) if CATEGORY in frame else []
    for category in ["all", *categories]:
        part_a = first if category == "all" else first[first[CATEGORY].astype(str) == category]
        part_b = second if category == "all" else second[second[CATEGORY].astype(str) == category]
        if part_b.empty:
            continue
        name = "all" if category == "all" else f"{category} {CATEGORY_NAMES.get(category, '')}".strip()
        rows.append({"point": b, "against": a, "category": name,
                     **{f"{header(m)} Δ": _paired(part_b, part_a, m) for m in metrics}})
    return pd.DataFrame(rows)
