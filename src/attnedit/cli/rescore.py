"""``attnedit-rescore``: compute or recompute metric columns of a run from its saved
images (:mod:`attnedit.run.rescore`), then rewrite its tables."""

from __future__ import annotations

from pathlib import Path

from attnedit.cli.console import ArgumentParser, guarded
from attnedit.run import rescore as library


def rescore(run_dir: str, overrides: list[str]) -> None:
    from attnedit.report.studies import write_tables

    entry = library.rescore(run_dir, overrides)
    write_tables(run_dir)
    print(f"rescored {entry['rows']} rows: {', '.join(entry['columns'])} ({entry['seconds']:.1f} s)")
    print(f"tables: {(Path(run_dir) / 'tables').resolve()}")
    print(f"run dir: {Path(run_dir).resolve()}")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("attnedit-rescore", library.USAGE, library.__doc__, "give a run directory")
    parser.add_argument("run_dir", metavar="run dir")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    guarded(lambda: rescore(args.run_dir, args.overrides))
