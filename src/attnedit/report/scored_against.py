"""Which unedited image a run's edits were scored against (attnedit.run.references), in
tables: a title mark per kind, and the comparison's ``comparison_references`` table that
shows every run's metrics against each reference its rows hold.

A method with a sampler of its own (pullback's eta-1 boosting) is scored against its own
sampler's unedited image by default (``reference_kind`` ``own_sampler``) and holds the
study's unedited sample's scores as ``<metric>_vs_unedited``; ``method.reference=unedited``
swaps the two. Other methods have one reference, the study's unedited sample.
"""

from __future__ import annotations

import pandas as pd

from attnedit.columns import METHOD, OWN_SAMPLER, REFERENCE_KIND, UNEDITED, N
from attnedit.report.cells import group_cell

TEXT = {
    OWN_SAMPLER: "scored against the unedited sample under the method's own sampler (same noise; pullback: eta 1 "
                 "from 0.2T, as the public code's figures); against the study's unedited sample: "
                 "<metric>_vs_unedited, comparison_references",
    UNEDITED: "scored against the study's unedited sample, not their own sampler's (method.reference=unedited): "
              "the sampler's own change (pullback's boosting) counts as edit",
}
REFERENCE = "reference"  # column of comparison_references: the unedited image the row's metrics compare with
SCORED = "scored"  # the reference the run's other tables show


def reference_marks(frame: pd.DataFrame) -> list[str]:
    """"[pullback: scored against ...]" per reference kind the rows hold."""
    if REFERENCE_KIND not in frame:
        return []
    rows = frame.dropna(subset=[REFERENCE_KIND])
    marks = []
    for kind in sorted(rows[REFERENCE_KIND].unique()):
        methods = sorted(map(str, rows.loc[rows[REFERENCE_KIND] == kind, METHOD].unique())) if METHOD in rows else []
        marks.append(f"[{', '.join(methods) or 'rows'}: {TEXT.get(kind, kind)}]")
    return marks


def kinds_of(cases: pd.DataFrame, metrics: list[str]) -> list[str]:
    """The reference the metric columns hold, then the others with ``<metric>_vs_<kind>`` columns."""
    scored = cases[REFERENCE_KIND].dropna() if REFERENCE_KIND in cases else pd.Series(dtype=object)
    first = str(scored.iloc[0]) if len(scored) else UNEDITED
    others = [kind for kind in (UNEDITED, OWN_SAMPLER)
              if kind != first and any(f"{m}_vs_{kind}" in cases for m in metrics)]
    return [first, *others]


def references_table(labels: list[str], cases: list[pd.DataFrame], metrics: list[str]) -> pd.DataFrame:
    """A row per (run, reference its rows were scored against): the metric cells of the
    run's ``cases`` against that reference; ``scored`` marks the one the other tables show."""
    rows = []
    for label, frame in zip(labels, cases):
        kinds = kinds_of(frame, metrics)
        for kind in kinds:
            row = {METHOD: label, REFERENCE: kind, SCORED: kind == kinds[0], N: len(frame)}
            for metric in metrics:
                column = metric if kind == kinds[0] else f"{metric}_vs_{kind}"
                row[metric] = group_cell(frame.assign(**{metric: frame[column]}), metric) if column in frame else "n/a"
            rows.append(row)
    return pd.DataFrame(rows)


def vs_columns(frame: pd.DataFrame, metrics: list[str]) -> list[str]:
    """The ``<metric>_vs_<kind>`` columns ``frame`` holds (settings checked as the metric's)."""
    return [f"{m}_vs_{kind}" for m in metrics for kind in (UNEDITED, OWN_SAMPLER) if f"{m}_vs_{kind}" in frame]


def has_own_sampler(frames: list[pd.DataFrame]) -> bool:
    return any(REFERENCE_KIND in f for f in frames)


NOTE = ("[per run, its metrics against each unedited image its rows were scored against: 'unedited' (the study's "
        "sampler) and 'own_sampler' (the method's own sampler, same noise); 'scored': the one the other tables show]")
