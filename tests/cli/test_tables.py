"""attnedit-tables' console output on the session's finished run, in-process: every line
within 120 columns (the wide form's are not), each metric cell "mean [95% CI]" equal to
numpy's mean and percentile bootstrap of the run's rows, and every note its builder put
in a table's title among the compact table's footnotes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from attnedit.cli.tables import main as tables
from attnedit.report.marks import RANDOM_MODEL_MARK
from attnedit.report.runs import load_runs
from attnedit.report.studies import build
from bootstrap import numpy_bootstrap
from table_files import notes

WIDTH = 120


def _sections(printed: str) -> dict[str, list[str]]:
    """{table name: its lines} from the printed Markdown ('### <title> — <name>' headings)."""
    sections, name = {}, None
    for line in printed.splitlines():
        if line.startswith("### "):
            name = line.rpartition(" — ")[2]
            sections[name] = []
        elif name is not None:
            sections[name].append(line)
    return sections


def _cells(lines: list[str]) -> list[dict[str, str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("| ")]
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def _top_level_groups(text: str) -> list[str]:
    groups, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            start, depth = (i if depth == 0 else start), depth + 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                groups.append(text[start + 1:i].strip())
    return groups


def test_console_tables_fit_120_columns_and_cells_match_numpy(finished_run, capsys):
    _, _, run_dir = finished_run
    tables([str(run_dir), "--wide"])
    wide = capsys.readouterr().out
    assert max(map(len, wide.splitlines())) > WIDTH  # the rule below is not met by accident
    tables([str(run_dir)])
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if len(line) > WIDTH] == []
    assert (run_dir / "tables" / "tables.md").read_text().strip() in printed  # what attnedit-run prints
    sections = _sections(printed)  # the tiny model's random weights: said under every table, not once
    assert all(RANDOM_MODEL_MARK[1:-1] in " ".join(" ".join(lines).split()) for lines in sections.values()), sections

    # one cell against numpy: the summary's psnr over the edits (alpha = 0 left out)
    frame = pd.read_parquet(run_dir / "cases")
    edits = frame[frame.alpha != 0].psnr.to_numpy(dtype=np.float64)
    edits = edits[np.isfinite(edits)]
    cell = _cells(sections["summary"])[0]
    shown = [float(x) for x in re.findall(r"-?\d+\.\d+", cell["psnr"])]
    places = len(cell["psnr"].split()[0].partition(".")[2])
    expected = [edits.mean(), *numpy_bootstrap(edits, seed=0, resamples=1000)]
    assert cell["n"] == str(len(frame[frame.alpha != 0])) and len(shown) == 3, cell
    assert all(abs(a - b) <= 0.5 * 10.0 ** -places + 1e-9 for a, b in zip(shown, expected)), (cell, expected)
    assert 3 <= len(f"{max(map(abs, expected)):.{places}f}".replace(".", "").lstrip("0")) <= 4  # significant figures

    # the notes the tables' builder gave each title, none lost: each is a footnote of the compact file
    built = build(load_runs([run_dir])).tables
    assert {t.name for t in built} == set(sections)
    for table in built:
        compact = notes(run_dir / "tables" / f"{table.name}.md")
        missing = [g for g in _top_level_groups(table.title) if g not in compact]
        assert _top_level_groups(table.title) and not missing, (table.name, missing)
        assert all(g in " ".join(wide.split()) for g in _top_level_groups(table.title))  # and in the wide headings
    csv = pd.read_csv(run_dir / "tables" / "summary.csv")  # the CSV keeps every number
    assert {"psnr_mean", "psnr_std", "psnr_ci_low", "psnr_ci_high", "psnr_n", "psnr_n_nan", "psnr_n_failed"} <= set(csv)
