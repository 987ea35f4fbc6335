"""attnedit-status <run dir> [--shards N]: how far a run (sharded or not) is: per shard
the cases done / expected, failed and missing, and which writers hold claims now.

Expected cases come from the run's plan in its manifest (``plan``: the dataset's sample
ids in order and the case ids of one sample's edits, written by attnedit-run); shard
``i`` of ``N`` holds samples ``ids[i::N]`` as in ``Runner.sample_ids``. ``N`` is the
``shard.count`` of the run's latest config unless given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from attnedit.columns import failed_mask
from attnedit.errors import AttneditError, DataError
from attnedit.store.claims import Claims
from attnedit.store.run_store import RunStore


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
