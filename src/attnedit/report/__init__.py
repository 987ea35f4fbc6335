"""Reporting: tables (Markdown, CSV, LaTeX), figures and their statistics from run directories.

- studies.py picks the report for a set of runs and writes it (``attnedit-tables``, the
  runner after every run, ``attnedit-report``);
- sad.py (the tables of one run), comparison.py (several runs: SAD and its baselines,
  seeds, grid points), dcag/ (the GRAG / DCAG study);
- runs.py loads a run once; cells.py / stats.py / render.py: cells with CIs and paired
  tests, written by one renderer; marks.py: title marks;
- plots.py, timing.py, reference.py, piebench_summary.py beside them;
- html.py: the static HTML report (attnedit-report).

Import the modules themselves (``from attnedit.report.studies import write_tables``); this
file imports nothing, so any module of the package loads without the others.
"""
