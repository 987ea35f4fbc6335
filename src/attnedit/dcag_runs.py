"""Old import path: which runs belong to the DCAG study (attnedit.report.dcag), for run directories."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnedit.report import dcag
from attnedit.report.dcag import is_bias_delta, is_unedited
from attnedit.report.runs import Run, load_runs
from attnedit.store import RunStore

__all__ = ["is_bias_delta", "is_study_run", "is_unedited", "study_runs"]


def is_study_run(run_dir: str | Path, frame: pd.DataFrame | None = None) -> bool:
    store = RunStore(run_dir)
    run = Run(Path(run_dir), store.read() if frame is None else frame, store.read_json("manifest.json"))
    return dcag.is_study_run(run)


def study_runs(run_dirs) -> bool:
    return dcag.study_runs(load_runs(run_dirs))
