"""The DCAG study's tables and figures from bias-delta runs (GRAG / DCAG on PIE-Bench).

The cases of one or more runs (the ``none`` / ``grag`` / ``dcag`` runs of
``piebench_dcag``, or the single 25-point run of ``piebench_dcag_grid``) are grouped by
grid point: the run's method name, the guidance the scales amount to (none, GRAG = Key
only, V only, DCAG = Key and Value; "+Q" with the Query channel) and (dk, dv), plus any
of bk, bv, dq, bq that differ from 1. Rows of an unedited run (method ``none``) are the
point dk = dv = 1. Tables (Markdown, CSV, LaTeX):

- ``main``: the paper's fidelity metrics per point (whole image when measured) with the
  published values side by side, marked as a secondary, unverified source;
- ``main_relative``: change against the unedited point in percent, measured on the
  images both points share, beside the published change (unit-free, so the published
  MSE, whose unit is not stated, still compares);
- ``by_category_<lpips metric>``: LPIPS per PIE-Bench category and point;
- ``grid``: every point with CLIP score (editability) next to every fidelity metric.

- ``paired_vs_none``: every point against the unedited point on the images both hold,
  per fidelity metric the mean paired difference, its CI and the Wilcoxon p-value
  (stats.py); ``paired_vs_none_by_category_<lpips metric>``: the same per category.

Cells are means over cases (non-finite values, e.g. an empty background, skipped and
counted; failed cases counted apart), in the customary scales of piebench_summary.SCALES,
units in the headers and the scored region in every title, with the 95% CI, n_nan and
n_failed beside them (render.py).

Which runs belong to the study: bias-delta (GRAG / DCAG) runs, recognised by their
``dk`` / ``dv`` columns, and unedited runs beside them (``matches``).

Figures over the (dk, dv) plane, from per-point means:

- ``lpips_contours.png``: iso-fidelity contours of mean LPIPS over (dk, dv), one panel
  per LPIPS region measured; ``contourf`` on a full rectangular grid, a triangulated
  contour when the points are scattered (at least three, not on one line).
- ``fidelity_vs_editability.png``: mean CLIP score (x) against LPIPS and background PSNR
  (y), one labelled point per (dk, dv): the trade-off the DCAG paper left unexplored.

Only points whose other scales (bk, bv, dq, bq) are 1 are drawn; cases of one (dk, dv)
from several runs (the unedited run and a grid's (1, 1)) are pooled. Every figure title
names the model.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from attnedit.data.piebench import CATEGORY_NAMES
from attnedit.errors import AttneditError, DataError
from attnedit.report.cells import group_cell, paired_cell
from attnedit.report.columns import CATEGORY, SAMPLE_ID
from attnedit.report.marks import title_marks
from attnedit.report.piebench_summary import region_of, scale_of
from attnedit.report.reference import read_reference
from attnedit.report.render import Figure, Table, json_text
from attnedit.report.render import Report as Written
from attnedit.report.render import display, write_report as write_written
from attnedit.report.runs import Run, load_runs, run_labels
from attnedit.report.stats import paired

# BiasDelta's edit columns (attnedit.methods.bias_delta.PARAMS; not imported: it loads diffusers).
GRID_KEYS = ("dk", "dv", "bk", "bv", "dq", "bq")
EXTRA_KEYS = GRID_KEYS[2:]
GUIDANCE_ORDER = ("none", "GRAG", "V only", "DCAG")
PUBLISHED_MARK = "secondary source, unverified"
NOT_RUN = "not run"
REGION_WORDS = {"whole": "whole", "unedit_part": "background", "edit_part": "edit"}
REGION_TEXT = {
    "whole": "whole image",
    "unedit_part": "background (unedit_part: both images times 1 - mask, scored on the full frame)",
    "edit_part": "edit region (edit_part: both images times the mask)",
}
NAMES = {"lpips": "LPIPS", "ssim": "SSIM", "psnr": "PSNR", "mse": "MSE", "structure_distance": "structure distance",
         "clip_similarity_target_image": "CLIP score", "clip_similarity_source_image": "CLIP score (source image)"}
FIDELITY = ("lpips", "ssim", "psnr", "mse")
# The transcribed DCAG table gives LPIPS and SSIM as fractions and PSNR in dB, the units of
# the measured columns; its MSE unit is not stated (results/reference/README.md), so it is
# shown as transcribed and compared only as a relative change.
PUBLISHED_IN_OUR_UNITS = {"lpips": True, "ssim": True, "psnr": True, "mse": False}


@dataclass
class Report:
    folder: Path
    tables: dict[str, pd.DataFrame]
    titles: dict[str, str]
    text: str
    figures: list[Path] = field(default_factory=list)


# -- the cases -------------------------------------------------------------------------
def guidance_label(dk: float, dv: float, bk: float = 1.0, bv: float = 1.0, dq: float = 1.0, bq: float = 1.0) -> str:
    key, value, query = (dk != 1 or bk != 1), (dv != 1 or bv != 1), (dq != 1 or bq != 1)
    name = {(False, False): "none", (True, False): "GRAG", (False, True): "V only", (True, True): "DCAG"}[(key, value)]
    return name + (" +Q" if query else "")


def load_study(run_dirs) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """All cases with filled grid keys, a ``run`` label (runs sharing a method are named by
    the config keys in which they differ) and a ``guidance`` label; the metric columns
    (manifest order, first run first); the manifests."""
    runs = load_runs(run_dirs)
    frames, metrics = [], []
    for run in runs:
        if run.frame.empty:
            raise DataError(f"run {run.run_dir} holds no cases yet; run attnedit-run first or drop it from the list")
        metrics += [m for m in run.metrics if m not in metrics]
        frames.append(run.frame.assign(run_dir=str(run.run_dir)))
    for frame, label in zip(frames, run_labels(runs)):
        frame["run"] = label
    frame = pd.concat(frames, ignore_index=True)
    for key in GRID_KEYS:  # unedited runs have no scales: they are the identity point
        frame[key] = frame[key].astype(float).fillna(1.0).round(4) if key in frame else 1.0
    frame["guidance"] = [guidance_label(*values) for values in frame[list(GRID_KEYS)].itertuples(index=False)]
    return frame, metrics, [r.manifest for r in runs]


def point_columns(frame: pd.DataFrame) -> list[str]:
    extras = [k for k in EXTRA_KEYS if (frame[k] != 1).any()]
    return ["run", "guidance", "dk", "dv", *extras]


def guided_points(frame: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """({point column: value}, cases) of every grid point but the unedited one, in reading order."""
    columns = point_columns(frame)
    rows = [(dict(zip(columns, key)), group) for key, group in points(frame)]
    return [(row, group) for row, group in rows if row["guidance"] != "none"]


def points(frame: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(key, cases) per grid point in reading order: guidance, dk, dv, then the rest."""
    columns = point_columns(frame)
    groups = list(frame.groupby(columns, sort=False))

    def order(item):
        key = dict(zip(columns, item[0]))
        base = key["guidance"].replace(" +Q", "")
        return (GUIDANCE_ORDER.index(base), key["dk"], key["dv"], *(key[k] for k in columns[4:]), key["run"])

    return sorted(groups, key=order)


# -- cells and headers -----------------------------------------------------------------
def header(metric: str) -> str:
    """'LPIPS whole [x10^3]': the name, the region, the unit of the scaled values."""
    region = region_of(metric)
    base = metric.removesuffix(f"_{region}")
    name = NAMES.get(base, base)
    return f"{name} {REGION_WORDS[region]} [{scale_of(metric)[1]}]"


def cell(group: pd.DataFrame, metric: str):
    """Scaled 'mean ± std' over the finite values, with the count of skipped ones."""
    return group_cell(group, metric, digits=2, scale=scale_of(metric)[0])


def scaled_mean(group: pd.DataFrame, metric: str):
    """The scaled mean alone (category tables), with its CI and counts beside it."""
    return group_cell(group, metric, digits=2, scale=scale_of(metric)[0], std=False)


def _base(metric: str) -> str:
    return metric.removesuffix(f"_{region_of(metric)}")


def main_region(metrics: list[str]) -> str | None:
    """Whole image when measured (the DCAG paper's numbers), else background, else edit;
    None without PIE-Bench fidelity metrics (then only the grid table is written)."""
    for region in ("whole", "unedit_part", "edit_part"):
        if any(m in metrics for m in (f"{b}_{region}" for b in FIDELITY)):
            return region
    return None


# -- published numbers -----------------------------------------------------------------
def published_points(path: str | None) -> pd.DataFrame | None:
    """The reference CSV with rounded (dk, dv) keys, or None without one."""
    if not path:
        return None
    reference = read_reference(path)
    for column in ("dk", "dv"):
        if column not in reference:
            raise DataError(f"reference table {path} lacks the '{column}' column; a bias-delta reference needs "
                            "method, dk, dv, one column per metric and source (results/reference/dcag_piebench.csv)")
    return reference.assign(dk=reference.dk.astype(float).round(4), dv=reference.dv.astype(float).round(4))


def _published_column(reference: pd.DataFrame, base: str) -> str | None:
    return next((c for c in reference.columns if c not in ("method", "dk", "dv", "source") and _base(c) == base), None)


def published_header(base: str, metric: str) -> str:
    unit = scale_of(metric)[1] if PUBLISHED_IN_OUR_UNITS.get(base, False) else "as transcribed, unit not stated"
    return f"{NAMES.get(base, base)} published† [{unit}]"


def published_cell(value, base: str, metric: str) -> str:
    if pd.isna(value):
        return ""
    if PUBLISHED_IN_OUR_UNITS.get(base, False):
        return f"{float(value) * scale_of(metric)[0]:.2f}"
    return f"{float(value):g}"


def _published_row(reference: pd.DataFrame | None, dk: float, dv: float, extras_identity: bool):
    if reference is None or not extras_identity:
        return None
    match = reference[(reference.dk == dk) & (reference.dv == dv)]
    return match.iloc[0] if len(match) else None


# -- tables ----------------------------------------------------------------------------
def main_table(frame: pd.DataFrame, metrics: list[str], reference: pd.DataFrame | None) -> pd.DataFrame | None:
    region = main_region(metrics)
    if region is None:
        return None
    shown = [(b, f"{b}_{region}") for b in FIDELITY if f"{b}_{region}" in metrics]
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
    region = main_region(metrics)
    identity = frame[frame.guidance == "none"]
    if region is None or identity.empty:
        return None
    shown = [(b, f"{b}_{region}") for b in FIDELITY if f"{b}_{region}" in metrics]
    published_none = _published_row(reference, 1.0, 1.0, True)
    rows = []
    for row, group in guided_points(frame):
        row["images"] = len(set(group.sample_id) & set(identity.sample_id))
        extras_identity = all(row.get(k, 1.0) == 1 for k in EXTRA_KEYS)
        published = _published_row(reference, row["dk"], row["dv"], extras_identity)
        for base, metric in shown:
            mine, none = _finite_by_sample(group, metric), _finite_by_sample(identity, metric)
            common = mine.index.intersection(none.index)
            change = (mine[common].mean() / none[common].mean() - 1) * 100 if len(common) else float("nan")
            text = f"{change:+.1f}" if math.isfinite(change) else "n/a"
            row[f"{NAMES[base]} {REGION_WORDS[region]} Δ% measured"] = text
            if reference is not None:
                column = _published_column(reference, base)
                text = ""
                if published is not None and published_none is not None and column:
                    text = f"{(float(published[column]) / float(published_none[column]) - 1) * 100:+.1f}"
                row[f"{NAMES[base]} Δ% published†"] = text
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def category_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows = grid points, columns = PIE-Bench categories present and all: scaled means."""
    categories = sorted(frame.category.dropna().astype(str).unique(), key=lambda c: (not c.isdigit(), c.zfill(4)))
    unit = scale_of(metric)[1]
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


# -- titles ----------------------------------------------------------------------------
def study_marks(frame: pd.DataFrame, manifests: list[dict]) -> str:
    marks = [title_marks(frame)]
    samples = {frozenset(group.sample_id) for _, group in points(frame)}
    weights = {(m.get("model") or {}).get("weights_sha256_16") for m in manifests}
    differ = [what for what, values in (("samples", samples), ("model weights", weights)) if len(values) > 1]
    if differ:
        marks.append(f"[GRID POINTS DIFFER IN {', '.join(differ).upper()}: not a like-for-like comparison]")
    return " ".join(m for m in marks if m)


def _regions(metrics: list[str]) -> str:
    return "; ".join(REGION_TEXT[r] for r in dict.fromkeys(region_of(m) for m in metrics))


def build_report_tables(frame, metrics, reference, names: str, marks: str) -> tuple[dict, dict]:
    """(tables, titles) of the study."""
    region = main_region(metrics)
    published = "" if reference is None else (
        "; † published: DCAG paper (arXiv 2602.18022) as transcribed by a secondary summary — "
        f"{PUBLISHED_MARK}; its region is not stated (magnitudes suggest whole image)")
    tables, titles = {}, {}

    def add(name, table, title):
        if table is not None and not table.empty:
            tables[name] = table
            titles[name] = " ".join(filter(None, [f"{names} — {title}", marks]))

    if region is not None:
        add("main", main_table(frame, metrics, reference),
            f"main table, fidelity per grid point, region: {REGION_TEXT[region]}{published}")
        add("main_relative", relative_table(frame, metrics, reference),
            f"change against the unedited model in %, region: {REGION_TEXT[region]}, measured on the images both "
            f"points hold{published}")
    for metric in [m for m in metrics if _base(m) == "lpips"]:
        if "category" in frame and frame.category.notna().any():
            add(f"by_category_{metric}", category_table(frame, metric),
                f"{header(metric)} by PIE-Bench category (mean over images), region: {REGION_TEXT[region_of(metric)]}")
    add("grid", grid_table(frame, metrics),
        f"every grid point: editability (CLIP score) next to fidelity, regions: {_regions(metrics)}")
    if region is not None:
        add("paired_vs_none", paired_table(frame, metrics),
            f"each point against the unedited point (dk = dv = 1), region: {REGION_TEXT[region]}, difference = "
            "point - unedited in the scaled units of the headers")
    for metric in [m for m in metrics if _base(m) == "lpips"]:
        if "category" in frame and frame.category.notna().any():
            add(f"paired_vs_none_by_category_{metric}", paired_category_table(frame, metric),
                f"{header(metric)} by PIE-Bench category, each point against the unedited point, difference = "
                f"point - unedited, region: {REGION_TEXT[region_of(metric)]}")
    return tables, titles


# -- paired tests ----------------------------------------------------------------------
def _by_sample(group: pd.DataFrame, metric: str) -> pd.Series:
    """Each image's value (the mean of its cases at one point), NaN kept (paired() drops them)."""
    return group.groupby(SAMPLE_ID)[metric].mean().astype(float)


def _paired(group: pd.DataFrame, identity: pd.DataFrame, metric: str):
    a, b = _by_sample(identity, metric), _by_sample(group, metric)
    common = a.index.intersection(b.index)
    return paired_cell(paired(a[common].to_numpy(), b[common].to_numpy()), digits=2, scale=scale_of(metric)[0])


def paired_table(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame | None:
    """Per point (not the unedited one): a paired cell per fidelity metric of the main region."""
    region = main_region(metrics)
    identity = frame[frame.guidance == "none"]
    if region is None or identity.empty:
        return None
    shown = [f"{b}_{region}" for b in FIDELITY if f"{b}_{region}" in metrics]
    rows = []
    for row, group in guided_points(frame):
        rows.append({**row, **{f"{header(m)} Δ": _paired(group, identity, m) for m in shown}})
    return pd.DataFrame(rows) if rows else None


def paired_category_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """Per point and PIE-Bench category (and all): the paired cell of ``metric`` against the unedited point."""
    identity = frame[frame.guidance == "none"]
    if identity.empty:
        return None
    categories = sorted(frame[CATEGORY].dropna().astype(str).unique(), key=lambda c: (not c.isdigit(), c.zfill(4)))
    unit = scale_of(metric)[1]
    rows = []
    for row, group in guided_points(frame):
        for category in categories:
            part = group[group[CATEGORY].astype(str) == category]
            base = identity[identity[CATEGORY].astype(str) == category]
            name = f"{category} {CATEGORY_NAMES.get(category, '')} [{unit}] Δ".replace("  ", " ")
            row[name] = _paired(part, base, metric) if len(part) else ""
        row[f"all [{unit}] Δ"] = _paired(group, identity, metric)
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def parse_point(text: str) -> dict[str, float]:
    """"dk=1.1,dv=1.15" -> every grid key's value (unnamed keys: 1, the identity)."""
    point = dict.fromkeys(GRID_KEYS, 1.0)
    for part in filter(None, text.replace(" ", "").split(",")):
        key, _, value = part.partition("=")
        if key not in GRID_KEYS or not value:
            raise DataError(f"grid point '{text}': '{part}' is not <key>=<number> with a key of {', '.join(GRID_KEYS)} "
                            "(e.g. --pair dk=1.1,dv=1.15 dk=1,dv=1)")
        try:
            point[key] = round(float(value), 4)
        except ValueError:
            raise DataError(f"grid point '{text}': '{value}' is not a number") from None
    return point


def point_cases(frame: pd.DataFrame, text: str) -> pd.DataFrame:
    point = parse_point(text)
    chosen = frame[(frame[list(GRID_KEYS)] == pd.Series(point)).all(axis=1)]
    if chosen.empty:
        held = sorted({", ".join(f"{k}={v:g}" for k, v in zip(GRID_KEYS, key) if k in ("dk", "dv") or v != 1)
                       for key in frame[list(GRID_KEYS)].itertuples(index=False)})
        raise DataError(f"grid point '{text}' is not in these runs; they hold: {'; '.join(held)}")
    return chosen


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


# -- which runs ------------------------------------------------------------------------
def is_bias_delta(frame: pd.DataFrame) -> bool:
    return "dk" in frame and "dv" in frame


def is_unedited(manifest: dict) -> bool:
    return str(((manifest.get("config") or {}).get("method") or {}).get("_target_", "")).endswith(".NoEdit")


def is_study_run(run: Run) -> bool:
    """A bias-delta run, or an unedited run whose published reference holds (dk, dv) points."""
    if is_bias_delta(run.frame):
        return True
    reference = (run.config.get("tables") or {}).get("reference")
    return is_unedited(run.manifest) and bool(reference) and {"dk", "dv"} <= set(read_reference(reference).columns)


def study_runs(runs: list[Run]) -> bool:
    """True when every run is a bias-delta or an unedited run and at least one is bias-delta."""
    kinds = ["bias_delta" if is_bias_delta(r.frame) else "none" if is_unedited(r.manifest) else "other" for r in runs]
    return "bias_delta" in kinds and "other" not in kinds


def matches(runs: list[Run]) -> bool:
    """One study run (bias-delta, or unedited with a (dk, dv) reference), or several runs of the study."""
    return is_study_run(runs[0]) if len(runs) == 1 else study_runs(runs)


# -- figures ---------------------------------------------------------------------------
EDITABILITY = ("clip_similarity_target_image", "clip_similarity_target_image_edit_part")
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
    region = region_of(metric)
    name = "CLIP score" if metric.startswith("clip") else metric.removesuffix(f"_{region}").upper()
    return f"{name} {REGION_WORDS[region]} [{scale_of(metric)[1]}]"


def _suptitle(fig, text: str) -> None:
    fig.suptitle("\n".join(textwrap.wrap(text, 110)), fontsize=8)


def _contour_panel(ax, points: pd.DataFrame, metric: str) -> None:
    x, y = points.dk.to_numpy(float), points.dv.to_numpy(float)
    z = points[metric].to_numpy(float) * scale_of(metric)[0]
    xs, ys = np.unique(x), np.unique(y)
    full = len(xs) >= 2 and len(ys) >= 2 and len(points) == len(xs) * len(ys)
    spread = len(points) >= 3 and np.linalg.matrix_rank(np.c_[x - x[0], y - y[0]]) == 2
    if np.ptp(z) > 0 and (full or spread):
        if full:
            grid = points.pivot(index="dv", columns="dk", values=metric).loc[ys, xs].to_numpy(float)
            grid = grid * scale_of(metric)[0]
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
def fidelity_vs_editability(means: pd.DataFrame, metrics: list[str], title: str):
    """The figure (not saved), or None without a CLIP score and a fidelity metric."""
    clip = next((m for m in EDITABILITY if m in metrics), None)
    lpips = next((m for m in ("lpips_whole", "lpips_unedit_part") if m in metrics), None)
    fidelity = [m for m in (lpips, "psnr_unedit_part") if m in metrics]
    if means.empty or clip is None or not fidelity:
        return None
    fig, axes = _figure(len(fidelity), 4.8)
    for ax, metric in zip(axes[0], fidelity):
        x = means[clip].to_numpy(float) * scale_of(clip)[0]
        y = means[metric].to_numpy(float) * scale_of(metric)[0]
        identity = ((means.dk == 1) & (means.dv == 1)).to_numpy()
        scatter = ax.scatter(x, y, c=means.dv, cmap="plasma", edgecolors="k", s=28, zorder=3)
        ax.scatter(x[identity], y[identity], marker="*", s=160, c="none", edgecolors="k", zorder=4, label="none (1, 1)")
        for xi, yi, dk, dv in zip(x, y, means.dk, means.dv):
            ax.annotate(f"({dk:g}, {dv:g})", (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
        ax.margins(0.12)
        ax.set_xlabel(f"{_label(clip)} (higher = more edited)")
        better = "lower" if metric.startswith("lpips") else "higher"
        ax.set_ylabel(f"{_label(metric)} ({better} = more faithful)")
        fig.colorbar(scatter, ax=ax, label="dv")
        if identity.any():
            ax.legend(fontsize=7)
    _suptitle(fig, f"{title} — fidelity vs editability per (dk, dv), labels (dk, dv)")
    return fig


def _figure(panels: int, width: float):
    # constrained layout: the suptitle, panel titles and colorbars get their own space
    return plt.subplots(1, panels, figsize=(width * panels, 4.2), squeeze=False, layout="constrained")


# -- the study -------------------------------------------------------------------------
def _models(manifests: list[dict]) -> str:
    names = sorted({str((m.get("model") or {}).get("name", "?")) for m in manifests})
    return f"model {', '.join(names)}"


def build(runs: list[Run], pairs: list[tuple[str, str]] = ()) -> Written:
    """Tables, grid_means.csv, meta.json and the figures of the study's runs; ``pairs``:
    (a, b) grid points to compare on request (pair_table), one table ``paired_<i>`` each."""
    frame, metrics, manifests = load_study(runs)
    reference = published_points((manifests[0]["config"].get("tables") or {}).get("reference"))
    names = " + ".join(sorted({str(m["config"].get("name", "")) for m in manifests}))
    marks = study_marks(frame, manifests)
    tables, titles = build_report_tables(frame, metrics, reference, names, marks)
    for i, (a, b) in enumerate(pairs, start=1):
        tables[f"paired_{i}"] = pair_table(frame, metrics, a, b)
        titles[f"paired_{i}"] = " ".join(filter(None, [f"{names} — grid point {b} against {a}, difference = {b} - {a} "
                                                       f"in the scaled units of the headers", marks]))
    meta = {"title": f"{names} {marks}".strip(), "rows": len(frame), "runs": [str(r.run_dir.resolve()) for r in runs]}
    means = grid_means(frame, metrics)
    figure_title = f"{names} ({_models(manifests)}) {marks}".strip()
    figures = [Figure(f"figures/{name}.png", fig, {"dpi": 110}) for name, fig in (
        ("lpips_contours", lpips_contours(means, metrics, figure_title)),
        ("fidelity_vs_editability", fidelity_vs_editability(means, metrics, figure_title))) if fig is not None]
    files = {"tables/meta.json": json_text(meta), "tables/grid_means.csv": means.to_csv(index=False)}
    return Written([Table(name, titles[name], table) for name, table in tables.items()], figures, files)


def write_report(run_dirs, out_dir: str | Path | None = None) -> Report:
    """Tables into ``<out>/tables`` and figures into ``<out>/figures``; ``out`` defaults to
    the run directory for one run and to ``<first run>/study`` for several."""
    runs = load_runs(run_dirs)
    if not runs:
        raise AttneditError("give at least one run directory")
    written = build(runs)
    folder = Path(out_dir) if out_dir is not None else runs[0].run_dir if len(runs) == 1 else runs[0].run_dir / "study"
    text = write_written(written, folder)
    return Report(folder, {t.name: display(t.frame) for t in written.tables}, {t.name: t.title for t in written.tables},
                  text, [folder / f.path for f in written.figures])
