"""Which runs belong to the DCAG study, and their cases as one frame."""

from __future__ import annotations

import pandas as pd

from attnedit.errors import DataError
from attnedit.methods.bias_delta.params import STOCK
from attnedit.report.dcag.points import GRID_KEYS, guidance_label
from attnedit.report.reference import read_reference
from attnedit.report.runs import Run, load_runs, run_labels


def load_study(run_dirs) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """All cases with filled grid keys, a ``run`` label (runs sharing a method are named by
    the config keys in which they differ), a ``guidance`` label and, for unedited runs,
    ``guidance_arithmetic`` "stock"; the metric columns
    (manifest order, first run first); the manifests."""
    runs = load_runs(run_dirs)
    frames, metrics = [], []
    for run in runs:
        if run.frame.empty:
            raise DataError(f"run {run.run_dir} holds no cases yet; run attnedit-run first or drop it from the list")
        metrics += [m for m in run.metrics if m not in metrics]
        frame = run.frame.assign(run_dir=str(run.run_dir))
        if is_unedited(run.manifest):  # the stock processor: titles say it is not the official (1, 1) row
            frame = frame.assign(guidance_arithmetic=STOCK)
        frames.append(frame)
    for frame, label in zip(frames, run_labels(runs)):
        frame["run"] = label
    frame = pd.concat(frames, ignore_index=True)
    for key in GRID_KEYS:  # unedited runs have no scales: they are the identity point
        frame[key] = frame[key].astype(float).fillna(1.0).round(4) if key in frame else 1.0
    frame["guidance"] = [guidance_label(*values) for values in frame[list(GRID_KEYS)].itertuples(index=False)]
    return frame, metrics, [r.manifest for r in runs]


def is_bias_delta(frame: pd.DataFrame) -> bool:
    return "dk" in frame and "dv" in frame


def is_unedited(manifest: dict) -> bool:
    return str(((manifest.get("config") or {}).get("method") or {}).get("_target_", "")).endswith(".NoEdit")


def is_study_run(run: Run) -> bool:
    """A bias-delta run, or an unedited run whose published reference holds (dk, dv) points."""
    if is_bias_delta(run.frame):
        return True
    reference = (run.config.get("tables") or {}).get("reference")
    return is_unedited(run.manifest) and bool(reference) and {"dk", "dv"} <= set(read_reference(reference).columns)


def study_runs(runs: list[Run]) -> bool:
    """True when every run is a bias-delta or an unedited run and at least one is bias-delta."""
    kinds = ["bias_delta" if is_bias_delta(r.frame) else "none" if is_unedited(r.manifest) else "other" for r in runs]
    return "bias_delta" in kinds and "other" not in kinds


def matches(runs: list[Run]) -> bool:
    """One study run (bias-delta, or unedited with a (dk, dv) reference), or several runs of the study."""
    return is_study_run(runs[0]) if len(runs) == 1 else study_runs(runs)
