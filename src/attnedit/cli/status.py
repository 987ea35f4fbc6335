"""``attnedit-status``: how far runs are (:mod:`attnedit.run.progress`)."""

from __future__ import annotations

from attnedit.cli.console import ArgumentParser, guarded
from attnedit.run import progress
from attnedit.store.run_store import RunStore

USAGE = "usage: attnedit-status <run dir> [--shards N]"


def status(run_dirs: list[str], shards: int | None) -> None:
    for run_dir in run_dirs:
        RunStore.open(run_dir)
        print(progress.render(run_dir, shards))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("attnedit-status", USAGE, progress.__doc__, "give a run directory")
    parser.add_argument("run_dirs", nargs="+", metavar="run dir")
    parser.option("--shards", "a number", type=int, metavar="N")
    args = parser.parse_intermixed_args(argv)
    guarded(lambda: status(args.run_dirs, args.shards))
