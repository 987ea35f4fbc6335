"""One writer for every table: Markdown, CSV and LaTeX from the same cells, and the
figures of a report saved beside them.

- CSV: numbers only; a column of ``Cell`` objects becomes numeric columns
  "<column>_<stat>" (mean, std, ci_low, ci_high, n, n_nan, n_failed; diff and p for
  paired cells); a plain text cell in such a column (a published value) goes to the
  first of them when it is a number.
- Markdown (``<name>.md``): compact. The heading "### <short title> — <name>", then
  the key columns, n once per row and one cell per metric, "mean [95% CI]"
  (cells.compact_text), with "(k non-finite)" beside a cell that skipped some; a column
  ``failed`` only where a row has failed cases. Key columns holding one value in every
  row go to a note (the first stays when all would; a table without metric cells moves
  text columns only). A table wider than WIDTH is split into column groups that repeat
  the key columns (one row: column | value). Then its notes, one line each, "[k] <note>":
  the title's bracketed groups and how the statistics were computed (cells.STATS_NOTE,
  stats.PAIRED_TEXT); nothing of the title is lost, only moved under the table.
- The index (tables.md, what attnedit-run and attnedit-tables print): every table, the
  notes several tables share printed once above them and cited by number (warnings,
  written in capitals like "RANDOM MODEL WEIGHTS", stay under every table), every line
  within WIDTH. ``wide=True`` returns the wide form instead: every column (std, CI,
  counts), the notes in each heading.
- LaTeX: the wide form (every column, the notes in the caption).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from attnedit.columns import N, N_FAILED, N_FINITE, N_NAN
from attnedit.report.cells import CI_LABEL, STATS_NOTE, Cell, compact_cell
from attnedit.report.stats import CI_TEXT, PAIRED_TEXT

LATEX = {"±": r"$\pm$", "Δ": r"$\Delta$"}
EVERY_ROW = "every row: "  # the note of a table's one-value key columns: its own, never pooled
FAILED = "failed"  # the compact tables' column of failed cases, where a row has one
WIDTH = 120  # console columns: the compact Markdown stays within them
DIGITS = 4  # significant figures of a compact cell
CELLS_NOTE = (f"cells: mean [{CI_LABEL}]; std, the CI bounds and the per-metric counts in full: the CSV and "
              "attnedit-tables --wide")
# A warning (random weights, runs that differ) opens in capitals and is never pooled with other tables' notes.
WARNING = re.compile(r"^(?:[A-Z][A-Z-]{3,}[ ,:]){2}|^[A-Z][A-Z-]{5,}\b")


@dataclass
class Table:
    name: str
    title: str  # a short title, bracketed notes may follow: "quickstart [note] [note]"
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
    index: str = "tables.md"  # every table's compact Markdown in one file (the console's), in table_dir


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


def stats_notes(frame: pd.DataFrame) -> list[str]:
    """How the table's cells were computed, one note per kind of cell it holds."""
    kinds = {v.kind for column in frame.columns for v in _cells(frame, column)}
    notes = []
    if "stat" in kinds:
        notes.append(STATS_NOTE.format(ci=CI_TEXT)[1:-1])
    if "paired" in kinds:
        notes.append(PAIRED_TEXT)
    if "spread" in kinds:
        notes.append("across seeds: mean ± std (ddof=0) of the per-seed means, min..max")
    if "permuted" in kinds:
        notes.append("label-shuffled null: mean ± std (ddof=0) over label permutations of the per-permutation "
                     "means, min..max")
    return notes


def stats_title(frame: pd.DataFrame) -> str:
    return " ".join(f"[{note}]" for note in stats_notes(frame))


def split_notes(text: str) -> tuple[str, list[str]]:
    """("quickstart", ["note a", "note b"]) from "quickstart [note a] [note b]": the
    top-level bracketed groups (a note may hold brackets of its own); unbalanced brackets
    leave the text as it is."""
    kept, notes, depth, start = [], [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            start = i if depth == 0 else start
            depth += 1
        elif char == "]" and depth:
            depth -= 1
            if depth == 0:
                notes.append(text[start + 1:i].strip())
        elif depth == 0:
            kept.append(char)
    if depth:
        return text, []
    return re.sub(r"\s+", " ", "".join(kept)).strip(), [n for n in notes if n]


def as_notes(text: str) -> str:
    """Every part of ``text`` as a bracketed note: its free text first, then its notes."""
    rest, notes = split_notes(text)
    return " ".join(f"[{note}]" for note in [rest, *notes] if note)


def table_notes(table: Table) -> tuple[str, list[str]]:
    """(the short title, every note of the table once: the title's, then the statistics')."""
    short, notes = split_notes(table.title)
    return short, list(dict.fromkeys([*notes, *stats_notes(table.frame)]))


def caption(table: Table) -> str:
    """The wide form's title: the short title and every note in brackets."""
    short, notes = table_notes(table)
    return " ".join(filter(None, [short, *(f"[{note}]" for note in notes)]))


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


# -- the compact form ------------------------------------------------------------------
def plain_text(value, digits: int = DIGITS) -> str:
    """A plain cell: floats to ``digits`` significant figures, the rest as written."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def _count_text(row: dict[str, Cell], key: str) -> str:
    """A row's n_failed: the number when every metric has it (a failed case fails them all),
    else "psnr 4, ssim 1"."""
    counts = {c: int(v.numbers.get(key) or 0) for c, v in row.items() if key in v.numbers}
    nonzero = {c: k for c, k in counts.items() if k}
    if not nonzero:
        return ""
    if len(nonzero) == len(counts) and len(set(nonzero.values())) == 1:
        return str(next(iter(nonzero.values())))
    return ", ".join(f"{c} {k}" for c, k in nonzero.items())


@dataclass
class Compact:
    """A table's compact form: its text cells, which columns are keys, which numbers
    (right-aligned), and the notes it adds (key columns with one value)."""
    frame: pd.DataFrame
    keys: list[str]
    numeric: set[str]
    notes: list[str]


def compact(frame: pd.DataFrame, digits: int = DIGITS) -> Compact:
    """Key columns, n, one compact cell per metric, then ``failed`` where a row has some."""
    metrics = [c for c in frame.columns if _cells(frame, c)]
    keys = [c for c in frame.columns if c not in metrics and c != N]
    notes = []
    if len(frame) > 1 or (metrics and len(frame) == 1):  # a lone row of numbers keeps its columns
        constant = [c for c in keys if frame[c].astype(str).nunique() == 1
                    and (metrics or not pd.api.types.is_numeric_dtype(frame[c]))]  # plain tables: labels only
        if constant == keys:  # the first key column stays: a row is never only numbers
            constant = constant[1:]
        if constant:
            notes.append(EVERY_ROW + ", ".join(f"{c}={plain_text(frame[c].iloc[0], digits)}" for c in constant))
            keys = [c for c in keys if c not in constant]
    rows = [{c: v for c, v in zip(frame.columns, values) if c in metrics and isinstance(v, Cell)}
            for values in frame.itertuples(index=False)]
    out = {c: [plain_text(v, digits) for v in frame[c]] for c in frame.columns if c in keys or c == N}
    numeric = {c for c in out if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])}
    pairs = [{v.numbers.get(N_FINITE) for v in row.values() if v.kind == "paired"} for row in rows]
    per_cell_n = N not in frame and any(len(p) > 1 for p in pairs)
    if N not in frame and any(pairs) and not per_cell_n:  # paired cells: n pairs, once per row
        out[N] = [str(next(iter(p))) if p else "" for p in pairs]
        numeric.add(N)
    for column in metrics:
        texts = []
        for value, row in zip(frame[column], rows):
            if not isinstance(value, Cell):
                texts.append(plain_text(value, digits))
                continue
            text = compact_cell(value, digits)
            if per_cell_n and value.kind == "paired":
                text += f" (n={value.numbers.get(N_FINITE)})"
            if value.numbers.get(N_NAN):  # rare and per metric: beside the mean rather than a column
                text += f" ({int(value.numbers[N_NAN])} non-finite)"
            texts.append(text)
        out[column] = texts
        numeric.add(column)
    failed = [_count_text(row, N_FAILED) for row in rows]
    if any(failed):
        out[FAILED] = failed
        numeric.add(FAILED)
    order = [*keys, N, *metrics, FAILED] if metrics else list(frame.columns)
    shown = pd.DataFrame(out, columns=[c for c in order if c in out])
    return Compact(shown, [c for c in keys + [N] if c in out], numeric, notes)


def _pipe(frame: pd.DataFrame, numeric: set[str]) -> str:
    align = ["right" if c in numeric else "left" for c in frame.columns]
    return tabulate(frame.values.tolist(), headers=list(frame.columns), tablefmt="pipe", disable_numparse=True,
                    colalign=align)


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def fitted(table: Compact, width: int = WIDTH) -> str:
    """The Markdown table(s): one when it fits in ``width``; else one row as column | value,
    several rows as column groups, each repeating the key columns (the leading columns of a
    table without metric cells)."""
    frame = table.frame
    text = _pipe(frame, table.numeric)
    if _width(text) <= width or frame.shape[1] < 3:
        return text
    if len(frame) == 1:
        vertical = pd.DataFrame({"column": list(frame.columns), "value": list(frame.iloc[0])})
        return _pipe(vertical, set())
    ids = table.keys if table.keys and len(table.keys) < frame.shape[1] else list(frame.columns[:1])
    rest = [c for c in frame.columns if c not in ids]
    groups, current = [], []
    for column in rest:
        if current and _width(_pipe(frame[ids + current + [column]], table.numeric)) > width:
            groups.append(current)
            current = []
        current.append(column)
    groups.append(current)
    return "\n\n".join(_pipe(frame[ids + group], table.numeric) for group in groups)


@dataclass
class TableText:
    """One table's compact Markdown: heading parts, the table(s), its notes."""
    name: str
    title: str
    body: str
    notes: list[str]

    def heading(self) -> str:
        return f"### {self.title} — {self.name}" if self.title else f"### {self.name}"

    def markdown(self, first: int = 1, width: int | None = None) -> str:
        """Heading, table, "[k] note" lines numbered from ``first``; ``width``: notes wrapped."""
        lines = [self.heading(), "", self.body, ""]
        lines += [footnote(k, note, width) for k, note in enumerate(self.notes, start=first)]
        return "\n".join(lines).rstrip("\n") + "\n"


def footnote(k: int, note: str, width: int | None = None) -> str:
    """"[k] note"; ``width``: wrapped, later lines indented."""
    text = f"[{k}] {note}"
    if width is None:
        return text
    return textwrap.fill(text, width, subsequent_indent="    ", break_on_hyphens=False)


def table_text(table: Table, digits: int = DIGITS, width: int = WIDTH) -> TableText:
    """The compact form: the one-value columns' note, the table's notes, then what a cell
    shows (CELLS_NOTE) beside how its statistics were computed."""
    short, notes = table_notes(table)
    shown = compact(table.frame, digits)
    stats = stats_notes(table.frame)
    if any(v.kind == "stat" for c in table.frame.columns for v in _cells(table.frame, c)):
        notes = [*(n for n in notes if n not in stats), CELLS_NOTE, *stats]
    return TableText(table.name, short, fitted(shown, width), [*shown.notes, *notes])


def is_warning(note: str) -> bool:
    return bool(WARNING.match(note))


def index_markdown(texts: list[TableText], width: int = WIDTH) -> str:
    """Every table of a folder for the console: the notes several tables share (warnings
    aside) once above them, each table citing those it has by number, then its own notes
    numbered on; every line within ``width``."""
    counts: dict[str, int] = {}
    for text in texts:
        for note in text.notes:
            counts[note] = counts.get(note, 0) + 1
    shared = [n for n, k in counts.items() if k > 1 and not is_warning(n) and not n.startswith(EVERY_ROW)]
    number = {n: k for k, n in enumerate(shared, start=1)}
    parts = []
    if shared:
        parts.append("\n".join(["Notes the tables below share (each table cites its own):",
                                 *(footnote(k, n, width) for n, k in number.items())]) + "\n")
    for text in texts:
        own = TableText(text.name, text.title, text.body, [n for n in text.notes if n not in number])
        markdown = own.markdown(len(shared) + 1, width)
        cited = [f"[{k}]" for k in sorted(number[n] for n in text.notes if n in number)]
        if cited:  # after a blank line: a line right under a pipe table would be read as its row
            markdown += ("" if own.notes else "\n") + textwrap.fill("notes above: " + " ".join(cited), width) + "\n"
        parts.append(markdown)
    return "\n".join(parts)


def write_table(table: Table, folder: Path) -> TableText:
    """<name>.csv, .md (compact, one line per note), .tex (wide) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    numeric(table.frame).to_csv(folder / f"{table.name}.csv", index=False)
    shown = annotated(table.frame)
    latex = shown.to_latex(index=False, escape=True, caption=latex_escape(f"{caption(table)} — {table.name}"))
    (folder / f"{table.name}.tex").write_text(_latex_symbols(latex))
    text = table_text(table)
    (folder / f"{table.name}.md").write_text(text.markdown())
    return text


def wide_markdown(table: Table) -> str:
    """The every-column Markdown (``--wide``): the notes in the heading, CI and counts as columns."""
    return render_markdown(table.name, caption(table), annotated(table.frame))


def write_report(report: Report, folder: Path, wide: bool = False) -> str:
    """Every table, the index Markdown, the files and the figures; returns the index's
    Markdown (``wide``: every table in the wide form instead)."""
    import matplotlib.pyplot as plt

    table_dir = folder / report.table_dir
    texts = [write_table(table, table_dir) for table in report.tables]
    text = index_markdown(texts) if texts else ""
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
    return "\n".join(wide_markdown(table) for table in report.tables) if wide else text


def tables_of(report: Report) -> dict[str, pd.DataFrame]:
    """{name: the table as text cells}."""
    return {t.name: display(t.frame) for t in report.tables}


def json_text(payload) -> str:
    return json.dumps(payload, indent=2)
