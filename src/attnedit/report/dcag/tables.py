"""The study's tables: fidelity per grid point beside the published numbers, the change
against the unedited model, LPIPS per category, every point's editability and fidelity."""

from __future__ import annotations

import math

import pandas as pd

from attnedit.data.piebench import CATEGORY_NAMES
from attnedit.errors import DataError
from attnedit.metrics.base import REGIONS
from attnedit.metrics.registry import metric_info
from attnedit.report.dcag.paired import paired_category_table, paired_table
from attnedit.report.dcag.points import (
    EXTRA_KEYS,
    FIDELITY,
    base_metric,
    cell,
    guidance_label,
    guided_points,
    header,
    main_region,
    point_columns,
    points,
    region,
    scale,
    scaled_mean,
    unguided_for,
)
from attnedit.report.marks import title_marks
from attnedit.report.reference import read_reference

PUBLISHED_MARK = "secondary source, unverified"
NOT_RUN = "not run"
# The transcribed DCAG table gives LPIPS and SSIM as fractions and PSNR in dB, the units of
# the measured columns; its MSE unit is not stated (experiments/README.md), so it is
# shown as transcribed and compared only as a relative change.
PUBLISHED_IN_OUR_UNITS = {"lpips": True, "ssim": True, "psnr": True, "mse": False}


def published_points(path: str | None) -> pd.DataFrame | None:
    """The reference CSV with rounded (dk, dv) keys, or None without one."""
    if not path:
        return None
    reference = read_reference(path)
    for column in ("dk", "dv"):
        if column not in reference:
            raise DataError(f"reference table {path} lacks the '{column}' column; a bias-delta reference needs "
                            "method, dk, dv, one column per metric and source (experiments/piebench_dcag/reference/dcag_piebench.csv)")
    return reference.assign(dk=reference.dk.astype(float).round(4), dv=reference.dv.astype(float).round(4))


def _published_column(reference: pd.DataFrame, base: str) -> str | None:
    return next((c for c in reference.columns if c not in ("method", "dk", "dv", "source") and base_metric(c) == base), None)


def published_header(base: str, metric: str) -> str:
    info = metric_info(metric)
    unit = info.unit if PUBLISHED_IN_OUR_UNITS.get(base, False) else "as transcribed, unit not stated"
    return f"{info.display_name} published† [{unit}]"


def published_cell(value, base: str, metric: str) -> str:
    if pd.isna(value):
        return ""
    if PUBLISHED_IN_OUR_UNITS.get(base, False):
        return f"{float(value) * scale(metric):.2f}"
    return f"{float(value):g}"


def _published_row(reference: pd.DataFrame | None, dk: float, dv: float, extras_identity: bool):
    if reference is None or not extras_identity:
        return None
    match = reference[(reference.dk == dk) & (reference.dv == dv)]
    return match.iloc[0] if len(match) else None


def main_table(frame: pd.DataFrame, metrics: list[str], reference: pd.DataFrame | None) -> pd.DataFrame | None:
    main = main_region(metrics)
    if main is None:
        return None
    shown = [(b, f"{b}_{main}") for b in FIDELITY if f"{b}_{main}" in metrics]
    columns = point_columns(frame)
    rows, seen = [], set()
    for key, group in points(frame):
        row = {**dict(zip(columns, key)), "n": len(group)}
        extras_identity = all(row.get(k, 1.0) == 1 for k in EXTRA_KEYS)
        published = _published_row(reference, row["dk"], row["dv"], extras_identity)
        for base, metric in shown:
            row[header(metric)] = cell(group, metric)
            if reference is not None:
                column = _published_column(reference, base)
                value = published[column] if published is not None and column else float("nan")
                row[published_header(base, metric)] = published_cell(value, base, metric)
        if reference is not None:
            row["published source"] = "" if published is None else str(published.source)
            if published is not None:
                seen.add((row["dk"], row["dv"]))
        rows.append(row)
    for published in ([] if reference is None else reference.itertuples(index=False)):
        if (published.dk, published.dv) in seen:
            continue  # published points the runs do not hold: shown with "not run"
        row = {c: "" for c in columns} | {"run": NOT_RUN, "guidance": guidance_label(published.dk, published.dv),
                                          "dk": published.dk, "dv": published.dv, "n": 0}
        for base, metric in shown:
            column = _published_column(reference, base)
            row[header(metric)] = NOT_RUN
            row[published_header(base, metric)] = published_cell(getattr(published, column) if column else None,
                                                                 base, metric)
        row["published source"] = str(published.source)
        rows.append(row)
    return pd.DataFrame(rows)


def _finite_by_sample(group: pd.DataFrame, metric: str) -> pd.Series:
    values = group.groupby("sample_id")[metric].mean().astype(float)
    return values[values.map(math.isfinite)]


def relative_table(frame: pd.DataFrame, metrics: list[str], reference: pd.DataFrame | None) -> pd.DataFrame | None:
    """Percent change of each point against the unedited point, on the images both hold."""
    main = main_region(metrics)
    identity = frame[frame.guidance == "none"]
    if main is None or identity.empty:
        return None
    shown = [(b, f"{b}_{main}") for b in FIDELITY if f"{b}_{main}" in metrics]
    published_none = _published_row(reference, 1.0, 1.0, True)
    rows = []
    for row, group in guided_points(frame):
        unguided = unguided_for(identity, group)
        row["images"] = len(set(group.sample_id) & set(unguided.sample_id))
        extras_identity = all(row.get(k, 1.0) == 1 for k in EXTRA_KEYS)
        published = _published_row(reference, row["dk"], row["dv"], extras_identity)
        for base, metric in shown:
            mine, none = _finite_by_sample(group, metric), _finite_by_sample(unguided, metric)
            common = mine.index.intersection(none.index)
            change = (mine[common].mean() / none[common].mean() - 1) * 100 if len(common) else float("nan")
            text = f"{change:+.1f}" if math.isfinite(change) else "n/a"
            row[f"{metric_info(metric).display_name} {REGIONS[main].word} Δ% measured"] = text
            if reference is not None:
                column = _published_column(reference, base)
                text = ""
                if published is not None and published_none is not None and column:
                    text = f"{(float(published[column]) / float(published_none[column]) - 1) * 100:+.1f}"
                row[f"{metric_info(metric).display_name} Δ% published†"] = text
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def category_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows = grid points, columns = PIE-Bench categories present and all: scaled means."""
    categories = sorted(frame.category.dropna().astype(str).unique(), key=lambda c: (not c.isdigit(), c.zfill(4)))
    unit = metric_info(metric).unit
    columns = point_columns(frame)
    rows = []
    for key, group in points(frame):
        row = {**dict(zip(columns, key)), "n": len(group)}
        for category in categories:
            part = group[group.category.astype(str) == category]
            value = scaled_mean(part, metric) if len(part) else ""
            row[f"{category} {CATEGORY_NAMES.get(category, '')} [{unit}]".replace("  ", " ")] = value
        row[f"all [{unit}]"] = scaled_mean(group, metric)
        rows.append(row)
    return pd.DataFrame(rows)


def grid_table(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Every point: CLIP scores (editability) first, then every fidelity metric."""
    ordered = [m for m in metrics if m.startswith("clip_similarity")] + [m for m in metrics if not m.startswith("clip")]
    columns = point_columns(frame)
    rows = []
    for key, group in points(frame):
        rows.append({**dict(zip(columns, key)), "n": len(group), **{header(m): cell(group, m) for m in ordered}})
    return pd.DataFrame(rows)


def study_marks(frame: pd.DataFrame, manifests: list[dict]) -> str:
    marks = [title_marks(frame)]
    samples = {frozenset(group.sample_id) for _, group in points(frame)}
    weights = {(m.get("model") or {}).get("weights_sha256_16") for m in manifests}
    differ = [what for what, values in (("samples", samples), ("model weights", weights)) if len(values) > 1]
    if differ:
        marks.append(f"[GRID POINTS DIFFER IN {', '.join(differ).upper()}: not a like-for-like comparison]")
    return " ".join(m for m in marks if m)


def _regions(metrics: list[str]) -> str:
    return "; ".join(REGIONS[r].text for r in dict.fromkeys(region(m) for m in metrics))


def build_report_tables(frame, metrics, reference, names: str, marks: str) -> tuple[dict, dict]:
    """(tables, titles) of the study."""
    main = main_region(metrics)
    published = "" if reference is None else (
        "; † published: DCAG paper (arXiv 2602.18022) as transcribed by a secondary summary — "
        f"{PUBLISHED_MARK}; its region is not stated (magnitudes suggest whole image)")
    tables, titles = {}, {}

    def add(name, table, title):
        if table is not None and not table.empty:
            tables[name] = table
            titles[name] = " ".join(filter(None, [names, f"[{title}]", marks]))  # the description: a note

    if main is not None:
        add("main", main_table(frame, metrics, reference),
            f"main table, fidelity per grid point, region: {REGIONS[main].text}{published}")
        add("main_relative", relative_table(frame, metrics, reference),
            f"change against the unedited model in %, region: {REGIONS[main].text}, measured on the images both "
            f"points hold{published}")
    for metric in [m for m in metrics if base_metric(m) == "lpips"]:
        if "category" in frame and frame.category.notna().any():
            add(f"by_category_{metric}", category_table(frame, metric),
                f"{header(metric)} by PIE-Bench category (mean over images), region: {REGIONS[region(metric)].text}")
    add("grid", grid_table(frame, metrics),
        f"every grid point: editability (CLIP score) next to fidelity, regions: {_regions(metrics)}")
    if main is not None:
        add("paired_vs_none", paired_table(frame, metrics),
            f"each point against the unedited point (dk = dv = 1), region: {REGIONS[main].text}, difference = "
            "point - unedited in the scaled units of the headers")
    for metric in [m for m in metrics if base_metric(m) == "lpips"]:
        if "category" in frame and frame.category.notna().any():
            add(f"paired_vs_none_by_category_{metric}", paired_category_table(frame, metric),
                f"{header(metric)} by PIE-Bench category, each point against the unedited point, difference = "
                f"point - unedited, region: {REGIONS[region(metric)].text}")
    return tables, titles
