"""The DCAG study's tables and figures from bias-delta runs (GRAG / DCAG on PIE-Bench):
runs.py (which runs belong to it), points.py (grid points and their cells), tables.py,
paired.py (paired tests), figures.py, study.py (the report).

The cases of one or more runs (the ``none`` / ``grag`` / ``dcag`` runs of
``piebench_dcag``, or the single 25-point run of ``piebench_dcag_grid``) are grouped by
grid point: the run's method name, the guidance the scales amount to (none, GRAG = Key
only, V only, DCAG = Key and Value; "+Q" with the Query channel) and (dk, dv), plus any
of bk, bv, dq, bq that differ from 1. Rows of an unedited run (method ``none``) are the
point dk = dv = 1. Tables (Markdown, CSV, LaTeX):

- ``main``: the paper's fidelity metrics per point (whole image when measured) with the
  published values side by side, marked as a secondary, unverified source;
- ``main_relative``: change against the unedited point in percent, measured on the
  images both points share, beside the published change (unit-free, so the published
  MSE, whose unit is not stated, still compares);
- ``by_category_<lpips metric>``: LPIPS per PIE-Bench category and point;
- ``grid``: every point with CLIP score (editability) next to every fidelity metric.

- ``paired_vs_none``: every point against the unedited point on the images both hold,
  per fidelity metric the mean paired difference, its CI and the Wilcoxon p-value
  (stats.py); ``paired_vs_none_by_category_<lpips metric>``: the same per category.

Cells are means over cases (non-finite values, e.g. an empty background, skipped and
counted; failed cases counted apart), in the customary scales of piebench_summary.SCALES,
units in the headers and the scored region in every title, with the 95% CI, n_nan and
n_failed beside them (render.py).

Which runs belong to the study: bias-delta (GRAG / DCAG) runs, recognised by their
``dk`` / ``dv`` columns, and unedited runs beside them (``matches``).

Figures over the (dk, dv) plane, from per-point means:

- ``lpips_contours.png``: iso-fidelity contours of mean LPIPS over (dk, dv), one panel
  per LPIPS region measured; ``contourf`` on a full rectangular grid, a triangulated
  contour when the points are scattered (at least three, not on one line).
- ``fidelity_vs_editability.png``: mean CLIP score (x) against LPIPS and background PSNR
  (y), one labelled point per (dk, dv): the trade-off the DCAG paper left unexplored.
- ``fidelity_vs_instruction_following.png``: fidelity against a VLM judge's VIEScore SC
  (``metrics=piebench_dcag_judged``), when the runs hold it.

Only points whose other scales (bk, bv, dq, bq) are 1 are drawn; cases of one (dk, dv)
from several runs (the unedited run and a grid's (1, 1)) are pooled. Every figure title
names the model.
"""
