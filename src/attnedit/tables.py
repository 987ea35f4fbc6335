"""Old import path of the SAD tables: see attnedit.report (studies.py picks the study)."""

from attnedit.report.cells import mean_std
from attnedit.report.marks import RANDOM_BACKBONE_MARK, RANDOM_MODEL_MARK, NO_EDIT_MARK, scale_note, title_marks
from attnedit.report.render import latex_escape as _latex_escape, render_markdown
from attnedit.report.sad import (EDIT_KEYS, POOLED_MARK, aggregate, build_tables, edits_only, factor_tables,
                                 study_settings, table2_cases, table2_note, table_notes, with_strength)
from attnedit.report.studies import write_tables

__all__ = ["EDIT_KEYS", "NO_EDIT_MARK", "POOLED_MARK", "RANDOM_BACKBONE_MARK", "RANDOM_MODEL_MARK", "_latex_escape",
           "aggregate", "build_tables", "edits_only", "factor_tables", "mean_std", "render_markdown", "scale_note",
           "study_settings", "table2_cases", "table2_note", "table_notes", "title_marks", "with_strength",
           "write_tables"]
