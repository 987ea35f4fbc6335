"""Column names the runner's rows and the report's tables share: one spelling each."""

from __future__ import annotations

# Row columns written by the runner (attnedit.runner) and read by every table.
CASE_ID = "case_id"
SAMPLE_ID = "sample_id"
METHOD = "method"
CATEGORY = "category"
ALPHA = "alpha"
DIRECTION = "direction"
FAILED = "failed"  # True for a case that raised (issue 14.3); old runs lack the column: no failures
ERROR = "error"  # "<ExceptionType>: <one line>" for a failed case, None otherwise
SECONDS_PER_CASE = "seconds_per_case"
RANDOM_BACKBONE = "random_backbone"
MODEL_RANDOM_WEIGHTS = "model_random_weights"

# Table columns.
N = "n"  # cases in the group (rows, failed ones included)
SAMPLES = "samples"
SOURCE = "source"

# Per-metric statistics: CSV columns are "<metric>_<stat>"; Markdown and LaTeX show the
# formatted cell under the metric's name and the STAT_COLUMNS beside it.
MEAN, STD, CI_LOW, CI_HIGH = "mean", "std", "ci_low", "ci_high"
N_FINITE, N_NAN, N_FAILED = "n", "n_nan", "n_failed"
DIFF, P_VALUE, SIGNIFICANT = "diff", "p", "significant"
