"""The SAD study's tables of one run, Markdown, CSV and LaTeX through render.py (several
runs: comparison.py).

One run (<run dir>/tables/): metric columns are the ones the run's manifest lists. Cells
hold mean, std, the 95% CI, n, n_nan and n_failed over cases (non-finite values skipped,
their count reported), shown "mean [95% CI]" (render.py; every column with --wide and in
the CSV). Every title says when the numbers
come from random weights (test-only metric backbones or an untrained model) and how
alpha is scaled (``alpha_scale``), and each table's title says which cases it holds.
Means over alphas leave out alpha = 0 rows (the unedited sample: PSNR near the float32
limit would swamp them), and the summary is per |alpha|: weaker edits would inflate
fidelity (only by_category, and Table 2 without table2_alpha, pool strengths; their
titles say so).

Table 2 follows the SAD paper's protocol when the config sets ``tables.table2_alpha``:
one case per (sample, direction), 15 x 100 = 1500 in the study, at alpha = the sign of
the direction's label (methods/labeling.py) x table2_alpha. ``by_abs_alpha`` shows every
strength with the label's sign and the opposite one. Without the key Table 2 pools
every edit and its title says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnedit.columns import ALPHA, DIRECTION, METHOD, SAMPLE_ID, N
from attnedit.errors import ConfigError
from attnedit.factors.benchmark import direction_scores, factor_plot, has_factor_columns, method_summary
from attnedit.report.cells import group_cell
from attnedit.report.marks import floor_title, scale_note, title_marks
from attnedit.report.figures_sad import run_figures
from attnedit.report.plots import figure_note
from attnedit.report.reference import read_reference, with_reference
from attnedit.report.render import Figure, Report, Table, as_notes, json_text
from attnedit.report.runs import Run
from attnedit.report.timing import timing_table, timing_title

EDIT_KEYS = ("layers", "position", "alpha_scale", "window_lo", "window_hi")
POOLED_MARK = "[pooled over every alpha: not the paper's one-strength Table 2; set tables.table2_alpha]"


# -- the cases -------------------------------------------------------------------------
def with_strength(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``abs_alpha`` and ``edit_sign``: "label" when alpha has the sign of the
    direction's label (``label_sign``, +1 for rows without one), "opposite", or "none"."""
    if ALPHA not in frame:
        return frame
    alpha = frame[ALPHA].astype(float)
    sign = frame.label_sign.fillna(1).astype(float) if "label_sign" in frame else 1.0
    edit_sign = np.where(alpha == 0, "none", np.where(np.sign(alpha) == sign, "label", "opposite"))
    return frame.assign(abs_alpha=alpha.abs(), edit_sign=edit_sign)


def table2_cases(frame: pd.DataFrame, abs_alpha: float, what: str = "the run") -> pd.DataFrame:
    """The SAD paper's Table 2 cases: one per (sample, direction), alpha = label sign x abs_alpha."""
    if ALPHA not in frame:
        return frame
    framed = with_strength(frame)
    chosen = framed[np.isclose(framed.abs_alpha, float(abs_alpha), rtol=0, atol=1e-9) & (framed.edit_sign == "label")]
    if chosen.empty:
        held = sorted({abs(float(a)) for a in frame[ALPHA] if a != 0})
        raise ConfigError(f"tables.table2_alpha={abs_alpha} but {what} holds no edit at that |alpha| "
                          f"(|alpha| held: {held}); set tables.table2_alpha to one of them, or null to pool.")
    return chosen


def table2_note(cases: pd.DataFrame, abs_alpha: float | None) -> str:
    """The title part that says which cases Table 2 holds."""
    if abs_alpha is None:
        return POOLED_MARK
    note = f"[Table 2 protocol: one edit per (sample, direction), alpha = label sign x {float(abs_alpha):g}"
    if {DIRECTION, SAMPLE_ID, METHOD} <= set(cases.columns) and cases[METHOD].nunique() == 1:
        note += (f": {len(cases)} cases = {cases[DIRECTION].nunique()} directions x "
                 f"{cases[SAMPLE_ID].nunique()} samples")
    return note + "]"


def study_settings(config: dict) -> tuple[str | None, float | None]:
    """(reference CSV, Table 2 |alpha|) from a run's config ``tables`` node."""
    tables = config.get("tables") or {}
    abs_alpha = tables.get("table2_alpha")
    if abs_alpha is not None and not float(abs_alpha) > 0:
        raise ConfigError(f"tables.table2_alpha={abs_alpha} must be > 0 (the |alpha| of Table 2) or null")
    return tables.get("reference"), None if abs_alpha is None else float(abs_alpha)


def edits_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that edit: without alpha = 0 (unless every row is alpha = 0)."""
    if ALPHA not in frame or not (frame[ALPHA] != 0).any():
        return frame
    return frame[frame[ALPHA] != 0]


def aggregate(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """A row per group of ``by``: n, then a stat cell per metric."""
    by = [c for c in by if c in frame]
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), N: len(group), **{m: group_cell(group, m) for m in metrics}})
    return pd.DataFrame(rows)


def factor_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The factor benchmark (shapes model), when the rows carry the factor metric's columns."""
    if not has_factor_columns(frame):
        return {}
    scores = direction_scores(frame)
    return {"factor_directions": scores.round(4), "factor_methods": method_summary(scores).round(4)}


# -- one run ---------------------------------------------------------------------------
def run_title(run: Run) -> str:
    return " ".join(filter(None, [str(run.config.get("name", run.run_dir.name)), title_marks(run.frame),
                                  scale_note(run.frame), floor_title(run.manifest.get("numerical_floor"))]))


def run_tables(run: Run) -> tuple[list[Table], dict[str, pd.DataFrame]]:
    """(the tables of one run, factor tables for the figure)."""
    frame, title = run.frame, run_title(run)
    reference, table2_alpha = study_settings(run.config)
    built = run_frames(run, reference, table2_alpha)
    notes = table_notes(frame, table2_alpha)
    notes["editing_time"] = as_notes(timing_title(built["editing_time"]))  # a sentence: a note, not the title
    tables = [Table(name, " ".join(filter(None, [title, notes.get(name)])), table) for name, table in built.items()]
    return tables, {k: v for k, v in built.items() if k.startswith("factor_")}


def run_frames(run: Run, reference: str | None, table2_alpha: float | None) -> dict[str, pd.DataFrame]:
    frame, metrics = run.frame, run.metrics
    edits = with_strength(edits_only(frame))
    tables = {"summary": aggregate(edits, [METHOD, *EDIT_KEYS, "abs_alpha"], metrics)}
    if reference or table2_alpha is not None:
        cases = edits if table2_alpha is None else table2_cases(frame, table2_alpha)
        measured = aggregate(cases, [METHOD], metrics)
        tables["table2"] = with_reference(measured, read_reference(reference), metrics) if reference else measured
    if ALPHA in frame:
        tables["by_abs_alpha"] = aggregate(edits, [METHOD, "abs_alpha", "edit_sign"], metrics)
    if DIRECTION in frame:
        tables["by_direction"] = aggregate(frame, [METHOD, DIRECTION, "label", "label_sign", ALPHA], metrics)
    if "category" in frame and frame.category.notna().any():
        tables["by_category"] = aggregate(edits, [METHOD, "category"], metrics)
    tables["editing_time"] = timing_table([run])  # this run's time, per edit, discovery
    tables.update(factor_tables(frame))
    return tables




def table_notes(frame: pd.DataFrame, table2_alpha: float | None) -> dict[str, str]:
    """Per table, the title part that says which cases it holds."""
    notes = {
        "summary": "[per |alpha|, both signs]",
        "by_abs_alpha": "[edit_sign 'label': alpha has the sign of the direction's label (Table 2's cases); "
                        "'opposite': the reverse edit, scored target -> source]",
        "by_category": "[all edits pooled per category]",
    }
    if table2_alpha is not None or ALPHA in frame:
        cases = edits_only(frame) if table2_alpha is None else table2_cases(frame, table2_alpha)
        notes["table2"] = table2_note(cases, table2_alpha)
    return notes


def build_run(run: Run) -> Report:
    """One run: <run dir>/tables/*, figures/factor_benchmark.png for the shapes benchmark."""
    tables, factors = run_tables(run)
    figures = []
    if "factor_directions" in factors:
        note = figure_note(run.frame)
        figures.append(Figure("figures/factor_benchmark.png", factor_plot(factors["factor_directions"], note),
                              {"dpi": 120, "bbox_inches": "tight"}))
    figures += run_figures(run)  # curves against alpha, fidelity vs strength, per-direction galleries
    meta = {"title": run_title(run), "rows": len(run.frame)}
    return Report(tables, figures, {"tables/meta.json": json_text(meta)})


# -- several runs ----------------------------------------------------------------------
