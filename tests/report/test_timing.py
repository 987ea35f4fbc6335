"""The editing-time table (report/timing.py) of the comparison's runs."""

from __future__ import annotations

import json

from attnedit.report.timing import MIXED_MACHINES_MARK, timing_table, timing_title


def test_timing_table_marks_runs_from_different_machines(all_runs, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere"
    shutil.copytree(all_runs["random"], moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["host"]["hostname"] = "another-host"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    table = timing_table([all_runs["sad"], moved])
    assert MIXED_MACHINES_MARK in timing_title(table) and set(table.host) == {table.host[0], "another-host"}
