"""``attnedit-reproduce <study> [<run dir> ...] [key=value ...] [--reference CSV]``.

Runs a study (or reads its existing runs) and compares it with the study's reference CSV
(``experiments/<study>/reference/``): per reference row and metric, the measured mean beside the
published value, their difference, the tolerance and pass / FAIL. Exit status 0 only if
every compared value passes (and at least one is compared); 1 if any fails (or a
published row matches no measured case) or nothing is compared; 2 on bad input.

A reproduction is ``experiments/<study>/reproduce/<name>.yaml``: ``reference`` (the CSV), ``runs`` (one list
of attnedit-run overrides per run; extra ``key=value`` arguments are added to each),
optionally ``cases: table2`` (the SAD paper's Table 2 cases, tables.table2_cases, at
the run's ``tables.table2_alpha``) and ``fill`` (values of key columns a run lacks, e.g.
the unedited run's dk = dv = 1).

The reference CSV (experiments/README.md): key columns (``method`` and any edit
parameter, e.g. ``alpha``, ``dk``), one column per metric named like the run's metric
column, ``<metric>_atol`` and/or ``<metric>_rtol`` (the tolerance), and ``source`` (where
each row comes from). A row's measured value is the mean over the finite values of the
successful cases whose key columns equal the row's (methods compared case-insensitively),
as the tables average. Pass means |measured - published| <= atol + rtol x |published|,
numpy.isclose's rule. An empty published cell is "no reference": shown, neither passing
nor failing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from attnedit.columns import successful
from attnedit.config import compose, reproductions
from attnedit.errors import ConfigError, DataError
from attnedit.report.reference import read_reference
from attnedit.report.sad import table2_cases
from attnedit.store.run_store import RunStore

PASS, FAIL, NO_REFERENCE, NOT_MEASURED = "pass", "FAIL", "no reference", "FAIL (not measured)"
TOLERANCES = ("_atol", "_rtol")


@dataclass
class Study:
    name: str
    reference: Path
    runs: list[list[str]]
    cases: str | None
    fill: dict


def load_study(name: str) -> Study:
    from omegaconf import OmegaConf

    known = reproductions()
    if name not in known:
        raise ConfigError(f"no reproduction '{name}' (no experiments/<study>/reproduce/{name}.yaml); "
                          f"reproductions: {', '.join(sorted(known))}")
    path = known[name]
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not spec.get("reference") or not spec.get("runs"):
        raise ConfigError(f"{path} needs 'reference' (a CSV) and 'runs' (lists of attnedit-run overrides)")
    if spec.get("cases") not in (None, "table2"):
        raise ConfigError(f"{path}: cases={spec['cases']!r} is not one of null, table2")
    return Study(name, Path(spec["reference"]), [list(r) for r in spec["runs"]], spec.get("cases"),
                 dict(spec.get("fill") or {}))


def run_study(study: Study, overrides: list[str]) -> list[Path]:
    """Each of the study's runs through the runner (a finished run resumes: nothing is redone)."""
    from attnedit.run.runner import Runner

    return [Runner(compose("config", [*run, *overrides])).run() for run in study.runs]


def measured_cases(run_dirs: list[Path], study: Study) -> tuple[pd.DataFrame, list[str]]:
    """The successful cases of the runs (Table 2's cases when the study says so) and their metrics."""

    frames, metrics = [], []
    for run_dir in run_dirs:
        store = RunStore.open(run_dir)
        frame, manifest = store.read(), store.read_json("manifest.json")
        if frame.empty:
            raise DataError(f"run {run_dir} holds no cases yet; run it first (attnedit-run)")
        frame = successful(frame)  # failed cases (no metrics) are not part of any mean
        if study.cases == "table2":
            abs_alpha = (manifest["config"].get("tables") or {}).get("table2_alpha")
            if abs_alpha is None:
                raise ConfigError(f"study {study.name} compares Table 2's cases but run {run_dir} has no "
                                  "tables.table2_alpha; rerun with tables.table2_alpha=<|alpha|>")
            frame = table2_cases(frame, float(abs_alpha), str(run_dir))
        metrics += [m for m in manifest.get("metric_order", manifest.get("metrics", {})) if m not in metrics]
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    for key, value in study.fill.items():
        frame[key] = frame[key].fillna(value) if key in frame else value
    return frame, metrics


def _matches(frame: pd.DataFrame, key: str, value) -> pd.Series:
    if key not in frame:
        raise DataError(f"the reference's key column '{key}' is not a column of the runs' cases; "
                        "remove it from the CSV or give the study a 'fill' value for it")
    if isinstance(value, str):
        return frame[key].astype(str).str.lower() == value.lower()
    return pd.Series(np.isclose(pd.to_numeric(frame[key], errors="coerce"), float(value), rtol=0, atol=1e-9),
                     index=frame.index)


def compare(frame: pd.DataFrame, metrics: list[str], reference: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One row per (reference row, metric column of the CSV)."""
    tolerance_columns = {c for c in reference.columns if c.endswith(TOLERANCES)}
    compared = [c for c in reference.columns if c in metrics]
    keys = [c for c in reference.columns if c not in compared and c not in tolerance_columns and c != "source"]
    unknown = sorted({c[: -len(t)] for c in tolerance_columns for t in TOLERANCES if c.endswith(t)} - set(compared))
    if unknown:
        raise DataError(f"{path} states tolerances for {unknown}, which the runs do not measure "
                        f"(their metrics: {metrics})")
    out = []
    for _, ref in reference.iterrows():
        mask = pd.Series(True, index=frame.index)
        for key in keys:
            if not pd.isna(ref[key]):
                mask &= _matches(frame, key, ref[key])
        cases = frame[mask]
        label = ", ".join(f"{k}={ref[k]:g}" if isinstance(ref[k], float) else f"{k}={ref[k]}"
                          for k in keys if not pd.isna(ref[k]))
        for metric in compared:
            values = cases[metric].astype(float) if metric in cases else pd.Series(dtype=float)
            finite = values[np.isfinite(values)]
            measured = float(finite.mean()) if len(finite) else math.nan
            published = ref[metric]
            atol, rtol = (ref.get(f"{metric}{t}", math.nan) for t in TOLERANCES)
            row = {"row": label, "metric": metric, "measured": measured, "n": len(finite), "published": published,
                   "difference": measured - published if not pd.isna(published) else math.nan,
                   "tolerance": _tolerance_text(atol, rtol), "status": NO_REFERENCE, "source": ref["source"]}
            if not pd.isna(published):
                if pd.isna(atol) and pd.isna(rtol):
                    raise DataError(f"{path}: row '{label}' publishes {metric}={published} but states no "
                                    f"tolerance; fill {metric}_atol or {metric}_rtol")
                allowed = (0.0 if pd.isna(atol) else float(atol)) + (0.0 if pd.isna(rtol) else float(rtol)) * abs(
                    float(published))
                if not len(finite):
                    row["status"] = NOT_MEASURED
                else:
                    row["status"] = PASS if abs(measured - float(published)) <= allowed else FAIL
            out.append(row)
    return pd.DataFrame(out)


def _tolerance_text(atol, rtol) -> str:
    parts = ([] if pd.isna(atol) else [f"±{float(atol):g}"]) + ([] if pd.isna(rtol) else [f"±{float(rtol):.3g} rel"])
    return " + ".join(parts)


def render(table: pd.DataFrame) -> str:
    shown = table.assign(**{c: table[c].map(lambda v: "" if pd.isna(v) else f"{v:.6g}")
                            for c in ("measured", "published", "difference")})
    return shown.to_markdown(index=False)


def reproduce(name: str, run_dirs: list[str], overrides: list[str], reference: str | None = None) -> pd.DataFrame:
    study = load_study(name)
    path = Path(reference) if reference else study.reference
    table = read_reference(path)  # read first: a bad CSV fails before hours of generation
    dirs = [Path(d) for d in run_dirs] if run_dirs else run_study(study, overrides)
    frame, metrics = measured_cases(dirs, study)
    return compare(frame, metrics, table, path)
