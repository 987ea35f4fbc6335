"""The editing-time table: what each method costs, from the rows and manifests of runs.

Per run (one method): direction discovery once per model (the manifest's
``discovery_compute_seconds``, else ``discovery_seconds``: what the computation took even
when this run read it from the cache), discovery per sample (pullback: the mean over
samples of ``discovery_seconds_per_sample``), time per edit (the mean over cases of
``seconds_per_case`` minus the part of it spent on per-sample discovery,
``discovery_share_seconds``), and the projected total of a study:

    total = once + samples * per_sample + cases * per_edit

The SAD paper's study is 15 directions x 100 samples = 1500 cases. Times depend on the
machine and the batch size, so the table states the device and host of every run and
marks runs that were not measured on the same one. Unedited reference samples cost the
same for every method and are not counted.

Machine load turns into method differences (random directions once measured 1.67x SAD
with the same injection code), so beside the mean the table gives the median time per
edit with its interquartile range (``edit_median_s``, ``edit_q25_s``, ``edit_q75_s``,
``edit_iqr_s``) and the load average the run's sessions recorded (manifest
``cost.sessions[].load_average``: 1-, 5-, 15-minute ``os.getloadavg()`` at the session's
end), and the title states device and load. For method-vs-method timings measure them
side by side in interleaved rounds: benchmarks/bench_editing_time.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from attnedit.columns import METHOD, SECONDS_PER_CASE
from attnedit.report.runs import Run, load_runs

STUDY_SAMPLES = 100
STUDY_CASES = 1500
MIXED_MACHINES_MARK = "[RUNS FROM DIFFERENT MACHINES: times are not comparable]"


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _load(manifest: dict) -> str:
    """The sessions' load averages: "1.2/0.9/0.8" each, "?" where a session did not record one."""
    sessions = ((manifest.get("cost") or {}).get("sessions")) or []
    loads = ["/".join(f"{v:.1f}" for v in s["load_average"]) if s.get("load_average") else "?" for s in sessions]
    return "; ".join(loads) if loads else "?"


def run_timing(run: Run | str | Path) -> dict:
    """One row of the timing table for one run (a directory is loaded)."""
    run = load_runs([run])[0]
    frame, manifest = run.frame, run.manifest
    method = manifest.get("method") or {}
    once = method.get("discovery_compute_seconds")
    once = _number(method.get("discovery_seconds") if once is None else once)
    per_sample = 0.0
    if "discovery_seconds_per_sample" in frame:
        per_sample = _number(frame.groupby("sample_id").discovery_seconds_per_sample.first().mean())
    share = frame["discovery_share_seconds"].fillna(0.0) if "discovery_share_seconds" in frame else 0.0
    per_edit = (frame[SECONDS_PER_CASE] - share) if SECONDS_PER_CASE in frame else pd.Series(dtype=float)
    timed = per_edit.dropna().astype(float)
    q25, median, q75 = (_number(timed.quantile(q)) if len(timed) else 0.0 for q in (0.25, 0.5, 0.75))
    return {
        "method": str(frame[METHOD].iloc[0]) if METHOD in frame and len(frame) else str(method.get("name", "?")),
        "discovery": "per sample" if per_sample > 0 else ("once per model" if once > 0 else "none"),
        "discovery_once_s": once,
        "discovery_per_sample_s": per_sample,
        "edit_s": _number(per_edit.mean()),
        "edit_std_s": _number(per_edit.std(ddof=0)),
        "edit_median_s": median,
        "edit_q25_s": q25,
        "edit_q75_s": q75,
        "edit_iqr_s": q75 - q25,
        "n": len(frame),
        "batch_size": int(frame.batch_size.mode().iloc[0]) if "batch_size" in frame and len(frame) else None,
        "device": str((manifest.get("model") or {}).get("device", "?")),
        "host": str((manifest.get("host") or {}).get("hostname", "?")),
        "load_average": _load(manifest),
    }


def timing_table(runs, study_samples: int = STUDY_SAMPLES, study_cases: int = STUDY_CASES) -> pd.DataFrame:
    """One row per run (Run objects or directories); ``total_s`` projects a study of ``study_cases`` cases over
    ``study_samples`` samples; ``total_vs_sad`` divides by the SAD run's total, if any."""
    rows = []
    for run in load_runs(runs):
        row = run_timing(run)
        row["total_s"] = row["discovery_once_s"] + study_samples * row["discovery_per_sample_s"] + study_cases * row["edit_s"]
        row["total_hms"] = _hms(row["total_s"])
        rows.append(row)
    table = pd.DataFrame(rows)
    sad = table[table.method == "sad"]
    if len(sad) == 1 and float(sad.total_s.iloc[0]) > 0:
        table["total_vs_sad"] = (table.total_s / float(sad.total_s.iloc[0])).round(3)
    order = ["method", "discovery", "discovery_once_s", "discovery_per_sample_s", "edit_s", "edit_std_s", "n",
             "batch_size", "total_s", "total_hms", "total_vs_sad", "device", "host", "edit_median_s", "edit_q25_s",
             "edit_q75_s", "edit_iqr_s", "load_average"]
    return table[[c for c in order if c in table]]


def timing_title(table: pd.DataFrame, study_samples: int = STUDY_SAMPLES, study_cases: int = STUDY_CASES) -> str:
    machines = sorted(set(zip(table.device, table.host)))
    where = "; ".join(f"{device} on {host}" for device, host in machines)
    loads = "; ".join(f"{m}: {load}" for m, load in zip(table.method, table.load_average)) if "load_average" in table else "?"
    text = (f"editing time, measured on {where}; total = {study_cases} cases over {study_samples} samples; "
            f"per edit: mean ± std and median with IQR (q25..q75); load average (1/5/15 min) per session: {loads}")
    return f"{text} {MIXED_MACHINES_MARK}" if len(machines) > 1 else text


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
