"""``attnedit-report <run dir> [<run dir> ...] [--out DIR]``: a static HTML report.

One self-contained folder (default ``<first run>/report``): ``index.html`` with the
tables, the figures, a grid of cases (reference = the unedited sample or the source
image, the edited image, the case's metrics) filterable by run / method / category /
direction / alpha / grid point (dk, dv) / status, and each run's manifest. Everything
the page loads is written inside the folder (no server, no CDN): images are hard-linked
there (copied across file systems), the script and style sheet are files next to
index.html, and the cases are a script (``cases.js``: browsers refuse ``fetch`` of
local JSON from file:// pages).

The tables come from the code ``attnedit-tables`` runs (:func:`attnedit.report.studies.write_all`,
with the same arguments: the runs, plus ``--out`` for several runs), read back
from the ``<name>.md`` (title) and ``<name>.csv`` (cells) files it writes; nothing here
computes a table. Failed cases (``failed`` / ``error`` columns) show their error and no
edited image.
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
from attnedit.report.marks import RANDOM_BACKBONE_MARK, RANDOM_MODEL_MARK
from attnedit.report.studies import write_all
from attnedit.store.run_store import RunStore

ASSETS = Path(__file__).with_name("html_assets")
MARKER = "attnedit-report.json"  # written in every report folder: only such a folder is ever cleared
GENERATED = ("assets", "images", "figures", "tables", "study", "manifests", "index.html", "cases.js", MARKER)
# (facet key, label) in the order the filters are shown; a facet with one value is not shown.
FACETS = (("run", "run"), ("method", "method"), ("category", "category"), ("direction", "direction"),
          ("alpha", "alpha"), ("point", "grid point (dk, dv)"), ("status", "status"))
# per-case marks of rows computed with random weights (the tables' titles carry the same marks)
ROW_MARKS = {"model_random_weights": "random model weights", "random_backbone": "random metric backbones"}
PAGE_MARKS = {"model_random_weights": RANDOM_MODEL_MARK, "random_backbone": RANDOM_BACKBONE_MARK}
USAGE = "usage: attnedit-report <run dir> [<run dir> ...] [--out DIR]"


@dataclass
class RunPage:
    key: str        # unique folder name inside the report: <experiment name>-<signature>
    run_dir: Path
    manifest: dict
    frame: pd.DataFrame


# -- the tables, as attnedit-tables writes them ---------------------------------------------
def write_tables(run_dirs: list[Path], study_dir: Path) -> None:
    """What attnedit-tables writes for the runs (several: the joint report in ``study_dir``)."""
    write_all(run_dirs, study_dir if len(run_dirs) > 1 else None)


def table_files(folder: Path) -> list[tuple[str, Path]]:
    """(title, csv) of every table under ``folder``: a ``<name>.md`` holding one '### ' heading
    beside a ``<name>.csv``, in the order of the folder's collected Markdown (tables.md)."""
    found, order = [], {}
    for md in sorted(folder.rglob("*.md")):
        headings = [line[4:].strip() for line in md.read_text().splitlines() if line.startswith("### ")]
        if len(headings) > 1:  # a collection (tables.md, comparison_tables.md): gives the order
            for i, heading in enumerate(headings):
                order.setdefault((md.parent, heading), i)
        elif len(headings) == 1 and md.with_suffix(".csv").exists():
            found.append((headings[0], md.with_suffix(".csv")))
    return sorted(found, key=lambda item: (str(item[1].parent), order.get((item[1].parent, item[0]), 1 << 30),
                                           item[1].name))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else str(value)


def table_html(title: str, csv: Path, out: Path) -> str:
    frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    links = " ".join(f'<a href="{html.escape(_rel(p, out))}">{p.suffix[1:]}</a>'
                     for p in (csv.with_suffix(s) for s in (".md", ".csv", ".tex")) if p.exists())
    return (f'<figure class="table"><figcaption>{html.escape(title)} <span class="files">{links}</span>'
            f"</figcaption><div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            "</table></div></figure>")


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
    facets = {"run": run_key, "method": str(row.get("method")),
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
            "metrics": [[m, _metric_text(row.get(m))] for m in metrics],
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


def facet_options(cases: list[dict]) -> list[dict[str, Any]]:
    """Filters with their values (numbers in numeric order); one-valued facets dropped."""
    facets = []
    for key, label in FACETS:
        values = list(dict.fromkeys(c["facets"][key] for c in cases if key in c["facets"]))
        if len(values) < 2:
            continue
        try:
            values.sort(key=lambda v: float(v.split()[0].split("=")[-1]))
        except ValueError:
            values.sort()
        facets.append({"key": key, "label": label, "values": values})
    return facets


# -- the page --------------------------------------------------------------------------------
def _section(title: str, anchor: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def tables_html(groups: list[tuple[str, Path]], out: Path) -> str:
    parts = []
    for label, folder in groups:
        tables = [table_html(title, csv, out) for title, csv in table_files(folder)]
        if tables:
            parts.append(f"<details open><summary>{html.escape(label)}</summary>{''.join(tables)}</details>")
    return "".join(parts) or "<p>No tables.</p>"


def figures_html(figures: list[tuple[str, Path]], out: Path) -> str:
    items = [f'<figure class="plot"><img src="{html.escape(_rel(p, out))}" alt="{html.escape(p.name)}">'
             f"<figcaption>{html.escape(label)}: {html.escape(p.name)}</figcaption></figure>" for label, p in figures]
    return f'<div class="plots">{"".join(items)}</div>' if items else "<p>No figures.</p>"


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


def write_html_report(run_dirs, out: str | Path | None = None) -> Path:
    """Writes the report folder; returns its index.html."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise DataError(USAGE)
    runs = load_runs(run_dirs)
    out = Path(out) if out is not None else run_dirs[0] / "report"
    prepare_out(out)
    (out / MARKER).write_text(json.dumps({"runs": [str(d.resolve()) for d in run_dirs]}, indent=2))
    study = out / "study"
    write_tables(run_dirs, study)

    groups = [("all runs", study)] if study.exists() else []
    figures = [("all runs", p) for p in sorted(study.rglob("*.png"))] if study.exists() else []
    for run in runs:
        for kind in ("tables", "figures"):
            for src in sorted((run.run_dir / kind).glob("*")):
                if src.is_file():
                    _place(src, out / kind / run.key / src.name)
        groups.append((run.key, out / "tables" / run.key))
        figures += [(run.key, p) for p in sorted((out / "figures" / run.key).glob("*.png"))]

    cases = [entry for run in runs for entry in case_entries(run, out)]
    data = {"facets": facet_options(cases), "cases": cases,
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
