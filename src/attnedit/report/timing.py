"""The editing-time table: what each run took, from its rows and manifest.

Measured, per run (one method): the run's own wall time (``run_s``: the manifest's
``cost.wall_seconds``, summed over the sessions that computed its cases, from the store's
opening to the last case; model loading and direction discovery before it are not in it)
and its case count, then the time per edit (the mean over cases of ``seconds_per_case``
minus the part spent on per-sample discovery, ``discovery_share_seconds``) with its
median and interquartile range, direction discovery once per model (``discovery_compute_seconds``,
else ``discovery_seconds``: what the computation took even when this run read it from the
cache) and per sample (pullback: the mean over samples of ``discovery_seconds_per_sample``).
Times depend on the machine and the batch size: the table states the device and host of
every run and marks runs that were not measured on the same one. Unedited reference
samples cost the same for every method and are not counted in the per-edit time.

Machine load turns into method differences (random directions once measured 1.67x SAD with
the same injection code), so the title gives the load average the run's sessions recorded
(manifest ``cost.sessions[].load_average``, ``os.getloadavg()`` at each session's end). For
method-vs-method timings measure them side by side in interleaved rounds:
benchmarks/bench_editing_time.py.

Projected, only when asked (``attnedit-tables --project``): another study's total from this
run's per-edit and discovery times,

    projected = once + samples * per_sample + cases * per_edit

in columns ``projected_*`` and a title that says it is a projection and names its inputs.
The SAD paper's CelebA-HQ study is 15 directions x 100 samples = 1500 cases.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnedit.columns import METHOD, SECONDS_PER_CASE
from attnedit.errors import ConfigError
from attnedit.report.runs import Run, load_runs

MIXED_MACHINES_MARK = "[RUNS FROM DIFFERENT MACHINES: times are not comparable]"


@dataclass(frozen=True)
class Projection:
    """A study to project the measured times to: ``cases`` edits over ``samples`` samples."""
    cases: int
    samples: int
    name: str = ""

    @property
    def text(self) -> str:
        what = f"{self.name}: " if self.name else ""
        return f"{what}{self.cases} cases over {self.samples} samples"


PROJECTIONS = {"celebahq_sad": Projection(1500, 100, "the SAD paper's CelebA-HQ study")}


def parse_projection(text: str) -> Projection:
    """``celebahq_sad`` or ``cases=1500,samples=100``."""
    if text in PROJECTIONS:
        return PROJECTIONS[text]
    match = re.fullmatch(r"\s*cases\s*=\s*(\d+)\s*,\s*samples\s*=\s*(\d+)\s*", text)
    if match is None or int(match[1]) < 1 or int(match[2]) < 1:
        raise ConfigError(f"--project {text!r}: give {', '.join(PROJECTIONS)} or cases=N,samples=M with N, M >= 1")
    return Projection(int(match[1]), int(match[2]))


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
    """One row of the timing table for one run (a directory is loaded): measured values only."""
    run = load_runs([run])[0]
    frame, manifest = run.frame, run.manifest
    method = manifest.get("method") or {}
    cost = manifest.get("cost") or {}
    once = method.get("discovery_compute_seconds")
    once = _number(method.get("discovery_seconds") if once is None else once)
    per_sample = 0.0
    if "discovery_seconds_per_sample" in frame:
        per_sample = _number(frame.groupby("sample_id").discovery_seconds_per_sample.first().mean())
    share = frame["discovery_share_seconds"].fillna(0.0) if "discovery_share_seconds" in frame else 0.0
    per_edit = (frame[SECONDS_PER_CASE] - share) if SECONDS_PER_CASE in frame else pd.Series(dtype=float)
    timed = per_edit.dropna().astype(float)
    q25, median, q75 = (_number(timed.quantile(q)) if len(timed) else 0.0 for q in (0.25, 0.5, 0.75))
    run_s = _number(cost.get("wall_seconds"))
    return {
        "method": str(frame[METHOD].iloc[0]) if METHOD in frame and len(frame) else str(method.get("name", "?")),
        "n": len(frame),
        "run_s": run_s,
        "run_hms": _hms(run_s),
        "sessions": len(cost.get("sessions") or []),
        "edit_s": _number(per_edit.mean()),
        "edit_std_s": _number(per_edit.std(ddof=0)),
        "edit_median_s": median,
        "edit_q25_s": q25,
        "edit_q75_s": q75,
        "edit_iqr_s": q75 - q25,
        "discovery": "per sample" if per_sample > 0 else ("once per model" if once > 0 else "none"),
        "discovery_once_s": once,
        "discovery_per_sample_s": per_sample,
        "batch_size": int(frame.batch_size.mode().iloc[0]) if "batch_size" in frame and len(frame) else None,
        "device": str((manifest.get("model") or {}).get("device", "?")),
        "host": str((manifest.get("host") or {}).get("hostname", "?")),
        "load_average": _load(manifest),
    }


def timing_table(runs, projection: Projection | None = None) -> pd.DataFrame:
    """One row per run (Run objects or directories): what was measured first; with a
    ``projection``, ``projected_s`` / ``projected_hms`` for its cases and samples and
    ``projected_vs_sad`` (divided by the SAD run's projection, if one SAD run is given)."""
    table = pd.DataFrame([run_timing(run) for run in load_runs(runs)])
    if projection is not None:
        table["projected_s"] = (table.discovery_once_s + projection.samples * table.discovery_per_sample_s
                                + projection.cases * table.edit_s)
        table["projected_hms"] = table.projected_s.map(_hms)
        sad = table[table.method == "sad"]
        if len(sad) == 1 and float(sad.projected_s.iloc[0]) > 0:
            table["projected_vs_sad"] = (table.projected_s / float(sad.projected_s.iloc[0])).round(3)
    return table


def timing_title(table: pd.DataFrame, projection: Projection | None = None) -> str:
    machines = sorted(set(zip(table.device, table.host)))
    where = "; ".join(f"{device} on {host}" for device, host in machines)
    loads = "; ".join(f"{m}: {load}" for m, load in zip(table.method, table.load_average))
    parts = [f"editing time, measured on {where}: run = this run's wall time over its sessions (model loading "
             "and direction discovery not included), per edit = mean ± std, median and IQR (q25..q75) over its "
             f"cases; load average (1/5/15 min) per session: {loads}"]
    if projection is not None:
        parts.append(f"[PROJECTION, not measured: projected = once + samples x per_sample + cases x per_edit for "
                     f"{projection.text}, from each run's measured per-edit and discovery times]")
    if len(machines) > 1:
        parts.append(MIXED_MACHINES_MARK)
    return " ".join(parts)


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
