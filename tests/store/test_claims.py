"""Claims: a live holder keeps its claim, a stale one (its holder gone, another host's
claim untouched too long, an earlier incarnation of the same SLURM job) is taken over;
two real writers of one config split the work, a sample being one writer's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from attnedit.store.claims import Claims, _boot_ticks, unit_key
from processes import run_dir_of, writer_pids


def test_claims_exclusive_and_stale_claims_taken_over(tmp_path, monkeypatch):
    live = subprocess.Popen(["sleep", "60"])
    other, mine = Claims(tmp_path), Claims(tmp_path)
    other.me = {**other.me, "pid": live.pid, "process_start": _boot_ticks(live.pid)}  # another live process
    assert other.acquire("s/0") and not mine.acquire("s/0"), "a live holder of this host keeps its claim"
    live.kill()
    live.wait()
    assert mine.acquire("s/0"), "its holder is gone"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim = tmp_path / "claims" / f"{unit_key('s/1')}.0.claim"
    claim.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "process_start": 1, "unit": "s/1"}))
    assert mine.acquire("s/1")  # its holder is gone
    assert [p.name for p in (tmp_path / "claims").glob(f"{unit_key('s/1')}.*")] == [f"{unit_key('s/1')}.1.claim"]
    far = {"pid": 1, "host": "elsewhere", "unit": "s/2"}
    claim = tmp_path / "claims" / f"{unit_key('s/2')}.0.claim"
    claim.write_text(json.dumps(far))
    assert not mine.acquire("s/2")  # another host, recently touched
    os.utime(claim, (time.time() - 2000, time.time() - 2000))
    assert mine.acquire("s/2")  # untouched longer than stale_seconds (1800)
    claim = tmp_path / "claims" / f"{unit_key('s/3')}.0.claim"
    claim.write_text(json.dumps({**far, "slurm_job": "77", "slurm_restart": 0}))
    requeued = Claims(tmp_path)
    requeued.me = {**requeued.me, "slurm_job": "77", "slurm_restart": 1}
    assert requeued.acquire("s/3")  # the same SLURM job's earlier incarnation
    mine.release("s/1")
    assert not list((tmp_path / "claims").glob(f"{unit_key('s/1')}.*"))


@pytest.mark.slow
def test_two_writers_split_the_work(two_writers):
    root, _, processes, outputs = two_writers
    run_dir = run_dir_of(outputs[0])
    assert run_dir_of(outputs[1]) == run_dir
    frame = pd.read_parquet(run_dir / "cases")  # what the README promises, without RunStore's dedup
    assert len(frame) == 16 and frame.case_id.is_unique
    writers = writer_pids(run_dir)
    assert set(writers) == {p.pid for p in processes}, "each writer did some of the work"
    assert not writers[processes[0].pid] & writers[processes[1].pid], "a sample is one writer's"
    assert not list((run_dir / "claims").glob("*.claim")), "claims are removed once rows are on disk"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["resumes"]) == 1 and len(manifest["cost"]["sessions"]) == 2  # no update lost
