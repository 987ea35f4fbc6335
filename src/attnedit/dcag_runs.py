"""Which runs belong to the DCAG study: bias-delta (GRAG / DCAG) runs, recognised by their
``dk`` / ``dv`` columns, and unedited runs beside them. Kept apart from dcag_report.py
so that every table writer can ask cheaply, without loading the study's dependencies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attnedit.reference import read_reference
from attnedit.store import RunStore


def is_bias_delta(frame: pd.DataFrame) -> bool:
    return "dk" in frame and "dv" in frame


def is_unedited(manifest: dict) -> bool:
    return str(((manifest.get("config") or {}).get("method") or {}).get("_target_", "")).endswith(".NoEdit")


def is_study_run(run_dir: str | Path, frame: pd.DataFrame | None = None) -> bool:
    """A bias-delta run, or an unedited run whose published reference holds (dk, dv) points."""
    store = RunStore(run_dir)
    if is_bias_delta(store.read() if frame is None else frame):
        return True
    manifest = store.read_json("manifest.json")
    reference = (manifest["config"].get("tables") or {}).get("reference")
    return is_unedited(manifest) and bool(reference) and {"dk", "dv"} <= set(read_reference(reference).columns)


def study_runs(run_dirs) -> bool:
    """True when every run is a bias-delta or an unedited run and at least one is bias-delta."""
    kinds = []
    for run_dir in map(Path, run_dirs):
        store = RunStore(run_dir)
        if is_bias_delta(store.read()):
            kinds.append("bias_delta")
        else:
            kinds.append("none" if is_unedited(store.read_json("manifest.json")) else "other")
    return "bias_delta" in kinds and "other" not in kinds
