"""The editing-time table (report/timing.py) of the comparison's runs."""

from __future__ import annotations

import json

import pytest

from attnedit.errors import ConfigError
from attnedit.report.timing import MIXED_MACHINES_MARK, Projection, parse_projection, timing_table, timing_title


def test_timing_table_marks_runs_from_different_machines(all_runs, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(all_runs["random"], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["host"]["hostname"] = "another-host"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    table = timing_table([all_runs["sad"], moved])
    assert MIXED_MACHINES_MARK in timing_title(table) and set(table.host) == {table.host[0], "another-host"}


def test_the_run_is_timed_as_measured_and_projected_only_when_asked(all_runs):
    """Without a projection the table holds measured columns only and its title never
    names another study; with one, the projected columns follow the stated formula."""
    table = timing_table([all_runs["sad"]])
    assert not [c for c in table if c.startswith(("projected", "total"))]
    assert "PROJECTION" not in timing_title(table) and "1500" not in timing_title(table)
    projected = timing_table([all_runs["sad"]], Projection(7, 3))
    row = projected.iloc[0]
    assert row.projected_s == pytest.approx(row.discovery_once_s + 3 * row.discovery_per_sample_s + 7 * row.edit_s)
    assert "7 cases over 3 samples" in timing_title(projected, Projection(7, 3))


def test_projection_arguments():
    assert parse_projection("cases=1500, samples=100") == Projection(1500, 100)
    assert parse_projection("celebahq_sad").cases == 1500
    for bad in ("1500", "cases=0,samples=1", "celebahq"):
        with pytest.raises(ConfigError, match="--project"):
            parse_projection(bad)
