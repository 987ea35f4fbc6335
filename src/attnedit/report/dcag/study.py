"""The study's report: tables, grid means, figures, written into one folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from attnedit.errors import AttneditError
from attnedit.report.dcag.figures import INSTRUCTION_FOLLOWING, fidelity_vs_editability, grid_means, lpips_contours
from attnedit.report.dcag.paired import pair_table
from attnedit.report.dcag.runs import load_study
from attnedit.report.dcag.tables import build_report_tables, published_points, study_marks
from attnedit.report.render import Figure, Table, display, json_text
from attnedit.report.render import Report as Written
from attnedit.report.render import write_report as write_written
from attnedit.report.runs import Run, load_runs


@dataclass
class Report:
    folder: Path
    tables: dict[str, pd.DataFrame]
    titles: dict[str, str]
    text: str
    figures: list[Path] = field(default_factory=list)


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
        titles[f"paired_{i}"] = " ".join(filter(None, [f"{names} [grid point {b} against {a}, difference = {b} - {a} "
                                                       f"in the scaled units of the headers]", marks]))
    meta = {"title": f"{names} {marks}".strip(), "rows": len(frame), "runs": [str(r.run_dir.resolve()) for r in runs]}
    means = grid_means(frame, metrics)
    figure_title = f"{names} ({_models(manifests)}) {marks}".strip()
    figures = [Figure(f"figures/{name}.png", fig, {"dpi": 110}) for name, fig in (
        ("lpips_contours", lpips_contours(means, metrics, figure_title)),
        ("fidelity_vs_editability", fidelity_vs_editability(means, metrics, figure_title)),
        ("fidelity_vs_instruction_following",
         fidelity_vs_editability(means, metrics, figure_title, INSTRUCTION_FOLLOWING))) if fig is not None]
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
