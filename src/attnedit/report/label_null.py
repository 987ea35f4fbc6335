"""Table 2's label-shuffled null (methods/labeling.py): per method, the Directional CLIP of
its Table 2 cases against the labels of other directions, one mean per permutation.

A cell is the mean ± std (ddof=0) over permutations of those per-permutation means, with
min..max: how much of the chosen labels' score a generic change already earns; it says how
many permutations it holds (``label_null``, or fewer: the distinct derangements of the
method's directions, 1 for 2 directions, whose std is then 0). Rows record
``<metric>_null_p<i>`` (one column per permutation); the cell sits beside the metric's own
column as ``<metric>_null``.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from attnedit.report.cells import spread_cell

#: How many permutations a table's null cells hold, for the title's word.
UNIT = "permutations"


def null_columns(frame: pd.DataFrame, metric: str) -> list[str]:
    """``<metric>_null_p<i>`` columns of ``frame``, in permutation order."""
    pattern = re.compile(rf"^{re.escape(metric)}_null_p(\d+)$")
    found = [(int(m.group(1)), c) for c in frame.columns if (m := pattern.match(c))]
    return [c for _, c in sorted(found)]


def null_cell(cases: pd.DataFrame, metric: str):
    """The null cell of one method's cases, or "n/a" where its rows hold no null."""
    columns = null_columns(cases, metric)
    if not columns:
        return "n/a"
    means = []
    for column in columns:
        values = cases[column].astype(float)
        values = values[np.isfinite(values)]
        means.append(float(values.mean()) if len(values) else math.nan)
    return spread_cell(means, unit=UNIT, kind="permuted")


def null_note(frames: list[pd.DataFrame], metric: str) -> str:
    """The title part naming the null, '' when no row holds one."""
    counts = sorted({len(null_columns(f, metric)) for f in frames} - {0})
    if not counts:
        return ""
    return (f"[{metric}_null: the same {metric} of the same cases with the labels permuted across each method's "
            f"directions ({'/'.join(map(str, counts))} distinct seeded derangements: label_null, or the !n that n "
            "directions have where fewer): mean ± std over the permutations each cell counts; the chosen labels' "
            "score minus it is what the labels add]")


def probes_note(frames: list[pd.DataFrame], methods: list[str]) -> str:
    """Which probe samples each method's labels were chosen on (rows' ``label_probes``).
    Only labels that recorded their probe seeds ("seeds ...") were checked apart from the
    evaluated samples (labeling.check_probes_disjoint); "manual" and "unrecorded" labels
    are named as such, disjointness not checked."""
    checked, unchecked = [], []
    for method, frame in zip(methods, frames):
        if "label_probes" in frame:
            probes = sorted({str(v) for v in frame["label_probes"].dropna()})
            seeds = [p for p in probes if p.startswith("seeds ")]
            other = [p for p in probes if p not in seeds]
            if seeds:
                checked.append(f"{method}: {', '.join(seeds)}")
            if other:
                unchecked.append(f"{method}: {', '.join(other)}")
    said = []
    if checked:
        said.append("[labels chosen on probes apart from the evaluated samples: " + "; ".join(checked) + "]")
    if unchecked:
        said.append("[labels whose probes are not recorded, disjointness from the evaluated samples not checked: "
                    + "; ".join(unchecked) + "]")
    return " ".join(said)
