"""One writer for every table: Markdown, CSV and LaTeX from the same cells, and the
figures of a report saved beside them.

- CSV: numbers only; a column of ``Cell`` objects becomes numeric columns
  "<column>_<stat>" (mean, std, ci_low, ci_high, n, n_nan, n_failed; diff and p for
  paired cells); a plain text cell in such a column (a published value) goes to the
  first of them when it is a number.
- Markdown / LaTeX: the cell's text ("mean ± std") under the column's name, and beside
  it "<column> 95% CI", "<column> n_nan", "<column> n_failed".
Every title of a table with statistics says how they were computed (cells.STATS_NOTE,
stats.PAIRED_TEXT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from attnedit.report.cells import STATS_NOTE, Cell
from attnedit.report.stats import CI_TEXT, PAIRED_TEXT

LATEX = {"±": r"$\pm$", "Δ": r"$\Delta$"}


@dataclass
class Table:
    name: str
    title: str
    frame: pd.DataFrame  # cells may be Cell objects


@dataclass
class Figure:
    path: str  # relative to the report's folder
    figure: object  # a matplotlib Figure
    savefig: dict = field(default_factory=dict)


@dataclass
class Report:
    """What a study builds: tables and figures, and where they go inside its folder."""
    tables: list[Table]
    figures: list[Figure] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text (meta.json, ...)
    table_dir: str = "tables"
    index: str = "tables.md"  # all tables' Markdown in one file, in table_dir


def _cells(frame: pd.DataFrame, column: str) -> list[Cell]:
    return [v for v in frame[column] if isinstance(v, Cell)]


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as their text (what Markdown shows)."""
    out = frame.copy()
    for column in frame.columns:
        if _cells(frame, column):
            out[column] = [v.text if isinstance(v, Cell) else v for v in frame[column]]
    return out


def annotated(frame: pd.DataFrame) -> pd.DataFrame:
    """For Markdown / LaTeX: each cell column followed by its extra columns (CI, counts)."""
    out = {}
    for column in frame.columns:
        cells = _cells(frame, column)
        out[column] = [v.text if isinstance(v, Cell) else v for v in frame[column]]
        for key in dict.fromkeys(k for c in cells for k in c.extra):
            out[f"{column} {key}"] = [v.extra.get(key, "") if isinstance(v, Cell) else "" for v in frame[column]]
    return pd.DataFrame(out, index=frame.index)


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number


def numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """For CSV: each cell column replaced by its numeric columns."""
    out = {}
    for column in frame.columns:
        cells = _cells(frame, column)
        if not cells:
            out[column] = frame[column].tolist()
            continue
        keys = list(dict.fromkeys(k for c in cells for k in c.numbers))
        for i, key in enumerate(keys):
            out[f"{column}_{key}"] = [v.numbers.get(key, float("nan")) if isinstance(v, Cell)
                                      else (_number(v) if i == 0 else float("nan")) for v in frame[column]]
    return pd.DataFrame(out, index=frame.index)


def stats_title(frame: pd.DataFrame) -> str:
    kinds = {v.kind for column in frame.columns for v in _cells(frame, column)}
    notes = []
    if "stat" in kinds:
        notes.append(STATS_NOTE.format(ci=CI_TEXT))
    if "paired" in kinds:
        notes.append(f"[{PAIRED_TEXT}]")
    if "spread" in kinds:
        notes.append("[across seeds: mean ± std (ddof=0) of the per-seed means, min..max]")
    if "permuted" in kinds:
        notes.append("[label-shuffled null: mean ± std (ddof=0) over label permutations of the per-permutation "
                     "means, min..max]")
    return " ".join(notes)


def caption(table: Table) -> str:
    return " ".join(filter(None, [table.title, stats_title(table.frame)]))


def latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return _latex_symbols(text)


def _latex_symbols(text: str) -> str:
    for symbol, latex in LATEX.items():
        text = text.replace(symbol, latex)
    return text


def render_markdown(name: str, title: str, table: pd.DataFrame) -> str:
    return f"### {title} — {name}\n\n{table.to_markdown(index=False)}\n"


def write_table(table: Table, folder: Path) -> str:
    """<name>.csv, .md, .tex in ``folder``; returns the Markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    title = caption(table)
    numeric(table.frame).to_csv(folder / f"{table.name}.csv", index=False)
    shown = annotated(table.frame)
    latex = shown.to_latex(index=False, escape=True, caption=latex_escape(f"{title} — {table.name}"))
    (folder / f"{table.name}.tex").write_text(_latex_symbols(latex))
    markdown = render_markdown(table.name, title, shown)
    (folder / f"{table.name}.md").write_text(markdown)
    return markdown


def write_report(report: Report, folder: Path) -> str:
    """Every table, the index Markdown, the files and the figures; returns the Markdown."""
    import matplotlib.pyplot as plt

    table_dir = folder / report.table_dir
    text = "\n".join(write_table(table, table_dir) for table in report.tables)
    table_dir.mkdir(parents=True, exist_ok=True)
    (table_dir / report.index).write_text(text)
    for path, content in report.files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    for figure in report.figures:
        out = folder / figure.path
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.figure.savefig(out, **figure.savefig)
        plt.close(figure.figure)
    return text


def tables_of(report: Report) -> dict[str, pd.DataFrame]:
    """{name: the table as text cells}."""
    return {t.name: display(t.frame) for t in report.tables}


def json_text(payload) -> str:
    return json.dumps(payload, indent=2)
