"""``attnedit-reproduce``: run a study (or read its runs) and compare it with its
published numbers (:mod:`attnedit.run.reproduce`); exit 0 only if every compared value
passes."""

from __future__ import annotations

import sys

from attnedit.cli.console import ArgumentParser, guarded
from attnedit.errors import ConfigError
from attnedit.run import reproduce as library

USAGE = "usage: attnedit-reproduce <reproduction> [<run dir> ...] [key=value ...] [--reference CSV]"


def reproduce(name: str, rest: list[str], reference: str | None) -> int:
    overrides = [a for a in rest if "=" in a]
    run_dirs = [a for a in rest if "=" not in a]
    if run_dirs and overrides:
        raise ConfigError("give run directories or run overrides, not both (overrides only change new runs)")
    table = library.reproduce(name, run_dirs, overrides, reference)
    print(library.render(table))
    counts = table.status.value_counts()
    failed = int(sum(counts.get(s, 0) for s in (library.FAIL, library.NOT_MEASURED)))
    passed = int(counts.get(library.PASS, 0))
    print(f"{name}: {passed} pass, {failed} fail, {int(counts.get(library.NO_REFERENCE, 0))} no reference"
          + ("" if passed or failed else ": nothing compared (no published values), not a reproduction"))
    return 0 if passed and not failed else 1


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("attnedit-reproduce", USAGE, library.__doc__, "give a reproduction name (experiments/<study>/reproduce/<name>.yaml)")
    parser.add_argument("reproduction")
    parser.add_argument("rest", nargs="*", metavar="run dir or key=value")
    parser.option("--reference", "a CSV file", metavar="CSV")
    args = parser.parse_intermixed_args(argv)
    sys.exit(guarded(lambda: reproduce(args.reproduction, args.rest, args.reference)))
