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

Cells are means over cases (non-finite values, e.g. an empty background, skipped and
counted), in the customary scales of piebench_summary.SCALES, units in the headers and
the scored region in every title. Figures: attnedit/dcag_figures.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from attnedit.data.piebench import CATEGORY_NAMES
from attnedit.errors import AttneditError, DataError
from attnedit.piebench_summary import region_of, scale_of
from attnedit.reference import read_reference
from attnedit.store import RunStore
from attnedit.tables import _latex_escape, mean_std, metric_columns, render_markdown, title_marks

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
    """All cases with filled grid keys, a ``run`` label and a ``guidance`` label; the metric
    columns (manifest order, first run first); the manifests."""
    frames, metrics, manifests = [], [], []
    for run_dir in map(Path, run_dirs):
        store = RunStore(run_dir)
        frame = store.read()
        if frame.empty:
            raise DataError(f"run {run_dir} holds no cases yet; run attnedit-run first or drop it from the list")
        manifests.append(store.read_json("manifest.json"))
        metrics += [m for m in metric_columns(run_dir, frame) if m not in metrics]
        frames.append(frame.assign(run_dir=str(run_dir)))
    names = [str(f.method.iloc[0]) for f in frames]
    for frame, name in zip(frames, names):  # a method name shared by runs gets the run's signature
        frame["run"] = f"{name} ({Path(frame.run_dir.iloc[0]).name})" if names.count(name) > 1 else name
    frame = pd.concat(frames, ignore_index=True)
    for key in GRID_KEYS:  # unedited runs have no scales: they are the identity point
        frame[key] = frame[key].astype(float).fillna(1.0).round(4) if key in frame else 1.0
    frame["guidance"] = [guidance_label(*values) for values in frame[list(GRID_KEYS)].itertuples(index=False)]
    return frame, metrics, manifests


def point_columns(frame: pd.DataFrame) -> list[str]:
    extras = [k for k in EXTRA_KEYS if (frame[k] != 1).any()]
    return ["run", "guidance", "dk", "dv", *extras]


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


def cell(values: pd.Series, metric: str) -> str:
    """Scaled 'mean ± std' over the finite values, with the count of skipped ones."""
    return mean_std(values.astype(float) * scale_of(metric)[0], digits=2)


def scaled_mean(values: pd.Series, metric: str) -> str:
    values = values.astype(float)
    finite = values[values.map(math.isfinite)]
    return f"{finite.mean() * scale_of(metric)[0]:.2f}" if len(finite) else "n/a"


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
            row[header(metric)] = cell(group[metric], metric)
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
    columns = point_columns(frame)
    rows = []
    for key, group in points(frame):
        row = dict(zip(columns, key))
        if row["guidance"] == "none":
            continue
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
            value = scaled_mean(part[metric], metric) if len(part) else ""
            row[f"{category} {CATEGORY_NAMES.get(category, '')} [{unit}]".replace("  ", " ")] = value
        row[f"all [{unit}]"] = scaled_mean(group[metric], metric)
        rows.append(row)
    return pd.DataFrame(rows)


def grid_table(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Every point: CLIP scores (editability) first, then every fidelity metric."""
    ordered = [m for m in metrics if m.startswith("clip_similarity")] + [m for m in metrics if not m.startswith("clip")]
    columns = point_columns(frame)
    rows = []
    for key, group in points(frame):
        rows.append({**dict(zip(columns, key)), "n": len(group), **{header(m): cell(group[m], m) for m in ordered}})
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
    return tables, titles


# -- writing ---------------------------------------------------------------------------
def write_report(run_dirs, out_dir: str | Path | None = None) -> Report:
    """Tables into ``<out>/tables`` and figures into ``<out>/figures``; ``out`` defaults to
    the run directory for one run and to ``<first run>/study`` for several."""
    from attnedit.dcag_figures import fidelity_vs_editability, grid_means, lpips_contours

    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise AttneditError("give at least one run directory")
    frame, metrics, manifests = load_study(run_dirs)
    reference = published_points((manifests[0]["config"].get("tables") or {}).get("reference"))
    names = " + ".join(sorted({str(m["config"].get("name", "")) for m in manifests}))
    marks = study_marks(frame, manifests)
    tables, titles = build_report_tables(frame, metrics, reference, names, marks)

    folder = Path(out_dir) if out_dir is not None else run_dirs[0] if len(run_dirs) == 1 else run_dirs[0] / "study"
    table_dir, figure_dir = folder / "tables", folder / "figures"
    table_dir.mkdir(parents=True, exist_ok=True)
    markdown = []
    for name, table in tables.items():
        table.to_csv(table_dir / f"{name}.csv", index=False)
        latex = table.to_latex(index=False, escape=True, caption=_latex_escape(f"{titles[name]} — {name}"))
        (table_dir / f"{name}.tex").write_text(latex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$"))
        markdown.append(render_markdown(name, titles[name], table))
        (table_dir / f"{name}.md").write_text(markdown[-1])
    text = "\n".join(markdown)
    (table_dir / "tables.md").write_text(text)
    (table_dir / "meta.json").write_text(json.dumps(
        {"title": f"{names} {marks}".strip(), "rows": len(frame), "runs": [str(d.resolve()) for d in run_dirs]},
        indent=2))

    means = grid_means(frame, metrics)
    means.to_csv(table_dir / "grid_means.csv", index=False)  # unscaled; what the figures draw
    figures = [p for p in (lpips_contours(means, metrics, f"{names} {marks}".strip(), figure_dir),
                           fidelity_vs_editability(means, metrics, f"{names} {marks}".strip(), figure_dir)) if p]
    return Report(folder, tables, titles, text, figures)
