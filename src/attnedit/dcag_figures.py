"""Old import path of the DCAG study's figures: attnedit.report.dcag."""

from attnedit.report.dcag import fidelity_vs_editability, grid_means, lpips_contours

__all__ = ["fidelity_vs_editability", "grid_means", "lpips_contours"]
