"""Which study a set of runs belongs to, and writing its report: the one dispatch for
``attnedit.tables.write_tables`` (the runner, after every run) and ``attnedit-tables``.

A study is a module with ``matches(runs) -> bool`` and ``build(runs) -> render.Report``
(tables, figures, files); STUDIES are asked in order, the first that matches builds. A
new study joins by adding its module here. Runs are loaded once (report/runs.py) and the
same objects go to every table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnedit.errors import ConfigError
from attnedit.report import dcag, sad
from attnedit.report.render import Report, tables_of, write_report
from attnedit.report.runs import Run, load_runs

STUDIES = (dcag, sad)  # the DCAG study claims its runs; SAD's tables take any run


def pick(runs: list[Run]):
    return next(study for study in STUDIES if study.matches(runs))


def write_tables(run: Run | str | Path) -> dict[str, pd.DataFrame]:
    """One run's tables into <run dir>/tables (figures into <run dir>/figures); returns
    {name: table with text cells}. ``run``: a directory or an already loaded Run."""
    runs = load_runs([run])
    report: Report = pick(runs).build(runs)
    write_report(report, runs[0].run_dir)
    return tables_of(report)


def write_study(run_dirs, out: str | Path | None = None, pairs: list[tuple[str, str]] = ()) -> tuple[str, Path, str]:
    """Several runs in one report: (study name, the folder, the Markdown). The DCAG study
    goes to ``out`` (default <first run>/study), with a paired table per requested pair of
    grid points (``pairs``: ("dk=1,dv=1", "dk=1.1,dv=1.15"), ...); other runs get the
    comparison tables in ``out`` (default: the first run's tables/)."""
    runs = load_runs(run_dirs)
    if dcag.study_runs(runs):  # every run bias-delta or unedited, one at least bias-delta
        folder = Path(out) if out is not None else runs[0].run_dir / "study"
        return "study", folder, write_report(dcag.build(runs, pairs), folder)
    if pairs:
        raise ConfigError("--pair compares grid points of the DCAG study (bias-delta runs); these runs are not one; "
                          "comparisons of other runs pair every run with the first (comparison_paired)")
    folder = Path(out) if out is not None else runs[0].run_dir / "tables"
    text = write_report(sad.build_several(runs), folder)
    return "comparison", folder, text


def cross_model_figure(runs: list[Run], folder: Path) -> Path | None:
    """lsun_sad's figure: the same directions for every model, when the runs hold several."""
    from attnedit.report.plots import cross_dataset_figure

    if len({(r.manifest.get("model") or {}).get("name") for r in runs}) < 2:
        return None
    return cross_dataset_figure([r.run_dir for r in runs], folder / "cross_dataset.png")
