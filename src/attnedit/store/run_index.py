"""Finding runs: the run directories under a results folder, the runs that command-line
arguments name, and the folder a comparison of several runs goes to.

A run directory is ``<paths.runs_dir>/<name>/<signature>/``; attnedit-run writes its
``manifest.json`` before the first case, so a folder without one is a run that never
started (a config error, a crash while loading the model). An argument may be a run
directory, a multirun's sweep folder (``hydra.sweep.dir``: ``multirun.yaml`` and a
folder per job, each naming its run directory in ``run_dir.txt`` once the job's run
ended; attnedit.cli.run writes it), or a folder of runs (``results/runs/quickstart``);
a shell glob (``results/runs/quickstart/*``) gives run directories one by one. Folders
of runs that never started are skipped with one line each on stderr.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from attnedit.errors import DataError
from attnedit.store.overrides import parse_overrides

MANIFEST = "manifest.json"
SWEEP_FILE = "multirun.yaml"  # Hydra writes it in every sweep folder
RUN_DIR_FILE = "run_dir.txt"  # a multirun job's run directory, in the job's output folder
NEVER_STARTED = "a run that never started (no manifest.json)"


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def default_runs_dir() -> Path:
    """Where attnedit-run puts run directories: ``paths.runs_dir`` of conf/paths/default.yaml
    resolved as the runner resolves it (``$ATTNEDIT_ROOT``, else the current folder)."""
    from attnedit.config import conf_dir

    paths = OmegaConf.create({"paths": OmegaConf.load(conf_dir() / "paths" / "default.yaml")})
    return Path(str(paths.paths.runs_dir))


def runs_dir_of(root: str | Path | None) -> Path:
    """The folder holding ``<name>/<signature>/``: ``root`` itself or its ``runs/`` (a
    results folder); the runner's default when None."""
    if root is None:
        return default_runs_dir()
    root = Path(root)
    return root / "runs" if (root / "runs").is_dir() and not _holds_runs(root) else root


def _holds_runs(folder: Path) -> bool:
    return any(is_run_dir(p) for p in folder.glob("*/*"))


def listed_run_dirs(runs_dir: Path) -> list[Path]:
    """``<runs_dir>/<name>/<signature>`` folders, started or not, by name then signature."""
    if not runs_dir.is_dir():
        raise DataError(f"no runs under {runs_dir.resolve()} (no such folder); give --root <results folder>, "
                        "or run from the folder attnedit-run ran in")
    return sorted(p for p in runs_dir.glob("*/*") if p.is_dir())


@dataclass
class Job:
    """One job of a multirun: its output folder, the run directory it recorded (None
    while it has not finished) and its overrides as typed."""

    name: str
    folder: Path
    run_dir: Path | None
    overrides: dict[str, str] = field(default_factory=dict)


def sweep_jobs(sweep: str | Path) -> list[Job]:
    """The jobs of a sweep folder, in job order (Hydra's ``hydra.job.num`` subfolders)."""
    folders = [p for p in Path(sweep).iterdir() if (p / ".hydra").is_dir() or (p / RUN_DIR_FILE).is_file()]
    jobs = []
    for folder in sorted(folders, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        recorded = folder / RUN_DIR_FILE
        run_dir = Path(recorded.read_text().strip()) if recorded.is_file() else None
        typed = folder / ".hydra" / "overrides.yaml"
        lines = yaml.safe_load(typed.read_text()) if typed.is_file() else None
        jobs.append(Job(folder.name, folder, run_dir, parse_overrides(lines or [])))
    return jobs


@dataclass
class Found:
    """Run directories named by the arguments (each once, in order) and the lines saying
    what was skipped."""

    run_dirs: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, run_dir: Path) -> None:
        if all(run_dir.resolve() != d.resolve() for d in self.run_dirs):  # shards of one run
            self.run_dirs.append(run_dir)


def find_runs(arguments: list[str | Path]) -> Found:
    """Run directories from run directories, sweep folders and folders of runs; a missing
    path is an error, a folder without a run is skipped (see the module doc)."""
    found = Found()
    for argument in map(Path, arguments):
        if is_run_dir(argument):
            found.add(argument)
        elif not argument.exists():
            raise DataError(f"{argument} is not a run directory (no such folder); give the paths printed as "
                            "'run dir:' by attnedit-run, or a multirun's sweep folder")
        elif (argument / SWEEP_FILE).is_file():
            for job in sweep_jobs(argument):
                if job.run_dir is not None and is_run_dir(job.run_dir):
                    found.add(job.run_dir)
                elif job.run_dir is not None:
                    found.skipped.append(f"{job.run_dir} (job {job.folder}): {NEVER_STARTED}")
                else:
                    found.skipped.append(f"job {job.folder}: no {RUN_DIR_FILE}, its run did not finish "
                                         "(its log is in that folder)")
        elif argument.is_dir() and any(is_run_dir(p) for p in argument.iterdir()):
            for child in sorted(p for p in argument.iterdir() if p.is_dir()):
                if is_run_dir(child):
                    found.add(child)
                else:
                    found.skipped.append(f"{child}: {NEVER_STARTED}")
        else:
            found.skipped.append(f"{argument}: {NEVER_STARTED}" if argument.is_dir()
                                 else f"{argument}: not a run directory (a file)")
    return found


def run_dirs_from(arguments: list[str | Path]) -> list[Path]:
    """:func:`find_runs` for a command: each skipped folder named on stderr (one line
    each), an error when no run is left (the one argument's own error when there is one)."""
    found = find_runs(arguments)
    one_folder = len(arguments) == 1 and not (Path(arguments[0]) / SWEEP_FILE).exists()
    if not found.run_dirs and one_folder and len(found.skipped) == 1:
        raise DataError(f"{arguments[0]} is not a run directory (no manifest.json); "
                        "give the path printed as 'run dir:' by attnedit-run, or a multirun's sweep folder")
    for line in found.skipped:
        print(f"attnedit: skipped {line}", file=sys.stderr)
    if not found.run_dirs:
        where = arguments[0] if len(arguments) == 1 else f"the {len(arguments)} folders given"
        raise DataError(f"no run that started in {where} (no manifest.json); "
                        "give the paths printed as 'run dir:' by attnedit-run")
    return found.run_dirs


def comparison_folder(run_dirs) -> Path:
    """Where a comparison of these runs goes when no folder is given: ``<results
    folder>/comparisons/<hash of the sorted run directories>/``, beside ``runs/`` (the
    same runs, in any order, always get the same folder; never inside one of the runs)."""
    resolved = sorted(str(Path(d).resolve()) for d in run_dirs)
    digest = hashlib.sha256("\n".join(resolved).encode()).hexdigest()[:10]
    runs_folders = {Path(d).parent.parent for d in resolved}
    if len(runs_folders) == 1 and next(iter(runs_folders)).name == "runs":
        return next(iter(runs_folders)).parent / "comparisons" / digest
    # runs copied or moved elsewhere: beside them, in the folder that holds them all
    return Path(os.path.commonpath([str(Path(d).parent) for d in resolved])) / "comparisons" / digest
