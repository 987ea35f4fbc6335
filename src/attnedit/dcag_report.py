"""Old import path of the DCAG study's report: attnedit.report.dcag."""

from attnedit.report.dcag import (FIDELITY, GRID_KEYS, Report, build_report_tables, guidance_label, load_study,
                                  main_table, write_report)

__all__ = ["FIDELITY", "GRID_KEYS", "Report", "build_report_tables", "guidance_label", "load_study", "main_table",
           "write_report"]
