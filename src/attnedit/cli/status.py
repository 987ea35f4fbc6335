"""``attnedit-status``: how far runs are (:mod:`attnedit.run.progress`); without a run
directory, every run under the results folder."""

from __future__ import annotations

from attnedit.cli.console import ArgumentParser, guarded
from attnedit.run import progress
from attnedit.store.run_index import runs_dir_of
from attnedit.store.run_store import RunStore

USAGE = "usage: attnedit-status [<run dir> ...] [--shards N] [--root DIR]"


def status(run_dirs: list[str], shards: int | None, root: str | None = None) -> None:
    if not run_dirs:
        print(progress.render_listing(runs_dir_of(root)))
        return
    for run_dir in run_dirs:
        RunStore.open(run_dir)
        print(progress.render(run_dir, shards))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("attnedit-status", USAGE, progress.__doc__, "give a run directory")
    parser.add_argument("run_dirs", nargs="*", metavar="run dir")
    parser.option("--shards", "a number", type=int, metavar="N")
    parser.option("--root", "a folder", metavar="DIR",
                  help="the results folder to list (default: the runner's, ./results or $ATTNEDIT_ROOT/results)")
    args = parser.parse_intermixed_args(argv)
    guarded(lambda: status(args.run_dirs, args.shards, args.root))
