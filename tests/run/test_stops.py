"""A run stopped part way: Ctrl-C (SIGINT) and SIGTERM (SLURM's preemption) stop it within
2 s with exit 130 / 143; an operating-system error on its folder (a full disk, a write
refused, the folder moved away) is one ``attnedit: error:`` line, not a bug's traceback.
Every case stored before stays, and the last line names how many, the run dir and the
command that resumes.

Real processes, forked from the ``zygote`` fixture's server; a signal comes from outside
once the first part file is on disk (its name carries the writer's pid); a full disk or a
refused write is injected where the libraries write (attnedit.run.faults)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from harness import COMMAND_ENV, run_overrides

CASES = 16  # 2 samples x 2 directions x 4 alphas, one per batch: the first part comes early, the last late
SAVED = re.compile(r"(\d+) of (\d+) cases saved in (\S+); ")


def _overrides(root: Path, model_dir: Path) -> list[str]:
    return run_overrides(root, model_dir, "method.alphas=[-0.4,-0.2,0.2,0.4]", "batch_size=1",
                         "numerical_floor.samples=0", "model.num_inference_steps=10")


def _first_part(root: Path, future) -> Path:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not future.done():
        parts = sorted(root.glob("results/runs/*/*/cases/part-*.parquet"))
        if parts:
            return parts[0]
        time.sleep(0.01)
    raise AssertionError(f"no part file in time: {future.result().stderr[-2000:] if future.done() else ''}")


def _one_line(stderr: str, start: str) -> str:
    """The last line of stderr, which starts with ``start``; no traceback, no other attnedit line."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith(start), stderr[-3000:]
    assert "Traceback" not in stderr and "Error executing job" not in stderr, stderr[-3000:]
    assert [ln for ln in lines if ln.startswith("attnedit:")] == [lines[-1]], stderr[-3000:]
    return lines[-1]


def _kept(line: str, run_dir: Path, argv: list[str]) -> int:
    """The count the line reports, checked against the rows on disk; the resume command is the command."""
    found = SAVED.search(line)
    assert found, line
    assert int(found[2]) == CASES and Path(found[3]) == run_dir, line
    assert line.endswith(f"resume with: {shlex.join(['attnedit-run', *argv])}"), line
    rows = pd.read_parquet(run_dir / "cases")
    assert int(found[1]) == len(rows) and rows.case_id.is_unique, (line, len(rows))
    return len(rows)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_at_once_keeping_its_cases(signum, zygote, tiny_ddpm_dir, tmp_path):
    argv = _overrides(tmp_path, tiny_ddpm_dir)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(zygote.run, ["attnedit-run", *argv], tmp_path, COMMAND_ENV, 600)
        part = _first_part(tmp_path, future)
        sent = time.monotonic()
        os.kill(int(part.name.split("-")[2]), signum)
        done = future.result()
        seconds = time.monotonic() - sent
    assert done.returncode == 128 + signum, done.stderr[-3000:]
    assert seconds < 2.0, f"{seconds:.1f} s from the signal to the end of the process"
    line = _one_line(done.stderr, f"attnedit: interrupted by {signal.Signals(signum).name}: ")
    run_dir = part.parent.parent
    kept = _kept(line, run_dir, argv)
    assert 1 <= kept < CASES, line
    if signum != signal.SIGTERM:
        return
    # The same command resumes: it starts from the stored rows. A disk that is full from its
    # first write on stops it (one line) before any new row, the stored ones untouched.
    before = pd.read_parquet(run_dir / "cases").sort_values("case_id", ignore_index=True)
    again = zygote.run(["attnedit-run", *argv], tmp_path, {**COMMAND_ENV, "ATTNEDIT_TEST_OSERROR": "part:ENOSPC:1"})
    assert again.returncode == 2, again.stderr[-3000:]
    assert f"resuming {run_dir}: {kept} of {CASES} cases already done" in again.stdout, again.stdout[-2000:]
    line = _one_line(again.stderr, f"attnedit: error: cannot write {run_dir} (No space left on device); ")
    assert _kept(line, run_dir, argv) == kept
    after = pd.read_parquet(run_dir / "cases").sort_values("case_id", ignore_index=True)
    pd.testing.assert_frame_equal(after, before)
    assert all((run_dir / path).is_file() for path in after.image_path), "the stored rows' images stay"


@pytest.mark.parametrize("trouble", ["refused", "moved away"])
def test_a_results_folder_that_cannot_be_written_stops_the_run_in_one_line(trouble, zygote, tiny_ddpm_dir,
                                                                           tmp_path):
    """``refused``: an image write fails with EACCES (its folder's permissions changed),
    injected, as the root this suite may run as ignores permissions; ``moved away``: the
    run directory is renamed once its first part is on disk."""
    argv = _overrides(tmp_path, tiny_ddpm_dir)
    env = {**COMMAND_ENV, "ATTNEDIT_TEST_OSERROR": "image:EACCES:6"} if trouble == "refused" else COMMAND_ENV
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(zygote.run, ["attnedit-run", *argv], tmp_path, env, 600)
        run_dir = _first_part(tmp_path, future).parent.parent
        if trouble == "moved away":
            run_dir.rename(tmp_path / "elsewhere")
        done = future.result()
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_line(done.stderr, f"attnedit: error: cannot write {run_dir}/")
    assert "internal error" not in done.stderr
    if trouble == "refused":
        assert re.search(rf"cannot write {run_dir}/images/\S+\.png \(Permission denied\); ", line), line
        assert 1 <= _kept(line, run_dir, argv) < CASES
    else:
        assert "(No such file or directory); 0 of 16 cases saved" in line, line
        moved = pd.read_parquet(tmp_path / "elsewhere" / "cases")
        assert len(moved) >= 1 and moved.case_id.is_unique
