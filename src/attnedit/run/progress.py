"""How far runs are (attnedit-status).

attnedit-status <run dir> [--shards N]: how far a run (sharded or not) is: per shard
the cases done / expected, failed and missing, and which writers hold claims now.
attnedit-status [--root DIR]: every run under the results folder, one line each: its
``<name>/<signature>``, cases done (of the plan's total) and failed, when it last
changed, its size, and the overrides that tell it from the other runs of its name.

Expected cases come from the run's plan in its manifest (``plan``: the dataset's sample
ids in order and the case ids of one sample's edits, written by attnedit-run); shard
``i`` of ``N`` holds samples ``ids[i::N]`` as in ``Runner.sample_ids``. ``N`` is the
``shard.count`` of the run's latest config unless given.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from attnedit.columns import failed_mask
from attnedit.errors import AttneditError, DataError
from attnedit.store.claims import Claims
from attnedit.store.overrides import config_differences, overrides_text
from attnedit.store.run_index import is_run_dir, listed_run_dirs
from attnedit.store.run_store import RunStore

#: attnedit-status lines are cut to this width (the overrides last, ending in "…")
LINE_WIDTH = 120


def work_plan(sample_ids: list[str], edit_keys: list[str]) -> dict[str, Any]:
    """manifest['plan']: what a complete run holds; ``edit_keys``: the case id of each
    edit with an empty sample id (``case_id('', method, edit)``)."""
    return {"sample_ids": list(sample_ids), "edit_keys": list(edit_keys)}


def shard_progress(run_dir: str | Path, shards: int | None = None) -> pd.DataFrame:
    """One row per shard: shard, samples, expected, done, failed, missing, missing_samples."""
    store = RunStore(run_dir)
    manifest = store.read_json("manifest.json")
    plan = manifest.get("plan")
    if not plan:
        raise DataError(f"{run_dir}/manifest.json has no 'plan'; "
                        "rerun attnedit-run with its config once to record it")
    count = int(shards or ((manifest.get("config") or {}).get("shard") or {}).get("count", 1))
    if count < 1:
        raise AttneditError(f"--shards must be >= 1, got {count}")
    frame = store.read()
    failed_ids = set(frame.case_id[failed_mask(frame)]) if not frame.empty else set()
    done_ids = set(frame.case_id) - failed_ids if not frame.empty else set()
    edits = plan["edit_keys"]
    rows = []
    for index in range(count):
        ids = plan["sample_ids"][index::count]
        expected = done = failed = 0
        missing_samples = []
        for sid in ids:
            cases = [sid + key for key in edits]
            here = sum(c in done_ids for c in cases)
            bad = sum(c in failed_ids for c in cases)
            expected, done, failed = expected + len(cases), done + here, failed + bad
            if here + bad < len(cases):
                missing_samples.append(f"{sid} ({here} of {len(cases)})")
        rows.append({"shard": f"{index}/{count}", "samples": len(ids), "expected": expected, "done": done,
                     "failed": failed, "missing": expected - done - failed, "missing_samples": missing_samples})
    return pd.DataFrame(rows)


def render(run_dir: str | Path, shards: int | None = None) -> str:
    table = shard_progress(run_dir, shards)
    total = table[["expected", "done", "failed", "missing"]].sum()
    lines = [f"{Path(run_dir)}: {total.done} of {total.expected} cases done, {total.failed} failed, "
             f"{total.missing} missing ({len(table)} shard(s))"]
    for row in table.itertuples(index=False):
        line = f"shard {row.shard}: {row.done}/{row.expected} done, {row.failed} failed, {row.missing} missing"
        if row.missing_samples:
            shown = ", ".join(row.missing_samples[:10])
            more = f" and {len(row.missing_samples) - 10} more" if len(row.missing_samples) > 10 else ""
            line += f" (samples {shown}{more})"
        lines.append(line)
    for info in Claims(run_dir, _stale_seconds(run_dir), create=False).active():
        lines.append(f"working: pid {info['pid']} on {info['host']} since {info['started']} on sample {info['unit']}")
    return "\n".join(lines)


def _stale_seconds(run_dir) -> float:
    from attnedit.store.claims import DEFAULT_STALE_SECONDS

    config = RunStore(run_dir).read_json("manifest.json").get("config") or {}
    return float((config.get("claims") or {}).get("stale_seconds", DEFAULT_STALE_SECONDS))


@dataclass
class Listed:
    """One run of the listing; ``manifest`` None: ``state`` says why (never started, or
    its manifest.json cannot be read)."""

    run_dir: Path
    manifest: dict | None
    state: str = ""
    done: int = 0
    failed: int = 0
    expected: int | None = None
    modified: float = 0.0
    size: int = 0
    overrides: str = ""


def disk_usage(folder: Path) -> tuple[int, float]:
    """(bytes of the files under ``folder``, the newest modification time, of the folder
    itself when empty)."""
    size, newest = 0, folder.stat().st_mtime
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                info = os.stat(os.path.join(parent, name), follow_symlinks=False)
            except FileNotFoundError:  # a writer renamed its temporary part meanwhile
                continue
            size, newest = size + info.st_size, max(newest, info.st_mtime)
    return size, newest


def list_runs(runs_dir: Path) -> list[Listed]:
    """Every ``<name>/<signature>`` folder under ``runs_dir``, by name then last change."""
    listed = []
    for run_dir in listed_run_dirs(runs_dir):
        entry = Listed(run_dir, None, "never started")
        if is_run_dir(run_dir):
            store = RunStore(run_dir)
            try:
                entry.manifest = store.read_json("manifest.json")
            except DataError:  # one bad run does not hide the others
                entry.state = "unreadable manifest.json"
            else:
                entry.done, entry.failed = len(store.done_case_ids()), len(store.failed_case_ids())
                plan = entry.manifest.get("plan") or {}
                if plan:
                    entry.expected = len(plan["sample_ids"]) * len(plan["edit_keys"])
        entry.size, entry.modified = disk_usage(run_dir)
        listed.append(entry)
    listed.sort(key=lambda e: (e.run_dir.parent.name, e.modified))
    for name in dict.fromkeys(e.run_dir.parent.name for e in listed):
        started = [e for e in listed if e.run_dir.parent.name == name and e.manifest is not None]
        for entry, pairs in zip(started, config_differences([e.manifest.get("config") or {} for e in started])):
            entry.overrides = overrides_text(pairs)
    return listed


def size_text(size: float) -> str:
    """Bytes to 3 significant figures: ``812 B``, ``1.06 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1000:
            return f"{size:.0f} B" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{size:.3g} TiB"


def render_listing(runs_dir: Path) -> str:
    """attnedit-status without a run directory: a line per run (module doc)."""
    listed = list_runs(runs_dir)
    if not listed:
        return f"no runs under {runs_dir.resolve()}"
    cells = []
    for e in listed:
        if e.manifest is None:
            cases = e.state
        else:
            cases = f"done {e.done}" + (f"/{e.expected}" if e.expected is not None else "")
            cases += f", {e.failed} failed" if e.failed else ""
        cells.append((f"{e.run_dir.parent.name}/{e.run_dir.name}", cases,
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified)), size_text(e.size)))
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [f"{len(listed)} run(s) under {runs_dir.resolve()}:"]
    for entry, row in zip(listed, cells):
        line = "  ".join(c.ljust(w) if i != 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        line = f"{line}  {entry.overrides}".rstrip()
        lines.append(line if len(line) <= LINE_WIDTH else line[:LINE_WIDTH - 1] + "…")
    return "\n".join(lines)
