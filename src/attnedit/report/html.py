"""``attnedit-report <run dir> [<run dir> ...] [--out DIR]``: a static HTML report.

One self-contained folder (default ``<run>/report`` for one run,
``<results>/comparisons/<hash>/report`` for several): ``index.html`` with the tables, the
figures, the cases and each run's manifest. Cases are grouped by sample under
its reference image (the unedited sample or the source image: shown once per group, or on
hover when sorted across samples), sortable by any metric and filterable by sample /
method / category / direction / alpha / grid point (dk, dv) / status; a report over several
runs has a run picker. The page's state (filters, sort, runs, section) lives in the
address's #fragment, so a link reproduces a view; a value there the report does not hold
gets a notice listing the valid ones. Everything the page loads is written inside the
folder (no server, no CDN): images are hard-linked there (copied across file systems), the
script and style sheet are files next to index.html, and the cases are a script
(``cases.js``: browsers refuse ``fetch`` of local JSON from file:// pages).

The tables come from the code ``attnedit-tables`` runs (:func:`attnedit.report.studies.write_all`,
with the same arguments: the runs, plus ``--out`` for several runs), read back
from the ``<name>.md`` (title, footnotes) and ``<name>.csv`` (numbers) files it writes
(:mod:`attnedit.report.html_tables`); nothing here computes a table. Each run shows its
own tables (those its tables.md lists) and the comparison of several runs is shown once,
from the report's own folder. Failed cases (``failed`` / ``error`` columns) show their
error and no edited image.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from attnedit.errors import DataError
from attnedit.methods.bias_delta.params import PARAMS as GRID_KEYS
from attnedit.report import html_tables
from attnedit.report.marks import RANDOM_BACKBONE_MARK, RANDOM_MODEL_MARK
from attnedit.report.studies import write_all
from attnedit.store.run_index import comparison_folder
from attnedit.store.run_store import RunStore

ASSETS = Path(__file__).with_name("html_assets")
MARKER = "attnedit-report.json"  # written in every report folder: only such a folder is ever cleared
GENERATED = ("assets", "images", "figures", "tables", "study", "manifests", "index.html", "cases.js", MARKER)
# (facet key, label) in the order the filters are shown; a facet with one value is not shown
# (the page still knows its value: a link naming another one gets a notice). "run" is the run picker.
FACETS = (("run", "run"), ("sample", "sample"), ("method", "method"), ("category", "category"),
          ("direction", "direction"), ("alpha", "alpha"), ("point", "grid point (dk, dv)"), ("status", "status"))
# per-case marks of rows computed with random weights (the tables' titles carry the same marks)
ROW_MARKS = {"model_random_weights": "random model weights", "random_backbone": "random metric backbones"}
PAGE_MARKS = {"model_random_weights": RANDOM_MODEL_MARK, "random_backbone": RANDOM_BACKBONE_MARK}
SERIES_MIN, SERIES_OPEN = 3, 8  # figures named alike that make a series; a series up to SERIES_OPEN long is open
USAGE = "usage: attnedit-report <run dir> [<run dir> ...] [--out DIR]"


@dataclass
class RunPage:
    key: str        # unique folder name inside the report: <experiment name>-<signature>
    run_dir: Path
    manifest: dict
    frame: pd.DataFrame


# -- the tables, as attnedit-tables writes them ---------------------------------------------
def write_tables(run_dirs: list[Path], study_dir: Path, each_run: bool = True) -> None:
    """What attnedit-tables writes for the runs (several: the joint report in ``study_dir``;
    ``each_run`` False: the runs' own tables are fresh, e.g. at a multirun's end)."""
    write_all(run_dirs, study_dir if len(run_dirs) > 1 else None, each_run=each_run)


def _headings(md: Path) -> list[str]:
    return [line[4:].strip() for line in md.read_text().splitlines() if line.startswith("### ")]


def own_tables(folder: Path) -> list[str]:
    """The names of a run's own tables: those its index (tables.md) lists. A comparison
    written into the folder by an earlier ``attnedit-tables R1 R2`` is not one of them."""
    index = folder / "tables.md"
    return [h.rpartition(" — ")[2] for h in _headings(index)] if index.is_file() else []


def table_files(folder: Path) -> list[Path]:
    """The csv of every table under ``folder``: a ``<name>.md`` holding one '### ' heading
    beside a ``<name>.csv``, in the order of the folder's collected Markdown (tables.md)."""
    found, order = [], {}
    for md in sorted(folder.rglob("*.md")):
        headings = _headings(md)
        if len(headings) > 1 or md.name.endswith("tables.md"):  # a collection: gives the order
            for i, heading in enumerate(headings):
                order.setdefault((md.parent, heading.rpartition(" — ")[2]), i)
        elif len(headings) == 1 and md.with_suffix(".csv").exists():
            found.append(md.with_suffix(".csv"))
    return sorted(found, key=lambda csv: (str(csv.parent), order.get((csv.parent, csv.stem), 1 << 30), csv.name))


def table_html(csv: Path, out: Path) -> str:
    links = " ".join(f'<a href="{html.escape(_rel(p, out))}">{p.suffix[1:]}</a>'
                     for p in (csv.with_suffix(s) for s in (".md", ".csv", ".tex")) if p.exists())
    return html_tables.table_html(html_tables.read_markdown(csv.with_suffix(".md")), csv, links)


# -- files inside the report ---------------------------------------------------------------
def _place(src: Path, dst: Path) -> None:
    """Hard link (free, survives the run folder's removal), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def prepare_out(out: Path) -> None:
    """An empty folder, or an earlier report's folder (its generated parts removed)."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise DataError(f"--out {out} exists and is not an attnedit report folder (no {MARKER}); "
                            "give a new or empty folder")
        for name in GENERATED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


# -- the runs --------------------------------------------------------------------------------
def load_runs(run_dirs: list[Path]) -> list[RunPage]:
    runs, keys = [], set()
    for run_dir in run_dirs:
        store = RunStore.open(run_dir)
        manifest = store.read_json("manifest.json")
        key = f"{(manifest.get('config') or {}).get('name', run_dir.parent.name)}-{run_dir.name}"
        while key in keys:
            key += "_"
        keys.add(key)
        runs.append(RunPage(key, run_dir, manifest, store.read()))
    return runs


def reference_kind(manifest: dict) -> str:
    """What a case's reference image is: the backend says (``reference_is_unedited``)."""
    from hydra.utils import get_class

    target = ((manifest.get("config") or {}).get("model") or {}).get("_target_", "")
    try:
        unedited = bool(getattr(get_class(target), "reference_is_unedited", False))
    except (ImportError, ValueError, AttributeError):  # a backend renamed since the run: say so
        return "reference"
    return "unedited sample" if unedited else "source image"


def _number(value: Any) -> str:
    return f"{float(value):g}"


def facet_values(row: dict, run_key: str) -> dict[str, str]:
    """The filter values of one case (absent facets left out)."""
    facets = {"run": run_key, "sample": str(row.get("sample_id")), "method": str(row.get("method")),
              "status": "failed" if _is_true(row.get("failed")) else "ok"}
    if row.get("category") is not None and not _missing(row.get("category")):
        facets["category"] = str(row["category"])
    if not _missing(row.get("direction")):
        label = row.get("label")
        facets["direction"] = f"{int(row['direction'])}" + (f" ({label})" if isinstance(label, str) and label else "")
    if not _missing(row.get("alpha")):
        facets["alpha"] = _number(row["alpha"])
    if not _missing(row.get("dk")) or not _missing(row.get("dv")):
        scales = {k: (1.0 if _missing(row.get(k)) else float(row[k])) for k in GRID_KEYS}
        shown = [k for k in GRID_KEYS if k in ("dk", "dv") or scales[k] != 1.0]
        facets["point"] = " ".join(f"{k}={scales[k]:g}" for k in shown)
    elif row.get("method") == "none":  # the unedited run of a bias-delta study: the point dk = dv = 1
        facets["point"] = "dk=1 dv=1"
    return facets


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_true(value: Any) -> bool:
    return not _missing(value) and bool(value)


def case_entries(run: RunPage, out: Path) -> list[dict[str, Any]]:
    """One entry per case: facets, image paths inside ``out`` (None when not saved), metrics."""
    metrics = [m for m in run.manifest.get("metric_order", run.manifest.get("metrics", {})) if m in run.frame]
    entries = []
    for row in run.frame.to_dict("records"):
        failed = _is_true(row.get("failed"))
        images = {}
        for field in ("reference_path", "image_path"):
            rel = row.get(field)
            src = run.run_dir / rel if isinstance(rel, str) and rel else None
            if src is None or not src.is_file() or (failed and field == "image_path"):
                images[field] = None
                continue
            dst = out / "images" / run.key / rel
            if not dst.exists():  # a reference is shared by every edit of its sample
                _place(src, dst)
            images[field] = _rel(dst, out)
        entries.append({
            "run": run.key,
            "case": str(row.get("case_id")),
            "sample": str(row.get("sample_id")),
            "facets": facet_values(row, run.key),
            "reference": images["reference_path"],
            "image": images["image_path"],
            "metrics": [[m, _metric_text(row.get(m)), _metric_value(row.get(m))] for m in metrics],
            "error": str(row["error"]) if failed and not _missing(row.get("error")) else None,
            "marks": [mark for column, mark in ROW_MARKS.items() if _is_true(row.get(column))],
        })
    return entries


def _metric_text(value: Any) -> str:
    if _missing(value):
        return "NaN"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _metric_value(value: Any) -> float | None:
    """The number the cases sort on (None: NaN, missing or text: sorted last; infinities kept:
    the page's data is a script, where JSON's Infinity is a number)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def facet_options(cases: list[dict]) -> list[dict[str, Any]]:
    """Filters with their values (numbers in numeric order); ``shown``: more than one value."""
    facets = []
    for key, label in FACETS:
        values = list(dict.fromkeys(c["facets"][key] for c in cases if key in c["facets"]))
        if not values:
            continue
        try:
            values.sort(key=lambda v: float(v.split()[0].split("=")[-1]))
        except ValueError:
            values.sort()
        facets.append({"key": key, "label": label, "values": values, "shown": len(values) > 1})
    return facets


# -- the page --------------------------------------------------------------------------------
def _section(title: str, anchor: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _group(label: str, run: str | None, body: str) -> str:
    """A folded group; a run's carries ``data-run`` (the run picker hides it), the comparison does not."""
    attr = f' data-run="{html.escape(run)}"' if run else ' class="comparison"'
    return f"<details open{attr}><summary>{html.escape(label)}</summary>{body}</details>"


def tables_html(groups: list[tuple[str, str | None, list[Path]]], out: Path) -> str:
    """Each group (label, run key or None for the comparison, its tables) folded under its label."""
    parts = [_group(label, run, "".join(table_html(csv, out) for csv in csvs)) for label, run, csvs in groups if csvs]
    return f'<p class="hint">{html.escape(html_tables.LEGEND)}</p>' + "".join(parts) if parts else "<p>No tables.</p>"


def figure_caption(path: Path) -> str:
    """What a figure shows, from its file name ("alpha_sweep_seed000000" -> "alpha sweep seed000000")."""
    return re.sub(r"[_\s]+", " ", path.stem).strip()


def _figure(path: Path, out: Path) -> str:
    src, caption = html.escape(_rel(path, out)), html.escape(figure_caption(path))
    return (f'<figure class="plot"><a href="{src}"><img src="{src}" alt="{caption}"></a><figcaption>{caption} '
            f'<span class="files">{html.escape(path.name)}</span></figcaption></figure>')


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def figure_series(paths: list[Path]) -> tuple[list[Path], dict[str, list[Path]]]:
    """(the single figures, {series: its figures}): a series is SERIES_MIN or more figures
    named alike but for a trailing number or sample (alpha_sweep_seed000000, gallery_direction_3),
    so the summary plots are not buried under one figure per sample."""
    named: dict[str, list[Path]] = {}
    for path in sorted(paths, key=_natural):
        match = re.match(r"^(.+?)[_-]?(?:seed)?\d+$", path.stem)
        named.setdefault(f"{path.parent}/{match.group(1)}" if match else str(path), []).append(path)
    singles = [p for group in named.values() if len(group) < SERIES_MIN for p in group]
    series = {key: group for key, group in named.items() if len(group) >= SERIES_MIN}
    return sorted(singles, key=_natural), series


def _plots(paths: list[Path], out: Path) -> str:
    return f'<div class="plots">{"".join(_figure(p, out) for p in paths)}</div>'


def figures_html(groups: list[tuple[str, str | None, list[Path]]], out: Path) -> str:
    """Each group's figures, captioned, folded under its label (as the tables): the single
    figures first, then each series folded under its name (closed when long)."""
    parts = []
    for label, run, paths in groups:
        if not paths:
            continue
        singles, series = figure_series(paths)
        body = _plots(singles, out) if singles else ""
        for key, members in series.items():
            opened = " open" if len(members) <= SERIES_OPEN else ""
            body += (f'<details class="series"{opened}><summary>{html.escape(figure_caption(Path(key)))} '
                     f"({len(members)} figures)</summary>{_plots(members, out)}</details>")
        parts.append(_group(label, run, body))
    return "".join(parts) or "<p>No figures.</p>"


def copy_run_files(run: RunPage, out: Path) -> tuple[list[Path], list[Path]]:
    """A run's own tables (no stale comparison left in its tables/) and every figure under
    its figures/, placed in the report; returns (table csvs, figures)."""
    folder, tables = run.run_dir / "tables", []
    for name in own_tables(folder):
        for src in (folder / f"{name}{suffix}" for suffix in (".md", ".csv", ".tex")):
            if src.is_file():
                _place(src, out / "tables" / run.key / src.name)
        if (folder / f"{name}.csv").is_file() and (folder / f"{name}.md").is_file():
            tables.append(out / "tables" / run.key / f"{name}.csv")
    figures = []
    for src in sorted((run.run_dir / "figures").rglob("*.png")):
        figures.append(out / "figures" / run.key / src.relative_to(run.run_dir / "figures"))
        _place(src, figures[-1])
    return tables, figures


def manifests_html(runs: list[RunPage], out: Path) -> str:
    parts = []
    for run in runs:
        path = out / "manifests" / f"{run.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(run.manifest, indent=2, sort_keys=True, default=str)
        path.write_text(text)
        parts.append(f"<details><summary>{html.escape(run.key)} ({html.escape(str(run.run_dir))}) "
                     f'<a href="{html.escape(_rel(path, out))}">manifest.json</a></summary>'
                     f"<pre>{html.escape(text)}</pre></details>")
    return "".join(parts)


def write_html_report(run_dirs, out: str | Path | None = None, each_run: bool = True) -> Path:
    """Writes the report folder; returns its index.html (``each_run``: :func:`write_tables`)."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise DataError(USAGE)
    runs = load_runs(run_dirs)
    if out is None:  # one run: its own folder; several: beside the comparison tables, never inside a run
        out = run_dirs[0] / "report" if len(run_dirs) == 1 else comparison_folder(run_dirs) / "report"
    out = Path(out)
    prepare_out(out)
    (out / MARKER).write_text(json.dumps({"runs": [str(d.resolve()) for d in run_dirs]}, indent=2))
    study = out / "study"
    write_tables(run_dirs, study, each_run)

    # the comparison once, from this report's own folder; each run's own tables and figures
    joint = "comparison of all runs"
    groups = [(joint, None, table_files(study))] if study.exists() else []
    figures = [(joint, None, sorted(study.rglob("*.png")))] if study.exists() else []
    for run in runs:
        tables, plots = copy_run_files(run, out)
        groups.append((run.key, run.key, tables))
        figures.append((run.key, run.key, plots))

    cases = [entry for run in runs for entry in case_entries(run, out)]
    data = {"facets": facet_options(cases), "cases": cases, "runs": [run.key for run in runs],
            "metrics": list(dict.fromkeys(m[0] for c in cases for m in c["metrics"])),
            "references": {run.key: reference_kind(run.manifest) for run in runs}}
    # "</" would end the <script> element if this were inlined; escaped anyway for safety
    (out / "cases.js").write_text("window.ATTNEDIT_REPORT = " + json.dumps(data).replace("</", "<\\/") + ";\n")
    (out / "assets").mkdir(exist_ok=True)
    for name in ("report.css", "report.js"):
        shutil.copyfile(ASSETS / name, out / "assets" / name)
    failed = sum(c["facets"]["status"] == "failed" for c in cases)
    marks = [mark for column, mark in PAGE_MARKS.items()
             if any(column in r.frame and r.frame[column].map(_is_true).any() for r in runs)]
    summary = html.escape(f"{len(runs)} run(s), {len(cases)} cases" + (f", {failed} failed" if failed else "")
                          + " · " + ", ".join(r.key for r in runs) + "".join(f" {m}" for m in marks))
    values = {"TITLE": html.escape(", ".join(r.key for r in runs)), "SUMMARY": summary,
              "TABLES": _section("Tables", "tables", tables_html(groups, out)),
              "FIGURES": _section("Figures", "figures", figures_html(figures, out)),
              "MANIFESTS": _section("Manifests", "manifests", manifests_html(runs, out))}
    # one pass: a table cell holding "{{...}}" is never taken for a slot
    page = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], (ASSETS / "index.html").read_text())
    (out / "index.html").write_text(page)
    return out / "index.html"
