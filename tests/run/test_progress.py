"""attnedit-status over a sharded run: two submitit_local shards, one killed and the
same command rerun, give a single-process run's rows; the progress per shard, the
multirun's run-dir summary and the manifest's cost and resumes over all of it."""

from __future__ import annotations

import json
import os
import signal
import time

import pandas as pd
import pytest

from attnedit.cli.status import main as status_main
from attnedit.run.progress import render, shard_progress
from harness import run_overrides
from processes import assert_same_rows, cli, finish, run_dir_of, writer_pids


@pytest.mark.slow
def test_two_submitit_shards_one_killed_and_rerun_equal_one_process(tiny_ddpm_dir, tmp_path, capsys):
    single_root, shard_root = tmp_path / "single", tmp_path / "shards"
    single_root.mkdir(), shard_root.mkdir()
    extra = ("dataset.num_samples=6", "batch_size=1")
    single = cli(*run_overrides(single_root, tiny_ddpm_dir, *extra), root=single_root)
    overrides = run_overrides(shard_root, tiny_ddpm_dir, *extra)
    command = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
               "shard.count=2", "shard.index=range(2)", *overrides]
    launch = cli(*command, root=shard_root)
    # shard 1 holds samples 1, 3 and 5: kill its job once it stored a row, before it is done
    deadline, victim = time.time() + 600, None
    while victim is None and time.time() < deadline and launch.poll() is None:
        for run_dir in shard_root.glob("results/runs/*/*"):
            victim = next((pid for pid, ids in writer_pids(run_dir).items()
                           if ids & {"seed000001", "seed000003", "seed000005"}), None)
        time.sleep(0.1)
    assert victim is not None, launch.communicate()[0] if launch.poll() is not None else "no rows in time"
    os.kill(victim, signal.SIGKILL)
    finish(launch, expect_ok=False)
    assert launch.returncode != 0
    run_dir = next(shard_root.glob("results/runs/*/*"))
    progress = shard_progress(run_dir).set_index("shard")
    assert list(progress.expected) == [12, 12] and list(progress.done[:1]) == [12]
    assert 1 <= progress.done["1/2"] < 12 and progress.missing["1/2"] == 12 - progress.done["1/2"]
    text = render(run_dir)
    assert text.splitlines()[0].endswith(f"{12 + progress.done['1/2']} of 24 cases done, 0 failed, "
                                         f"{12 - progress.done['1/2']} missing (2 shard(s))")
    assert "shard 1/2:" in text and "seed000005 (0 of 4)" in text
    capsys.readouterr()
    status_main([str(run_dir)])  # attnedit-status prints the same
    assert capsys.readouterr().out.strip() == text.strip()

    written = {p.name for p in (run_dir / "cases").glob("*.parquet")}
    output = finish(cli(*command, root=shard_root))  # the same command again
    new = {p.name for p in (run_dir / "cases").glob("*.parquet")} - written
    assert len(new) == 12 - progress.done["1/2"], "only what is missing is computed"
    assert {int(n.split("-")[2]) for n in new} and all(
        set(pd.read_parquet(run_dir / "cases" / n).sample_id) <= {"seed000001", "seed000003", "seed000005"} for n in new)
    summary = [line for line in output.splitlines() if " run dir: " in line]
    assert summary == [f"job {i} (shard.index={i}) run dir: {run_dir.resolve()}" for i in range(2)], output
    assert output.splitlines()[-1] == f"report: {next(shard_root.glob('results/hydra/*/multirun_*/report/index.html'))}"
    assert shard_progress(run_dir).missing.sum() == 0

    assert_same_rows(pd.read_parquet(run_dir / "cases"), pd.read_parquet(run_dir_of(finish(single)) / "cases"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # 4 processes (2 shards, then 2 again): one made the run, three resumed it; three finished (one was killed)
    assert len(manifest["resumes"]) == 3 and all(r["started"] >= manifest["created"] for r in manifest["resumes"])
    cost = manifest["cost"]
    assert len(cost["sessions"]) == 3 and sum(s["cases"] for s in cost["sessions"]) == 24 - progress.done["1/2"]
    assert cost["device_name"] == "cpu" and cost["peak_gpu_memory_bytes"] is None and cost["cases_timed"] == 24
    assert cost["seconds_per_case_mean"] > 0 and all(s["wall_seconds"] > 0 for s in cost["sessions"])
