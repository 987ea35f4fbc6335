"""Old import path of the PIE-Bench per-category summary: attnedit.report.piebench_summary."""

from attnedit.report.piebench_summary import REGION_TEXT, SCALES, region_of, scale_of, summarize, write_summary

__all__ = ["REGION_TEXT", "SCALES", "region_of", "scale_of", "summarize", "write_summary"]
