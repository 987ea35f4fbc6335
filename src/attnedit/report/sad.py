"""The SAD study's tables (one run) and comparison (several runs: SAD and its baselines,
grid points, seeds), Markdown, CSV and LaTeX through render.py.

One run (<run dir>/tables/): metric columns are the ones the run's manifest lists. Cells
are "mean ± std" over cases (non-finite values skipped, their count reported), with n,
the 95% CI, n_nan and n_failed beside them (render.py). Every title says when the numbers
come from random weights (test-only metric backbones or an untrained model) and how
alpha is scaled (``alpha_scale``), and each table's title says which cases it holds.
Means over alphas leave out alpha = 0 rows (the unedited sample: PSNR near the float32
limit would swamp them), and the summary is per |alpha|: weaker edits would inflate
fidelity (only by_category, and Table 2 without table2_alpha, pool strengths; their
titles say so).

Table 2 follows the SAD paper's protocol when the config sets ``tables.table2_alpha``:
one case per (sample, direction), 15 x 100 = 1500 in the study, at alpha = the sign of
the direction's label (methods/labeling.py) x table2_alpha. ``by_abs_alpha`` shows every
strength with the label's sign and the opposite one. Without the key Table 2 pools
every edit and its title says so.

Several runs (the SAD paper's Table 2 layout): a row per run, a column per metric, n;
the same per edit strength and signed alpha, the editing-time table, the published rows
when the runs' config names ``tables.reference``. Runs are named by their method, and
runs sharing a method by the config keys in which they differ (runs.run_labels).
``comparison_paired``: every run against the first (SAD when it leads), per metric the
mean paired difference over the sample ids both hold (each sample's mean over its cases),
its CI and the Wilcoxon p-value (stats.py). ``comparison_seeds``: when the runs differ
only in ``dataset.first_seed``, per method the spread of the run means across seeds.
Titles name each method's ``alpha_scale`` and say when the runs do not share their
samples, alphas or model weights (then the rows are not a like-for-like comparison).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from attnedit.errors import AttneditError, ConfigError
from attnedit.factors.benchmark import direction_scores, factor_plot, has_factor_columns, method_summary
from attnedit.numerical_floor import floor_title
from attnedit.report.cells import group_cell, paired_cell, spread_cell
from attnedit.report.columns import ALPHA, DIRECTION, METHOD, N, SAMPLE_ID, SAMPLES
from attnedit.report.plots import figure_note
from attnedit.report.marks import scale_note, title_marks
from attnedit.report.reference import read_reference, with_reference
from attnedit.report.render import Figure, Report, Table, json_text
from attnedit.report.runs import Run, differing_keys, load_runs, run_labels
from attnedit.report.stats import paired
from attnedit.report.timing import timing_table, timing_title

EDIT_KEYS = ("layers", "position", "alpha_scale", "window_lo", "window_hi")
POOLED_MARK = "[pooled over every alpha: not the paper's one-strength Table 2; set tables.table2_alpha]"
SEED_KEY = "dataset.first_seed"


# -- the cases -------------------------------------------------------------------------
def with_strength(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``abs_alpha`` and ``edit_sign``: "label" when alpha has the sign of the
    direction's label (``label_sign``, +1 for rows without one), "opposite", or "none"."""
    if ALPHA not in frame:
        return frame
    alpha = frame[ALPHA].astype(float)
    sign = frame.label_sign.fillna(1).astype(float) if "label_sign" in frame else 1.0
    edit_sign = np.where(alpha == 0, "none", np.where(np.sign(alpha) == sign, "label", "opposite"))
    return frame.assign(abs_alpha=alpha.abs(), edit_sign=edit_sign)


def table2_cases(frame: pd.DataFrame, abs_alpha: float, what: str = "the run") -> pd.DataFrame:
    """The SAD paper's Table 2 cases: one per (sample, direction), alpha = label sign x abs_alpha."""
    if ALPHA not in frame:
        return frame
    framed = with_strength(frame)
    chosen = framed[np.isclose(framed.abs_alpha, float(abs_alpha), rtol=0, atol=1e-9) & (framed.edit_sign == "label")]
    if chosen.empty:
        held = sorted({abs(float(a)) for a in frame[ALPHA] if a != 0})
        raise ConfigError(f"tables.table2_alpha={abs_alpha} but {what} holds no edit at that |alpha| "
                          f"(|alpha| held: {held}); set tables.table2_alpha to one of them, or null to pool.")
    return chosen


def table2_note(cases: pd.DataFrame, abs_alpha: float | None) -> str:
    """The title part that says which cases Table 2 holds."""
    if abs_alpha is None:
        return POOLED_MARK
    note = f"[Table 2 protocol: one edit per (sample, direction), alpha = label sign x {float(abs_alpha):g}"
    if {DIRECTION, SAMPLE_ID, METHOD} <= set(cases.columns) and cases[METHOD].nunique() == 1:
        note += (f": {len(cases)} cases = {cases[DIRECTION].nunique()} directions x "
                 f"{cases[SAMPLE_ID].nunique()} samples")
    return note + "]"


def study_settings(config: dict) -> tuple[str | None, float | None]:
    """(reference CSV, Table 2 |alpha|) from a run's config ``tables`` node."""
    tables = config.get("tables") or {}
    abs_alpha = tables.get("table2_alpha")
    if abs_alpha is not None and not float(abs_alpha) > 0:
        raise ConfigError(f"tables.table2_alpha={abs_alpha} must be > 0 (the |alpha| of Table 2) or null")
    return tables.get("reference"), None if abs_alpha is None else float(abs_alpha)


def edits_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that edit: without alpha = 0 (unless every row is alpha = 0)."""
    if ALPHA not in frame or not (frame[ALPHA] != 0).any():
        return frame
    return frame[frame[ALPHA] != 0]


def aggregate(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """A row per group of ``by``: n, then a stat cell per metric."""
    by = [c for c in by if c in frame]
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), N: len(group), **{m: group_cell(group, m) for m in metrics}})
    return pd.DataFrame(rows)


def factor_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The factor benchmark (shapes model), when the rows carry the factor metric's columns."""
    if not has_factor_columns(frame):
        return {}
    scores = direction_scores(frame)
    return {"factor_directions": scores.round(4), "factor_methods": method_summary(scores).round(4)}


# -- one run ---------------------------------------------------------------------------
def run_title(run: Run) -> str:
    return " ".join(filter(None, [str(run.config.get("name", run.run_dir.name)), title_marks(run.frame),
                                  scale_note(run.frame), floor_title(run.manifest.get("numerical_floor"))]))


def run_tables(run: Run) -> tuple[list[Table], dict[str, pd.DataFrame]]:
    """(the tables of one run, factor tables for the figure)."""
    frame, title = run.frame, run_title(run)
    reference, table2_alpha = study_settings(run.config)
    built = _run_frames(run, reference, table2_alpha)
    notes = table_notes(frame, table2_alpha)
    notes["editing_time"] = timing_title(built["editing_time"])
    tables = [Table(name, " ".join(filter(None, [title, notes.get(name)])), table) for name, table in built.items()]
    return tables, {k: v for k, v in built.items() if k.startswith("factor_")}


def _run_frames(run: Run, reference: str | None, table2_alpha: float | None) -> dict[str, pd.DataFrame]:
    frame, metrics = run.frame, run.metrics
    edits = with_strength(edits_only(frame))
    tables = {"summary": aggregate(edits, [METHOD, *EDIT_KEYS, "abs_alpha"], metrics)}
    if reference or table2_alpha is not None:
        cases = edits if table2_alpha is None else table2_cases(frame, table2_alpha)
        measured = aggregate(cases, [METHOD], metrics)
        tables["table2"] = with_reference(measured, read_reference(reference), metrics) if reference else measured
    if ALPHA in frame:
        tables["by_abs_alpha"] = aggregate(edits, [METHOD, "abs_alpha", "edit_sign"], metrics)
    if DIRECTION in frame:
        tables["by_direction"] = aggregate(frame, [METHOD, DIRECTION, "label", "label_sign", ALPHA], metrics)
    if "category" in frame and frame.category.notna().any():
        tables["by_category"] = aggregate(edits, [METHOD, "category"], metrics)
    tables["editing_time"] = timing_table([run])  # discovery / per-edit / projected study time
    tables.update(factor_tables(frame))
    return tables


def build_tables(run_dir: Path, frame: pd.DataFrame, reference: str | None = None,
                 table2_alpha: float | None = None) -> dict[str, pd.DataFrame]:
    """The tables of one run (text cells), for rows ``frame`` of ``run_dir``."""
    from attnedit.report.render import display
    from attnedit.store import RunStore

    run = Run(Path(run_dir), frame, RunStore(run_dir).read_json("manifest.json"))
    return {name: display(table) for name, table in _run_frames(run, reference, table2_alpha).items()}


def table_notes(frame: pd.DataFrame, table2_alpha: float | None) -> dict[str, str]:
    """Per table, the title part that says which cases it holds."""
    notes = {
        "summary": "[per |alpha|, both signs]",
        "by_abs_alpha": "[edit_sign 'label': alpha has the sign of the direction's label (Table 2's cases); "
                        "'opposite': the reverse edit, scored target -> source]",
        "by_category": "[all edits pooled per category]",
    }
    if table2_alpha is not None or ALPHA in frame:
        cases = edits_only(frame) if table2_alpha is None else table2_cases(frame, table2_alpha)
        notes["table2"] = table2_note(cases, table2_alpha)
    return notes


def build_run(run: Run) -> Report:
    """One run: <run dir>/tables/*, figures/factor_benchmark.png for the shapes benchmark."""
    tables, factors = run_tables(run)
    figures = []
    if "factor_directions" in factors:
        note = figure_note(run.frame)
        figures.append(Figure("figures/factor_benchmark.png", factor_plot(factors["factor_directions"], note),
                              {"dpi": 120, "bbox_inches": "tight"}))
    meta = {"title": run_title(run), "rows": len(run.frame)}
    return Report(tables, figures, {"tables/meta.json": json_text(meta)})


# -- several runs ----------------------------------------------------------------------
def _cases(run: Run, table2_alpha: float | None) -> pd.DataFrame:
    """A run's rows in the comparison table: Table 2's cases, or every edit (alpha = 0 left out)."""
    if table2_alpha is None:
        return edits_only(run.frame)
    return table2_cases(run.frame, table2_alpha, what=f"run {run.run_dir}")


def _metrics(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(m for r in runs for m in r.metrics))


def _aggregate(runs: list[Run], by: list[str], table2_alpha: float | None = None) -> pd.DataFrame:
    """Rows per run (and per ``by`` keys); without keys, the Table 2 cases of each run
    (``table2_alpha``, else every edit); with keys, every row but alpha = 0 unless "alpha" is a key."""
    metrics = _metrics(runs)
    rows = []
    for label, run in zip(run_labels(runs), runs):
        if not by:
            frame, keys = _cases(run, table2_alpha), []
        else:
            frame = with_strength(run.frame)
            keys = [c for c in by if c in frame]
            frame = frame if ALPHA in keys else edits_only(frame)
        groups = frame.groupby(keys, sort=True, dropna=False) if keys else [((), frame)]
        for key, group in groups:
            key = key if isinstance(key, tuple) else (key,)
            row = {METHOD: label, **dict(zip(keys, key)), N: len(group)}
            if not keys:
                row[SAMPLES] = group[SAMPLE_ID].nunique() if SAMPLE_ID in group else None
            for metric in metrics:
                row[metric] = group_cell(group, metric) if metric in group else "n/a"
            rows.append(row)
    return pd.DataFrame(rows)


def _table2_alpha(runs: list[Run]) -> float | None:
    return study_settings(runs[0].config)[1] if runs else None


def per_sample(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Each sample's mean over its finite values (its cases; failed ones are NaN)."""
    values = frame[[SAMPLE_ID]].assign(value=frame[metric].astype(float))
    values = values[np.isfinite(values.value)]
    return values.groupby(SAMPLE_ID).value.mean()


def paired_table(runs: list[Run], labels: list[str], table2_alpha: float | None, baseline: int = 0) -> pd.DataFrame:
    """Every run against ``runs[baseline]``: per metric a paired cell (run - baseline) over
    the sample ids both hold."""
    metrics = _metrics(runs)
    base = _cases(runs[baseline], table2_alpha)
    rows = []
    for i, (label, run) in enumerate(zip(labels, runs)):
        if i == baseline:
            continue
        cases = _cases(run, table2_alpha)
        row = {METHOD: label, "against": labels[baseline]}
        for metric in metrics:
            if metric not in cases or metric not in base or SAMPLE_ID not in cases:
                row[metric] = "n/a"
                continue
            a, b = per_sample(base, metric), per_sample(cases, metric)
            common = a.index.intersection(b.index)
            row[metric] = paired_cell(paired(a[common].to_numpy(), b[common].to_numpy()))
        rows.append(row)
    return pd.DataFrame(rows)


def seed_runs(runs: list[Run]) -> bool:
    """Several runs per method that differ only in dataset.first_seed (a seeds axis)."""
    by_method: dict[str, list[Run]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    groups = [g for g in by_method.values() if len(g) > 1]
    return bool(groups) and all(differing_keys(g) == [SEED_KEY] for g in groups)


def seeds_table(runs: list[Run], table2_alpha: float | None) -> pd.DataFrame:
    """Per method: the spread across seeds of the run means (each run = one first_seed)."""
    metrics = _metrics(runs)
    by_method: dict[str, list[Run]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    rows = []
    for method, group in by_method.items():
        seeds = sorted(str((r.config.get("dataset") or {}).get("first_seed")) for r in group)
        row = {METHOD: method, "first_seeds": ", ".join(seeds)}
        for metric in metrics:
            means = []
            for run in group:
                values = _cases(run, table2_alpha)
                values = values[metric].astype(float) if metric in values else pd.Series(dtype=float)
                values = values[np.isfinite(values)]
                means.append(float(values.mean()) if len(values) else float("nan"))
            row[metric] = spread_cell(means)
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_notes(runs: list[Run]) -> str:
    """Marks for the title: random weights, and what the runs do not share."""
    frame = pd.concat([r.frame.assign(method=label) for label, r in zip(run_labels(runs), runs)], ignore_index=True)
    notes = [title_marks(frame), scale_note(frame)]
    checks = {
        "samples": lambda r: frozenset(r.frame[SAMPLE_ID]) if SAMPLE_ID in r.frame else None,
        "alphas": lambda r: frozenset(r.frame[ALPHA]) if ALPHA in r.frame else None,
        "model weights": lambda r: (r.manifest.get("model") or {}).get("weights_sha256_16"),
    }
    differ = [what for what, key in checks.items() if len({key(r) for r in runs}) > 1]
    if seed_runs(runs):
        differ = [d for d in differ if d != "samples"]  # a seeds axis: other samples by design
    if differ:
        notes.append(f"[RUNS DIFFER IN {', '.join(differ).upper()}: not a like-for-like comparison]")
    return " ".join(n for n in notes if n)


def comparison_table_notes(runs: list[Run], table2_alpha: float | None) -> dict[str, str]:
    """Per table, the title part that says which cases it holds."""
    cases = pd.concat([_cases(r, table2_alpha) for r in runs], ignore_index=True)
    return {
        "comparison": table2_note(cases, table2_alpha),
        "comparison_by_abs_alpha": "[edit_sign 'label': alpha has the sign of the method's label of the direction "
                                   "(Table 2's cases); 'opposite': the reverse edit, scored target -> source]",
        "comparison_by_alpha": "[per signed alpha]",
        "comparison_paired": f"{table2_note(cases, table2_alpha)} [each sample's mean over its cases, paired on "
                             "sample ids; difference = row's run - 'against']",
        "comparison_seeds": f"{table2_note(cases, table2_alpha)} [runs differing only in {SEED_KEY}]",
    }


def comparison_frames(runs: list[Run]) -> tuple[str, dict[str, pd.DataFrame], str, dict[str, str]]:
    """(title, tables with cells, editing-time title, per-table notes) for several runs."""
    if not runs:
        raise AttneditError("give at least one run directory")
    metrics = _metrics(runs)
    reference, table2_alpha = study_settings(runs[0].config)
    table = _aggregate(runs, [], table2_alpha)
    if reference:
        table = with_reference(table, read_reference(reference), metrics)
    tables = {
        "comparison": table,
        "comparison_by_abs_alpha": _aggregate(runs, ["alpha_scale", "abs_alpha", "edit_sign"]),
        "comparison_by_alpha": _aggregate(runs, ["alpha_scale", ALPHA]),
        "comparison_editing_time": timing_table(runs),
    }
    labels = run_labels(runs)
    if len(runs) > 1 and all(SAMPLE_ID in r.frame for r in runs):
        tables["comparison_paired"] = paired_table(runs, labels, table2_alpha)
    if seed_runs(runs):
        tables["comparison_seeds"] = seeds_table(runs, table2_alpha)
    labelled = [r.frame.assign(method=label) for label, r in zip(labels, runs)]
    tables.update({f"comparison_{k}": v for k, v in factor_tables(pd.concat(labelled, ignore_index=True)).items()})
    names = sorted({str(r.config.get("name", r.run_dir.parent.name)) for r in runs})
    title = " ".join(filter(None, [" + ".join(names), comparison_notes(runs)]))
    return title, tables, timing_title(tables["comparison_editing_time"]), comparison_table_notes(runs, table2_alpha)


def comparison_table(run_dirs) -> pd.DataFrame:
    """Rows = methods (one per run), columns = method, n, samples, metrics (text cells)."""
    from attnedit.report.render import display

    runs = load_runs(run_dirs)
    return display(_aggregate(runs, [], _table2_alpha(runs)))


def build_comparison(run_dirs) -> tuple[str, dict[str, pd.DataFrame], str]:
    """(title, tables with text cells, editing-time title) for several runs."""
    from attnedit.report.render import display

    title, tables, time_title, _ = comparison_frames(load_runs(run_dirs))
    return title, {k: display(v) for k, v in tables.items()}, time_title


def build_several(runs: list[Run]) -> Report:
    """comparison{,_by_abs_alpha,_by_alpha,_editing_time,_paired,_seeds}.* in one folder."""
    title, frames, time_title, notes = comparison_frames(runs)
    tables = []
    for name, frame in frames.items():
        caption = f"{title} — {time_title}" if name == "comparison_editing_time" else title
        tables.append(Table(name, " ".join(filter(None, [caption, notes.get(name)])), frame))
    figures = []
    if "comparison_factor_directions" in frames:
        note = figure_note(pd.concat([r.frame for r in runs], ignore_index=True))
        figures.append(Figure("factor_benchmark.png", factor_plot(frames["comparison_factor_directions"], note),
                              {"dpi": 120, "bbox_inches": "tight"}))
    runs_json = json_text([str(r.run_dir.resolve()) for r in runs])
    return Report(tables, figures, {"comparison_runs.json": runs_json}, table_dir="", index="comparison_tables.md")


# -- the study interface (report/studies.py) -------------------------------------------
def matches(runs: list[Run]) -> bool:
    """Any runs: the SAD tables are the default study."""
    return bool(runs)


def build(runs: list[Run]) -> Report:
    return build_run(runs[0]) if len(runs) == 1 else build_several(runs)


def write_comparison(run_dirs, out_dir: str | Path | None = None) -> tuple[Path, str]:
    """Write the comparison tables into ``out_dir`` (default: the first run's tables/,
    beside its own tables); returns (the folder, the Markdown)."""
    from attnedit.report.render import write_report

    runs = load_runs(run_dirs)
    out = Path(out_dir) if out_dir is not None else runs[0].run_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    return out, write_report(build_several(runs), out)
