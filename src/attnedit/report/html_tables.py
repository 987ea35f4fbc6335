"""The report's tables as HTML, read back from the files ``attnedit-tables`` writes: the
numbers from ``<name>.csv``, the title and footnotes from ``<name>.md``.

The cells are the console's (:func:`render.compact` on the CSV's numbers made cells again):
key columns, ``n`` once per row, one cell per metric "mean [95% CI]"
(:func:`cells.compact_text`), ``failed`` only where a row has failed cases, key columns
holding one value in every row left to the footnotes. Each cell's ``title`` holds its
full values and its ``data-sort`` the number the page sorts on (the mean, not the text);
the key columns carry ``class="key"``: the page keeps them in view when a table scrolls.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnedit.columns import CI_HIGH, CI_LOW, DIFF, MEAN, N_FAILED, N_FINITE, N_NAN, P_VALUE, SIGNIFICANT, STD
from attnedit.report.cells import CI_LABEL, Cell
from attnedit.report.render import DIGITS, FAILED, compact, split_notes

# a metric's CSV columns are "<metric>_<stat>"; a spread's count follows its max ("_seeds")
STATS = (MEAN, DIFF, STD, CI_LOW, CI_HIGH, N_FINITE, N_NAN, N_FAILED, P_VALUE, SIGNIFICANT, "min", "max")
KEY = ' class="key"'
FOOTNOTE = re.compile(r"^\[(\d+)\]\s+(.*)$")
LEGEND = (f"A metric's cell: mean [{CI_LABEL}] (a paired table: the difference [{CI_LABEL}] and its p), as the "
          "console prints it; hover a cell for its full values, click a column's header to sort by it.")


@dataclass
class TableText:
    """What a table's Markdown says about it: its title, its name and its footnotes."""
    title: str
    name: str
    notes: list[tuple[int, str]]  # (k, note): the Markdown's "[k] note"


def read_markdown(md: Path) -> TableText:
    """The '### <title> — <name>' heading and the '[k] <note>' lines; a heading that carries
    its notes as bracketed groups ("quickstart [note] [note]") gives them as the notes."""
    lines = md.read_text().splitlines()
    heading = next((line[4:].strip() for line in lines if line.startswith("### ")), md.stem)
    title, _, name = heading.rpartition(" — ")
    notes = [(int(m.group(1)), m.group(2).strip()) for m in map(FOOTNOTE.match, lines) if m]
    if not notes:
        title, bracketed = split_notes(title)
        notes = list(enumerate(bracketed, start=1))
    return TableText(title.strip(), name.strip(), notes)


def metric_columns(columns: list[str]) -> dict[str, dict[str, str]]:
    """{metric: {stat: CSV column}} for every "<metric>_mean" / "<metric>_diff" with a CI,
    std or min..max beside it."""
    metrics: dict[str, dict[str, str]] = {}
    for column in columns:
        head = next((h for h in (MEAN, DIFF) if column.endswith("_" + h)), None)
        prefix = column[:-len(head) - 1] if head else ""
        if not head or prefix in metrics:
            continue
        stats = {stat: f"{prefix}_{stat}" for stat in STATS if f"{prefix}_{stat}" in columns}
        if not {CI_LOW, STD, "min"} & set(stats):  # e.g. "edit_mean" alone: a plain column
            continue
        after = columns.index(stats["max"]) + 1 if "max" in stats else len(columns)
        if after < len(columns) and columns[after].startswith(prefix + "_"):  # the spread's count ("seeds")
            stats[columns[after][len(prefix) + 1:]] = columns[after]
        metrics[prefix] = stats
    return metrics


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _number(stat: str, value) -> float | int | bool:
    """A statistic as the table's cell held it: counts as ints, the significance as a bool."""
    if stat == SIGNIFICANT:
        return str(value).strip().lower() in ("true", "1", "1.0")
    number = _float(value)
    if stat not in (MEAN, DIFF, STD, CI_LOW, CI_HIGH, P_VALUE, "min", "max") and number.is_integer():  # counts
        return int(number)
    return number


def _full(value: float) -> str:
    """A number as Python writes it back exactly (repr), integers without '.0'."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def as_cells(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, str]]]:
    """The CSV's table with each metric's numeric columns made one Cell again (what the
    tables were written from), and the metrics' columns."""
    metrics = metric_columns(list(frame.columns))
    taken = {c for stats in metrics.values() for c in stats.values()}
    out = {}
    for column in frame.columns:
        if column not in taken:
            out[column] = frame[column].tolist()
            continue
        metric = next((m for m, stats in metrics.items() if stats.get(MEAN, stats.get(DIFF)) == column), None)
        if metric is None:
            continue
        stats = metrics[metric]
        kind = "paired" if DIFF in stats else "spread" if "min" in stats else "stat"
        out[metric] = [_cell(row, stats, kind) for row in frame[list(stats.values())].to_dict("records")]
    return pd.DataFrame(out, index=frame.index), metrics


def _cell(row: dict, stats: dict[str, str], kind: str) -> Cell:
    """A metric's cell from its CSV numbers; "n/a" where the row has none (the metric is not
    the row's run's)."""
    numbers = {stat: _number(stat, row[column]) for stat, column in stats.items()}
    if all(isinstance(v, float) and math.isnan(v) for k, v in numbers.items() if k != SIGNIFICANT):
        return Cell("n/a")
    return Cell("", {k: v for k, v in numbers.items() if not (isinstance(v, float) and math.isnan(v))
                     or k in (MEAN, DIFF, STD, CI_LOW, CI_HIGH)}, kind=kind)


def cell_title(cell: Cell) -> str:
    """Every number of a metric's cell, in full: "mean 0.77602738... · 95% CI [..., ...] · std ... · n 32"."""
    numbers = {k: float(v) for k, v in cell.numbers.items() if k != SIGNIFICANT and math.isfinite(v)}
    parts = []
    for stat, value in numbers.items():
        if stat in (CI_LOW, CI_HIGH):
            if stat == CI_LOW and CI_HIGH in numbers:
                parts.append(f"{CI_LABEL} [{_full(value)}, {_full(numbers[CI_HIGH])}]")
            continue
        parts.append(f"{stat} {_full(value)}")
    return " · ".join(parts)


def _sort_key(value) -> str | None:
    number = value.numbers.get(DIFF, value.numbers.get(MEAN)) if isinstance(value, Cell) else _float(value)
    return _full(number) if isinstance(number, float) and not math.isnan(number) else None


def _td(text: str, title: str, sort: str | None, classes: str) -> str:
    attrs = "".join(f' {k}="{html.escape(v)}"' for k, v in (("class", classes), ("title", title),
                                                                ("data-sort", sort)) if v)
    return f"<td{attrs}>{html.escape(text)}</td>"


def _failed_sort(text: str) -> str | None:
    return text if text.isdigit() else None


def table_html(markdown: TableText, csv: Path, links: str = "") -> str:
    """One ``<figure>``: caption, the sortable table, the footnotes."""
    raw = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    cells, metrics = as_cells(raw)
    shown = compact(cells, DIGITS)
    # the columns kept in view: a row's keys and n; a table without metrics (timing, factors): its first column
    keys = shown.keys if metrics else list(shown.frame.columns[:1])
    head = "".join(f'<th scope="col"{KEY if c in keys else ""}>{html.escape(str(c))}</th>'
                   for c in shown.frame.columns)
    body = []
    for i in range(len(shown.frame)):
        row = []
        for column in shown.frame.columns:
            text = str(shown.frame[column].iloc[i])
            source = cells[column].iloc[i] if column in cells else None
            if column in metrics and isinstance(source, Cell):
                row.append(_td(text, cell_title(source), _sort_key(source), "metric"))
            elif column == FAILED and column not in cells:
                row.append(_td(text, "failed cases", _failed_sort(text), ""))
            else:
                full = _sort_key(source)
                text = "" if isinstance(source, float) and math.isnan(source) else text
                title = full if full is not None and full != text else ""
                row.append(_td(text, title, full, "key" if column in keys else ""))
        body.append("<tr>" + "".join(row) + "</tr>")
    notes = "".join(f'<li value="{k}">{html.escape(note)}</li>' for k, note in markdown.notes)
    caption = " — ".join(html.escape(part) for part in (markdown.title, markdown.name) if part)
    return (f'<figure class="table" data-table="{html.escape(markdown.name)}"><figcaption>{caption} '
            f'<span class="files">{links}</span></figcaption>'
            f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
            + (f'<ol class="notes">{notes}</ol>' if notes else "") + "</figure>")
