"""Several writers on one run directory, with real processes: two writers of the same
config split the work (claims), a truncated part file is quarantined and its cases
recomputed, SIGKILLs then resume give an uninterrupted run's rows (alpha = 0 included)
and every alpha-sweep figure, three submitit_local shards (one killed, then rerun) give
a single-process run's rows; attnedit-status, the multirun's run-dir summary and the
manifest's cost and resumes over all of it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnedit.store.claims import Claims, _boot_ticks, unit_key
from attnedit.cli.status import main as status_main
from attnedit.run.progress import render, shard_progress
from attnedit.store.run_store import RunStore
from attnedit.report.studies import write_tables
from attnedit.run.workunits import WorkUnits
from conftest import run_overrides

BIN = Path(sys.executable).parent
KEYS = ["case_id", "sample_id", "direction", "alpha", "identity_edit"]


def _cli(*args, root: Path, env: dict | None = None, tool: str = "attnedit-run") -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([str(BIN / tool), *args], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, expect_ok: bool = True) -> str:
    output, _ = process.communicate(timeout=900)
    if expect_ok:
        assert process.returncode == 0, output
    return output


def _run_dir(output: str) -> Path:
    return Path([line for line in output.splitlines() if line.startswith("run dir: ")][-1].removeprefix("run dir: "))


def _wait_for_parts(root: Path, count: int, process: subprocess.Popen, pattern: str = "*") -> list[Path]:
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        found = sorted(root.glob(f"results/runs/*/*/cases/{pattern}.parquet"))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {count} part files in time: {process.communicate()[0] if process.poll() else ''}")


def _writer_pids(run_dir: Path) -> dict[int, set[str]]:
    """pid of each part's writer (part-<ns>-<pid>-<n>.parquet) -> the samples it wrote."""
    out: dict[int, set[str]] = {}
    for part in (run_dir / "cases").glob("*.parquet"):
        out.setdefault(int(part.name.split("-")[2]), set()).update(pd.read_parquet(part).sample_id)
    return out


def _assert_same_rows(frame: pd.DataFrame, reference: pd.DataFrame, atol: float = 2e-6) -> None:
    """Every row of ``reference`` in ``frame`` once, every metric equal within ``atol`` (inf == inf)."""
    assert frame.case_id.is_unique and sorted(frame.case_id) == sorted(reference.case_id)
    a, b = frame.set_index("case_id").sort_index(), reference.set_index("case_id").sort_index()
    for column in ("psnr", "ssim", "mse"):
        if column in b:
            np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=0, atol=atol,
                                       err_msg=column)


# -- claims, in one process ------------------------------------------------------------
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


# -- two writers, a corrupt part -----------------------------------------------------------
@pytest.fixture(scope="module")
def two_writers(tiny_ddpm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    overrides = run_overrides(root, tiny_ddpm_dir, "dataset.num_samples=4", "batch_size=1", "numerical_floor.samples=0")
    env = {"ATTNEDIT_TEST_BARRIER": f"{root / 'barrier'}:2"}  # start-up differs by seconds: start together
    processes = [_cli(*overrides, root=root, env=env) for _ in range(2)]
    outputs = [_finish(p) for p in processes]
    return root, overrides, processes, outputs


@pytest.mark.slow
def test_two_writers_split_the_work(two_writers):
    root, _, processes, outputs = two_writers
    run_dir = _run_dir(outputs[0])
    assert _run_dir(outputs[1]) == run_dir
    frame = pd.read_parquet(run_dir / "cases")  # what the README promises, without RunStore's dedup
    assert len(frame) == 16 and frame.case_id.is_unique
    writers = _writer_pids(run_dir)
    assert set(writers) == {p.pid for p in processes}, "each writer did some of the work"
    assert not writers[processes[0].pid] & writers[processes[1].pid], "a sample is one writer's"
    assert not list((run_dir / "claims").glob("*.claim")), "claims are removed once rows are on disk"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert len(manifest["resumes"]) == 1 and len(manifest["cost"]["sessions"]) == 2  # no update lost


@pytest.mark.slow
def test_a_truncated_part_is_quarantined_and_recomputed(two_writers, capsys):
    root, overrides, _, outputs = two_writers
    run_dir = _run_dir(outputs[0])
    complete = pd.read_parquet(run_dir / "cases")
    parts = sorted((run_dir / "cases").glob("*.parquet"))
    for part in parts[:2]:  # copies cut short
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    write_tables(run_dir)  # attnedit-tables' path: RunStore.read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and f"unreadable part file {parts[0]}" in err[0] and "quarantine" in err[0]
    for part in parts[:2]:
        assert (run_dir / "cases" / "quarantine" / f"_{part.name}").exists() and not part.exists()
    assert len(pd.read_parquet(run_dir / "cases")) == 14, "pandas skips the quarantine folder"
    parts[2].write_bytes(parts[2].read_bytes()[:100])  # the run itself meets one too

    output = _finish(_cli(*overrides, root=root))  # a real process resumes: recomputes the quarantined cases
    assert f"unreadable part file {parts[2]}" in output and "moved to" in output
    assert f"resuming {run_dir}: 13 of 16 cases already done" in output
    frame = pd.read_parquet(run_dir / "cases")
    _assert_same_rows(frame, complete)


# -- kills and resume -------------------------------------------------------------------------
@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_rows_and_every_figure(tiny_ddpm_dir, tmp_path):
    """A SIGKILL from outside mid-run, then one that lands between a sample's last part
    and its figure (ATTNEDIT_TEST_DIE_AT), then a resume: rows equal an uninterrupted run's
    to 2e-6, alpha = 0 rows included, in batches of 4 that cross samples."""
    extra = ("dataset.num_samples=3", "method.alphas=[-0.4,0.0,0.4]", "batch_size=4")
    straight_root, killed_root = tmp_path / "straight", tmp_path / "killed"
    straight_root.mkdir(), killed_root.mkdir()
    straight = _cli(*run_overrides(straight_root, tiny_ddpm_dir, *extra), root=straight_root)
    overrides = run_overrides(killed_root, tiny_ddpm_dir, *extra)
    first = _cli(*overrides, root=killed_root)
    parts = _wait_for_parts(killed_root, 1, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    run_dir = parts[0].parent.parent
    after_first = len(pd.read_parquet(run_dir / "cases"))
    assert after_first < 18

    second = _cli(*overrides, root=killed_root, env={"ATTNEDIT_TEST_DIE_AT": "before_figure"})
    _finish(second, expect_ok=False)
    assert second.returncode == -signal.SIGKILL
    rows = pd.read_parquet(run_dir / "cases")
    finished = [s for s, n in rows.groupby("sample_id").size().items() if n == 6]
    assert any(not (run_dir / "figures" / f"alpha_sweep_{s}.png").exists() for s in finished), "killed before it"

    output = _finish(_cli(*overrides, root=killed_root))
    assert "resuming" in output
    reference = pd.read_parquet(_run_dir(_finish(straight)) / "cases")
    frame = pd.read_parquet(run_dir / "cases")
    assert len(frame) == 18 and frame.identity_edit.sum() == 6
    _assert_same_rows(frame, reference)
    assert sorted(p.name for p in (run_dir / "figures").glob("alpha_sweep_*.png")) == [
        f"alpha_sweep_seed{i:06d}.png" for i in range(3)]


# -- shards with the submitit_local launcher -------------------------------------------------------
@pytest.mark.slow
def test_three_submitit_shards_one_killed_and_rerun_equal_one_process(tiny_ddpm_dir, tmp_path, capsys):
    single_root, shard_root = tmp_path / "single", tmp_path / "shards"
    single_root.mkdir(), shard_root.mkdir()
    extra = ("dataset.num_samples=6", "batch_size=1")
    single = _cli(*run_overrides(single_root, tiny_ddpm_dir, *extra), root=single_root)
    overrides = run_overrides(shard_root, tiny_ddpm_dir, *extra)
    command = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
               "shard.count=3", "shard.index=range(3)", *overrides]
    launch = _cli(*command, root=shard_root)
    # shard 2 holds samples 2 and 5: kill its job once it stored a row, before it is done
    deadline, victim = time.time() + 600, None
    while victim is None and time.time() < deadline and launch.poll() is None:
        for run_dir in shard_root.glob("results/runs/*/*"):
            victim = next((pid for pid, ids in _writer_pids(run_dir).items() if ids & {"seed000002", "seed000005"}),
                          None)
        time.sleep(0.1)
    assert victim is not None, launch.communicate()[0] if launch.poll() is not None else "no rows in time"
    os.kill(victim, signal.SIGKILL)
    _finish(launch, expect_ok=False)
    assert launch.returncode != 0
    run_dir = next(shard_root.glob("results/runs/*/*"))
    progress = shard_progress(run_dir).set_index("shard")
    assert list(progress.expected) == [8, 8, 8] and list(progress.done[:2]) == [8, 8]
    assert 1 <= progress.done["2/3"] < 8 and progress.missing["2/3"] == 8 - progress.done["2/3"]
    text = render(run_dir)
    assert text.splitlines()[0].endswith(f"{16 + progress.done['2/3']} of 24 cases done, 0 failed, "
                                         f"{8 - progress.done['2/3']} missing (3 shard(s))")
    assert "shard 2/3:" in text and "seed000005 (0 of 4)" in text
    capsys.readouterr()
    status_main([str(run_dir)])  # attnedit-status prints the same
    assert capsys.readouterr().out.strip() == text.strip()

    written = {p.name for p in (run_dir / "cases").glob("*.parquet")}
    output = _finish(_cli(*command, root=shard_root))  # the same command again
    new = {p.name for p in (run_dir / "cases").glob("*.parquet")} - written
    assert len(new) == 8 - progress.done["2/3"], "only what is missing is computed"
    assert {int(n.split("-")[2]) for n in new} and all(
        set(pd.read_parquet(run_dir / "cases" / n).sample_id) <= {"seed000002", "seed000005"} for n in new)
    summary = [line for line in output.splitlines() if " run dir: " in line]
    assert summary == [f"job {i} run dir: {run_dir.resolve()}" for i in range(3)], output
    assert shard_progress(run_dir).missing.sum() == 0

    _assert_same_rows(pd.read_parquet(run_dir / "cases"), pd.read_parquet(_run_dir(_finish(single)) / "cases"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # 6 processes (3 shards, then 3 again): one made the run, five resumed it; five finished (one was killed)
    assert len(manifest["resumes"]) == 5 and all(r["started"] >= manifest["created"] for r in manifest["resumes"])
    cost = manifest["cost"]
    assert len(cost["sessions"]) == 5 and sum(s["cases"] for s in cost["sessions"]) == 24 - progress.done["2/3"]
    assert cost["device_name"] == "cpu" and cost["peak_gpu_memory_bytes"] is None and cost["cases_timed"] == 24
    assert cost["seconds_per_case_mean"] > 0 and all(s["wall_seconds"] > 0 for s in cost["sessions"])
