"""Which study a set of runs belongs to, and writing its report: the one dispatch for
the runner's tables (after every run), ``attnedit-tables`` and ``attnedit-report``.

A report kind is a pair ``(matches(runs) -> bool, build(runs) -> render.Report)``
(tables, figures, files); REPORTS are asked in order, the first that matches builds. The
DCAG study has its own (report/dcag/); every other run gets the SAD tables (sad.py for
one run, comparison.py for several), which show whatever metrics and edit keys the runs
hold, so a new study needs nothing here unless it wants other tables. Runs are loaded
once (report/runs.py) and the same objects go to every table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from attnedit.errors import ConfigError
from attnedit.report import comparison, sad
from attnedit.report.dcag import runs as dcag_runs
from attnedit.report.dcag import study as dcag_study
from attnedit.report.judged import judged_tables
from attnedit.report.render import Report, tables_of, write_report
from attnedit.report.runs import Run, load_runs
from attnedit.report.timing import Projection
from attnedit.store.run_index import comparison_folder


def sad_tables(runs: list[Run]) -> Report:
    return sad.build_run(runs[0]) if len(runs) == 1 else comparison.build_several(runs)


REPORTS = (
    (dcag_runs.matches, dcag_study.build),  # the DCAG study claims its runs
    (bool, sad_tables),  # the SAD tables take any run
)


def build(runs: list[Run]) -> Report:
    return _with_judged(next(build for matches, build in REPORTS if matches(runs))(runs), runs)


def _with_judged(report: Report, runs: list[Run]) -> Report:
    report.tables += judged_tables(runs)  # GEdit-Bench / ImgEdit aggregation of VLM-judged runs
    return report


def write_tables(run: Run | str | Path) -> dict[str, pd.DataFrame]:
    """One run's tables into <run dir>/tables (figures into <run dir>/figures); returns
    {name: table with text cells}. ``run``: a directory or an already loaded Run."""
    runs = load_runs([run])
    report = build(runs)
    write_report(report, runs[0].run_dir)
    return tables_of(report)


def write_study(run_dirs, out: str | Path | None = None, pairs: list[tuple[str, str]] = (),
                projection: Projection | None = None, wide: bool = False) -> tuple[str, Path, str]:
    """Several runs in one report: (study name, the folder, the Markdown). The DCAG study
    goes to ``out``, with a paired table per requested pair of grid points (``pairs``:
    ("dk=1,dv=1", "dk=1.1,dv=1.15"), ...); other runs get the comparison tables in ``out``.
    Without ``out``: ``<results folder>/comparisons/<hash of the runs>/``
    (store.run_index.comparison_folder), never a folder of one of the runs."""
    runs = load_runs(run_dirs)
    if out is None:
        out = comparison_folder([r.run_dir for r in runs])
    if dcag_runs.study_runs(runs):  # every run bias-delta or unedited, one at least bias-delta
        folder = Path(out)
        return "study", folder, write_report(_with_judged(dcag_study.build(runs, pairs), runs), folder, wide)
    if pairs:
        raise ConfigError("--pair compares grid points of the DCAG study (bias-delta runs); these runs are not one; "
                          "comparisons of other runs pair every run with the first (comparison_paired)")
    folder = Path(out)
    text = write_report(_with_judged(comparison.build_several(runs, projection), runs), folder, wide)
    return "comparison", folder, text


def cross_model_figure(runs: list[Run], folder: Path) -> Path | None:
    """lsun_sad's figure: the same directions for every model, when the runs hold several."""
    from attnedit.report.plots import cross_dataset_figure

    if len({(r.manifest.get("model") or {}).get("name") for r in runs}) < 2:
        return None
    return cross_dataset_figure([r.run_dir for r in runs], folder / "cross_dataset.png")


@dataclass
class Written:
    """What :func:`write_all` wrote: each run's tables folder and Markdown, then (several
    runs, ``out`` or ``pairs``) the joint report: its kind ("study" or "comparison"),
    folder, Markdown and cross-model figure."""

    runs: list[tuple[Path, str]] = field(default_factory=list)
    kind: str | None = None
    folder: Path | None = None
    text: str = ""
    figure: Path | None = None


def write_all(run_dirs, out: str | Path | None = None, pairs: list[tuple[str, str]] = (),
              projection: Projection | None = None, wide: bool = False, each_run: bool = True) -> Written:
    """``attnedit-tables``: every run's tables, then one report over all of them (the DCAG
    study or a comparison) when there are several runs, an ``out`` folder or ``pairs``;
    ``wide``: the Markdown returned has every column (render.write_report); ``each_run``
    False: the joint report only (a multirun's end: each job wrote its run's tables)."""
    runs = load_runs(run_dirs)  # each run read once, handed to its tables and the joint report
    written = Written()
    for run in runs if each_run else ():
        written.runs.append((run.run_dir / "tables", write_report(build([run]), run.run_dir, wide)))
    if len(runs) > 1 or out is not None or pairs or projection is not None:
        written.kind, written.folder, written.text = write_study(runs, out, pairs, projection, wide)
        if written.kind == "comparison":  # e.g. lsun_sad: the same directions figure for every model
            written.figure = cross_model_figure(runs, written.folder)
    return written
