"""Failure accounting in a run: a case that raises is a failed row, the run goes on, ends
non-zero saying how many failed, and a rerun retries only those cases; a config error
stops the run at once."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnedit.config import compose
from attnedit.errors import ConfigError
from attnedit.run.failures import error_text, run_cases
from attnedit.run.runner import Runner
from harness import BIN, COMMAND_ENV, REPO, run_overrides


def test_a_failing_batch_is_retried_case_by_case_and_config_errors_stop():
    calls = []

    def process(cases):
        calls.append(len(cases))
        if len(cases) > 1:
            raise MemoryError("too big\nat batch 3")
        if cases[0][0] == "bad":
            raise ValueError("bad case")
        return [{"case_id": cases[0][0]}]

    rows = run_cases([("a", {}), ("bad", {}), ("c", {})], process,
                     lambda case, error: {"case_id": case[0], "failed": True, "error": error})
    assert calls == [3, 1, 1, 1]
    assert [(r["case_id"], r["failed"], r["error"]) for r in rows] == [
        ("a", False, None), ("bad", True, "ValueError: bad case"), ("c", False, None)]
    assert {r["batch_failure"] for r in rows} == {"MemoryError: too big"}  # one line of the batch's error

    def config_error(cases):
        raise ConfigError("model.x=<bad>")

    with pytest.raises(ConfigError):
        run_cases([("a", {}), ("b", {})], config_error, lambda case, error: {})
    assert error_text(KeyError("k")) == "KeyError: 'k'" and len(error_text(ValueError("v" * 900))) == 500


def _attnedit_run(overrides, root: Path, **plants) -> subprocess.CompletedProcess:
    env = {**COMMAND_ENV,
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "support"), os.environ.get("PYTHONPATH", "")]),
           **{f"ATTNEDIT_PLANT_{k.upper()}": v for k, v in plants.items()}}
    return subprocess.run([str(BIN / "attnedit-run"), *overrides], cwd=root, env=env, text=True,
                          capture_output=True, timeout=300)


@pytest.mark.slow
def test_failed_cases_are_rows_the_run_goes_on_and_a_rerun_retries_only_them(tiny_ddpm_dir, tmp_path, capsys):
    """4 samples x 1 edit in batches of 3: the first batch raises out-of-memory (planted on
    seed000002 in any batch > 1) and holds a sample whose image is NaN (seed000001). The
    failing run is a real process (exit code, last line); the rerun, in this process
    (an attnedit-run process costs ~20 s of imports), is the same config without plants."""
    overrides = run_overrides(tmp_path, tiny_ddpm_dir, "model._target_=planted_failures.PlantedFailures",
                              "dataset.num_samples=4", "method.directions=1", "method.alphas=[0.4]",
                              "batch_size=3", "numerical_floor.samples=0", "figures=false")
    first = _attnedit_run(overrides, tmp_path, nan="seed000001", oom="seed000002")
    assert first.returncode == 1, first.stderr
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("attnedit: 1 of 4 cases failed (1 NonFiniteOutputError)"), last
    run_dir = Path(first.stdout.strip().splitlines()[-1].removeprefix("run dir: "))
    frame = pd.read_parquet(run_dir / "cases").set_index("sample_id").sort_index()
    assert len(frame) == 4 and list(frame.failed) == [False, True, False, False]
    bad = frame.loc["seed000001"]
    assert bad.error.startswith("NonFiniteOutputError: ") and "\n" not in bad.error
    assert np.isnan(bad.psnr) and np.isnan(bad.ssim) and pd.isna(bad.image_path)
    assert sorted(p.name for p in (run_dir / "images" / "seed000001").iterdir()) == ["reference.png"]
    assert frame.error.drop("seed000001").isna().all()
    # the first batch failed as a whole (out of memory): its cases ran alone and say so
    assert frame.batch_failure.iloc[:3].str.startswith("OutOfMemoryError: CUDA out of memory").all()
    assert pd.isna(frame.batch_failure.iloc[3]) and frame.loc["seed000002"].batch_size == 1
    before = pd.read_parquet(run_dir / "cases")

    runner = Runner(compose("config", overrides))  # the plants removed: the same config, the same run
    assert runner.run() == run_dir and runner.failure is None
    again = capsys.readouterr().out
    assert "3 of 4 cases already done" in again and "retrying 1 failed case(s)" in again
    after = pd.read_parquet(run_dir / "cases")
    assert len(after) == 4 and after.case_id.is_unique and not after.failed.any()
    redone = after[after.sample_id == "seed000001"].iloc[0]
    assert np.isfinite(redone.psnr) and (run_dir / redone.image_path).exists()
    kept = before[before.sample_id != "seed000001"].merge(after, on="case_id", suffixes=("_before", "_after"))
    assert len(kept) == 3 and np.array_equal(kept.psnr_before, kept.psnr_after), "done rows are not recomputed"


def test_a_config_error_stops_the_run_at_once(tiny_ddpm_dir, tmp_path, monkeypatch):
    """It would fail every case: the run stops at the first, with no failed row."""
    monkeypatch.setenv("ATTNEDIT_PLANT_CONFIG", "seed000001")
    cfg = compose("config", run_overrides(tmp_path, tiny_ddpm_dir, "model._target_=planted_failures.PlantedFailures",
                                          "dataset.num_samples=3", "method.directions=1", "method.alphas=[0.4]",
                                          "batch_size=1", "numerical_floor.samples=0", "figures=false"))
    runner = Runner(cfg)
    with pytest.raises(ConfigError, match="planted config error"):
        runner.run()
    frame = runner.store.read()
    assert list(frame.sample_id) == ["seed000000"] and not frame.failed.any()
