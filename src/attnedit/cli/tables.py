"""attnedit-tables <run dir> [<run dir> ...] [--out DIR] [--pair A B ...]

Writes each run's tables (Markdown, CSV, LaTeX) and prints their Markdown. Several runs
(or --out) also get one comparison table (a row per method) and the editing-time table,
in DIR (default: <results folder>/comparisons/<hash of the runs>/, printed). A run dir
may also be a multirun's sweep folder (its jobs' runs) or a folder of runs; folders of
runs that never started (no manifest.json) are skipped, one line each on stderr.
--pair (DCAG study): grid point B against A, paired on images, e.g. --pair dk=1,dv=1
dk=1.1,dv=1.15. --project: the editing-time table also projects each run's measured
times to another study (labelled as a projection), e.g. --project celebahq_sad or
--project cases=1500,samples=100. The Markdown printed (and written) is compact,
"mean [95% CI]" per metric and the notes once; --wide prints every column (std, CI,
n_nan, n_failed) with the notes in each heading; the CSV files always hold every number.
"""

from __future__ import annotations

from attnedit.cli.console import ArgumentParser, guarded

USAGE = ("usage: attnedit-tables <run dir> [<run dir> ...] [--out DIR] [--pair <point A> <point B>] [--project STUDY] "
         "[--wide]")


def parser() -> ArgumentParser:
    parser = ArgumentParser("attnedit-tables", USAGE, __doc__, "give at least one run directory")
    parser.add_argument("run_dirs", nargs="+", metavar="run dir")
    parser.option("--out", "a folder", metavar="DIR")
    # the help names report/timing.PROJECTIONS; importing it here would load pandas for --help
    parser.option("--project", "another study to project the editing time to: celebahq_sad (the SAD paper's, "
                  "1500 cases over 100 samples) or cases=N,samples=M", metavar="STUDY")
    parser.add_argument("--wide", action="store_true", help="print every column (std, CI, counts), not the compact "
                        "tables")
    parser.option("--pair", "two grid points, e.g. --pair dk=1,dv=1 dk=1.1,dv=1.15", nargs=2, action="append",
                  default=[], metavar=("A", "B"))
    return parser


def tables(run_dirs: list[str], out: str | None, pairs: list[tuple[str, str]], project: str | None = None,
           wide: bool = False) -> None:
    from attnedit.report.studies import write_all
    from attnedit.store.run_index import run_dirs_from

    from attnedit.report.timing import parse_projection

    projection = None if project is None else parse_projection(project)
    written = write_all(run_dirs_from(run_dirs), out, [tuple(p) for p in pairs], projection, wide)
    for folder, text in written.runs:
        print(text)
        print(f"tables: {folder.resolve()}")
    if written.kind is not None:
        print(written.text)
        print(f"{written.kind}: {written.folder.resolve()}")
    if written.figure is not None:
        print(f"figure: {written.figure.resolve()}")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_intermixed_args(argv)
    guarded(lambda: tables(args.run_dirs, args.out, args.pair, args.project, args.wide))
