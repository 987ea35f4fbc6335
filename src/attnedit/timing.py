"""Old import path of the editing-time table: attnedit.report.timing."""

from attnedit.report.timing import (MIXED_MACHINES_MARK, STUDY_CASES, STUDY_SAMPLES, run_timing, timing_table,
                                    timing_title)

__all__ = ["MIXED_MACHINES_MARK", "STUDY_CASES", "STUDY_SAMPLES", "run_timing", "timing_table", "timing_title"]
