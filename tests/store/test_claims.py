"""Claims: a live holder keeps its claim, a stale one (its holder gone, another host's
claim untouched too long, an earlier incarnation of the same SLURM job) is taken over;
two real writers of one config split the work, a sample being one writer's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


class _Racer(Claims):
    """A claimer that stands for the live process ``identity`` and, on its first look at the
    claims, waits until the other racer has looked too: both then act on the same view of
    the directory (no claim yet, or the same stale one), the window O_EXCL has to close."""

    def __init__(self, run_dir, identity: subprocess.Popen, looked: threading.Barrier) -> None:
        super().__init__(run_dir)
        self.me = {**self.me, "pid": identity.pid, "process_start": _boot_ticks(identity.pid)}
        self.looked, self.looks = looked, 0

    def _files(self, unit):
        files = super()._files(unit)
        self.looks += 1
        if self.looks == 1:
            self.looked.wait(timeout=10)
        return files


@pytest.mark.parametrize("planted", ["none", "stale"])
def test_two_claimers_racing_for_one_claim_exactly_one_wins(tmp_path, planted):
    identities = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]  # two live writers of this host
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        with ThreadPoolExecutor(2) as pool:
            for round_ in range(20):
                unit = f"race/{planted}/{round_}"
                if planted == "stale":  # a claim whose holder (this host) is gone: both may take it over
                    (tmp_path / "claims").mkdir(exist_ok=True)
                    (tmp_path / "claims" / f"{unit_key(unit)}.0.claim").write_text(
                        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "process_start": 1, "unit": unit}))
                start, looked = threading.Barrier(2), threading.Barrier(2)
                racers = [_Racer(tmp_path, identity, looked) for identity in identities]

                def claim(racer):
                    start.wait(timeout=10)
                    return racer.acquire(unit)

                won = [f.result(timeout=30) for f in [pool.submit(claim, r) for r in racers]]
                assert all(r.looks >= 1 for r in racers) and not looked.broken, "both looked before either claimed"
                assert sorted(won) == [False, True], f"round {round_}: exactly one of two racers wins, got {won}"
                winner = racers[won.index(True)]
                files = sorted(p.name for p in (tmp_path / "claims").glob(f"{unit_key(unit)}.*"))
                generation = 1 if planted == "stale" else 0
                assert files == [f"{unit_key(unit)}.{generation}.claim"]
                assert json.loads((tmp_path / "claims" / files[0]).read_text())["pid"] == winner.me["pid"]
                assert list(winner.held) == [unit] and not racers[1 - won.index(True)].held
    finally:
        for identity in identities:
            identity.kill()
            identity.wait()
