"""Runs a person can find: attnedit-status without a run directory lists the runs under a
results folder; attnedit-tables and attnedit-report over a shell glob of run directories
skip (naming it) the folder of a run that never started, and a comparison of several runs
goes to a folder of its own, never into the first run's tables/. The runs are copies of
the session's finished runs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from attnedit.cli.report import main as report_main
from attnedit.cli.status import main as status_main
from attnedit.cli.tables import main as tables_main


@pytest.fixture
def results(finished_run, sad_study_run, tmp_path) -> tuple[Path, list[Path], Path]:
    """A results folder holding copies of two finished quickstart runs (different metrics,
    alphas and samples) and the folder of a run that never started (no manifest.json)."""
    runs = tmp_path / "results" / "runs" / "quickstart"
    copies = [Path(shutil.copytree(src, runs / src.name)) for src in (finished_run[2], sad_study_run)]
    never = runs / "000000000000"
    (never / "cases").mkdir(parents=True)
    return tmp_path / "results", copies, never


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_status_without_a_run_lists_the_runs_under_the_results_folder(results, finished_run, capsys):
    root, (first, second), never = results
    status_main(["--root", str(root)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"3 run(s) under {(root / 'runs').resolve()}:" and len(lines) == 4
    assert all(len(line) <= 120 for line in lines), lines
    by_run = {line.split()[0]: line for line in lines[1:]}
    assert by_run[f"quickstart/{never.name}"].split()[1:3] == ["never", "started"]
    cfg = finished_run[0]
    planned = {first: cfg.dataset.num_samples * cfg.method.directions * len(cfg.method.alphas),
               second: 1 * 2 * 4}  # sad_study_run: 1 sample x 2 directions x 4 alphas
    for run_dir in (first, second):
        line = by_run[f"quickstart/{run_dir.name}"]
        rows = pd.read_parquet(run_dir / "cases")
        assert f"done {rows.case_id.nunique()}/{planned[run_dir]}" in line and "failed" not in line
        files = _files(run_dir)
        newest = time.strftime("%Y-%m-%d %H:%M", time.localtime(max(p.stat().st_mtime for p in files)))
        size = sum(p.stat().st_size for p in files)
        value, unit = line.split(newest)[1].split()[:2]
        assert float(value) * {"KiB": 1024, "MiB": 1024 ** 2}[unit] == pytest.approx(size, rel=0.005)  # 3 digits
        # the nodes holding other keys first (labels, metrics: from the rows), then the keys (cut at 120)
        labels = ",".join(map(str, sorted(rows.direction.unique()))) if run_dir == second else ""
        assert f"  method.labels=[{labels}] metrics=[" in line
    assert "metrics=[psnr,ssim] " in by_run[f"quickstart/{first.name}"]  # cfg: metrics=fidelity
    capsys.readouterr()
    status_main([str(first)])  # with a run directory: its progress per shard, as before
    assert capsys.readouterr().out.startswith(f"{first}: {planned[first]} of {planned[first]} cases done")


def test_tables_and_report_over_a_glob_skip_a_run_that_never_started(all_runs, tmp_path, capsys):
    """SAD and random directions of the comparison study (the cheapest finished pair),
    copied into one experiment folder beside the folder of a run that never started."""
    runs = tmp_path / "results" / "runs" / "quickstart"
    first, second = (Path(shutil.copytree(all_runs[m], runs / all_runs[m].name)) for m in ("sad", "random"))
    never = runs / "000000000000"
    (never / "cases").mkdir(parents=True)
    glob = sorted(str(p) for p in runs.glob("*"))  # the shell's results/runs/quickstart/*
    skipped = [f"attnedit: skipped {never}: a run that never started (no manifest.json)"]
    tables_main(glob)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == skipped
    folder = Path(captured.out.splitlines()[-1].removeprefix("comparison: "))
    assert folder.parent == (tmp_path / "results" / "comparisons").resolve()
    compared = pd.read_csv(folder / "comparison.csv")  # a row per run (and the published rows of SAD's reference)
    assert {"sad", "random"} <= set(compared.method)
    for run_dir in (first, second):
        assert not list((run_dir / "tables").glob("comparison*")), "a comparison never goes into a run"

    report_main([str(first), str(never), "--out", str(tmp_path / "report")])  # one run: no comparison to pay for
    captured = capsys.readouterr()
    assert captured.err.splitlines() == skipped
    assert captured.out.strip() == f"report: {(tmp_path / 'report' / 'index.html').resolve()}"
    assert first.name in (tmp_path / "report" / "index.html").read_text()
