"""Old import path of the comparison tables: attnedit.report.sad."""

from attnedit.report.runs import Run, load_runs
from attnedit.report.sad import build_comparison, comparison_notes, comparison_table, write_comparison

__all__ = ["Run", "build_comparison", "comparison_notes", "comparison_table", "load_runs", "write_comparison"]
