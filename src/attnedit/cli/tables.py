"""attnedit-tables <run dir> [<run dir> ...] [--out DIR] [--pair A B ...]

Writes each run's tables (Markdown, CSV, LaTeX) and prints their Markdown. Several runs
(or --out) also get one comparison table (a row per method) and the editing-time table,
in DIR (default: the first run's tables/). --pair (DCAG study): grid point B against A,
paired on images, e.g. --pair dk=1,dv=1 dk=1.1,dv=1.15.
"""

from __future__ import annotations

from attnedit.cli.console import ArgumentParser, guarded

USAGE = "usage: attnedit-tables <run dir> [<run dir> ...] [--out DIR] [--pair <point A> <point B>]"


def parser() -> ArgumentParser:
    parser = ArgumentParser("attnedit-tables", USAGE, __doc__, "give at least one run directory")
    parser.add_argument("run_dirs", nargs="+", metavar="run dir")
    parser.option("--out", "a folder", metavar="DIR")
    parser.option("--pair", "two grid points, e.g. --pair dk=1,dv=1 dk=1.1,dv=1.15", nargs=2, action="append",
                  default=[], metavar=("A", "B"))
    return parser


def tables(run_dirs: list[str], out: str | None, pairs: list[tuple[str, str]]) -> None:
    from attnedit.report.studies import write_all

    written = write_all(run_dirs, out, [tuple(p) for p in pairs])
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
    guarded(lambda: tables(args.run_dirs, args.out, args.pair))
