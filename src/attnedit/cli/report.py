"""``attnedit-report``: a static HTML report of runs (:mod:`attnedit.report.html`)."""

from __future__ import annotations

from attnedit.cli.console import ArgumentParser, guarded
from attnedit.report import html


def report(run_dirs: list[str], out: str | None) -> None:
    from attnedit.store.run_index import run_dirs_from  # a sweep folder, a glob with runs that never started

    print(f"report: {html.write_html_report(run_dirs_from(run_dirs), out).resolve()}")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("attnedit-report", html.USAGE, html.__doc__, "give at least one run directory")
    parser.add_argument("run_dirs", nargs="+", metavar="run dir")
    parser.option("--out", "a folder", metavar="DIR")
    args = parser.parse_intermixed_args(argv)
    guarded(lambda: report(args.run_dirs, args.out))
