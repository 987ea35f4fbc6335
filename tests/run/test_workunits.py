"""Work units: a run's pending cases as batches over one fixed grid of the full case list,
drawn only from samples this writer claimed."""

from __future__ import annotations

import subprocess

from attnedit.run.workunits import WorkUnits
from attnedit.store.claims import Claims, _boot_ticks
from attnedit.store.run_store import RunStore


def test_batches_are_blocks_of_the_full_case_list(tmp_path, capsys):
    """A resumed run computes the uninterrupted run's batches (block k = cases 4k..4k+3),
    and a sample another writer holds is left out of its blocks."""
    cases = [(f"s{i}", {"k": j}) for i in range(3) for j in range(3)]  # 9 cases, samples cross blocks
    key = lambda sid, edit: f"{sid}|{edit['k']}"  # noqa: E731
    index = {key(*c): i for i, c in enumerate(cases)}

    def batches(pending, claims):
        finished = []
        units = WorkUnits(pending, 4, claims, RunStore(tmp_path), key, lambda u, _: finished.append(u),
                          position=index.__getitem__)
        out = []
        for batch in units.batches():
            out.append([index[key(*c)] for c in batch])
            units.stored(batch)
        return out, finished

    assert batches(cases, Claims(tmp_path)) == ([[0, 1, 2, 3], [4, 5, 6, 7], [8]], ["s0", "s1", "s2"])
    assert batches(cases[4:], Claims(tmp_path))[0] == [[4, 5, 6, 7], [8]]  # block 0 stored before a kill
    live = subprocess.Popen(["sleep", "60"])
    other = Claims(tmp_path)
    other.me = {**other.me, "pid": live.pid, "process_start": _boot_ticks(live.pid)}
    assert other.acquire("s1")
    try:
        assert batches(cases, Claims(tmp_path)) == ([[0, 1, 2], [6, 7], [8]], ["s0", "s2"])
    finally:
        live.kill()
    assert f"1 sample(s) of this run are being computed by another writer (pid {live.pid}" in capsys.readouterr().err
