"""The benchmark tables of VLM-judged runs, added to whatever report their study builds.

A run on GEdit-Bench or ImgEdit-Basic whose manifest records judge stacks gets, per
judge, its benchmark's official aggregation (attnedit.report.judge_tables): GEdit's
per-type means and their unweighted mean, full set and intersection; ImgEdit's per-type
and overall means. Cases of different edits of one run (DCAG's (dk, dv) grid points, SAD's
directions and strengths) are different "methods" there: each gets its own table, named by
the method and its edit keys, as each would be one model in the official scripts.
"""

from __future__ import annotations

import pandas as pd

from attnedit.columns import METHOD
from attnedit.judge.stack import stack_notes
from attnedit.report.judge_tables import agreement_table, gedit_tables, imgedit_tables
from attnedit.report.render import Table

#: The judged protocol of a judge stack -> the tables of its benchmark, for runs of these datasets.
BENCHMARK_TABLES = {("VIEScoreTie", "gedit_bench"): gedit_tables, ("ImgEditRubric", "imgedit_basic"): imgedit_tables}
EDIT_KEYS = ("dk", "dv", "bk", "bv", "dq", "direction", "alpha")


def edit_labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``method`` naming the edit too ("dcag dk=1.1 dv=1.15"), for the edit
    keys that vary in ``frame``."""
    varying = [k for k in EDIT_KEYS if k in frame and frame[k].nunique(dropna=True) > 1]
    if not varying:
        return frame
    out = frame.copy()
    out[METHOD] = [" ".join([str(row[METHOD]), *(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                                               for k in varying)]) for _, row in frame.iterrows()]
    return out


def with_stack_notes(tables: list[Table], stack: dict) -> list[Table]:
    """``tables`` with the judge's notes in their titles: who judged, whose prompts."""
    notes = " ".join(f"[{note}]" for note in stack_notes(stack))
    return [Table(t.name, f"{t.title} {notes}", t.frame) for t in tables]


#: The main column of each protocol's judge (``<prefix><suffix>``), compared across judges.
MAIN_SUFFIX = {"VIEScoreTie": "_o", "ImgEditRubric": ""}


def agreement_tables(run) -> list[Table]:
    """Spearman and Kendall between every two judges of one protocol in a run, on their main
    columns (VIEScore's O, ImgEdit's item score), over the cases both scored."""
    stacks = run.manifest.get("judge_stacks") or {}
    tables = []
    prefixes = sorted(stacks)
    for i, a in enumerate(prefixes):
        for b in prefixes[i + 1:]:
            kind = (stacks[a].get("protocol") or {}).get("protocol")
            if kind in MAIN_SUFFIX and kind == (stacks[b].get("protocol") or {}).get("protocol"):
                table = agreement_table(edit_labelled(run.frame), a + MAIN_SUFFIX[kind], b + MAIN_SUFFIX[kind],
                                        where=run.run_dir)
                tables.append(table)
    return tables


def judged_tables(runs) -> list[Table]:
    """The judged benchmark tables of ``runs`` (report.runs.Run), one set per judge, and the
    agreement of two judges of one run."""
    tables = []
    for run in runs:
        if not run.frame.empty:
            tables += agreement_tables(run)
        dataset = (run.manifest.get("dataset") or {}).get("name")
        for prefix, stack in (run.manifest.get("judge_stacks") or {}).items():
            build = BENCHMARK_TABLES.get(((stack.get("protocol") or {}).get("protocol"), dataset))
            if build is not None and not run.frame.empty:
                made = with_stack_notes(build(edit_labelled(run.frame), prefix, run.run_dir), stack)
                tables += made if len(runs) == 1 else [Table(f"{run.run_dir.name}_{t.name}", t.title, t.frame)
                                                        for t in made]
    return tables
