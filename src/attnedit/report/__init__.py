"""Reporting: tables (Markdown, CSV, LaTeX), figures and their statistics from run directories.

- studies.py picks the study for a set of runs and writes its report;
- sad.py (SAD tables and comparisons), dcag.py (the GRAG / DCAG study): one module per study;
- runs.py loads a run once; cells.py / stats.py / render.py: cells with CIs and paired
  tests, written by one renderer; marks.py: title marks; columns.py: shared column names;
- plots.py, timing.py, reference.py, piebench_summary.py beside them;
- html.py: the static HTML report (attnedit-report).

Import the modules themselves (``from attnedit.report.studies import write_tables``); this
file imports nothing, so any module of the package loads without the others.
"""
