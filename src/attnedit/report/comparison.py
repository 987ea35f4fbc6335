"""The comparison of several runs (SAD and its baselines, grid points, seeds), Markdown,
CSV and LaTeX through render.py.

The SAD paper's Table 2 layout: a row per run, a column per metric, n;
the same per edit strength and signed alpha, the editing-time table, the published rows
when the runs' config names ``tables.reference``. Runs are named by their method, and
runs sharing a method by the config keys in which they differ (runs.run_labels).
``comparison_paired``: every run against the first (SAD when it leads), per metric the
mean paired difference over the sample ids both hold (each sample's mean over its cases),
its CI and the Wilcoxon p-value (stats.py). Beside Directional CLIP, Table 2 shows each
method's label-shuffled null (``<metric>_null``, report/label_null.py) where its rows hold one,
and its title names the probe samples each method's labels were chosen on. ``comparison_seeds``: when the runs differ
only in ``dataset.first_seed``, per method the spread of the run means across seeds.
``comparison_references``: where a method samples otherwise than the study (pullback's
boosting), every run's metrics against each unedited image it was scored against
(report/scored_against.py).
Titles name each method's ``alpha_scale`` and say when the runs do not share their
samples, alphas or model weights (then the rows are not a like-for-like comparison).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnedit.columns import ALPHA, METHOD, SAMPLE_ID, SAMPLES, N
from attnedit.errors import AttneditError, ConfigError
from attnedit.factors.benchmark import factor_plot
from attnedit.report.cells import group_cell, paired_cell, spread_cell
from attnedit.report.label_null import null_cell, null_columns, null_note, probes_note
from attnedit.report.marks import forced_clipping, scale_note, title_marks
from attnedit.report.figures_sad import comparison_figures
from attnedit.report.plots import figure_note
from attnedit.report.reference import read_reference, with_reference
from attnedit.report.render import Figure, Report, Table, as_notes, display, json_text
from attnedit.report.runs import Run, differing_keys, load_runs, run_labels
from attnedit.report.scored_against import NOTE as REFERENCES_NOTE
from attnedit.report.scored_against import has_own_sampler, references_table
from attnedit.report.sad import edits_only, factor_tables, study_settings, table2_cases, table2_note, with_strength
from attnedit.report.stats import paired
from attnedit.report.timing import Projection, timing_table, timing_title

SEED_KEY = "dataset.first_seed"


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


def with_label_null(table: pd.DataFrame, runs: list[Run], table2_alpha: float | None) -> pd.DataFrame:
    """Table 2 with ``<metric>_null`` beside each metric whose rows hold a label-shuffled
    null (report/label_null.py): per method, mean ± std over label permutations."""
    for metric in _metrics(runs):
        if not any(null_columns(r.frame, metric) for r in runs):
            continue
        cells = [null_cell(_cases(run, table2_alpha), metric) for run in runs]
        table.insert(table.columns.get_loc(metric) + 1, f"{metric}_null", cells)
    return table


def comparison_table_notes(runs: list[Run], table2_alpha: float | None) -> dict[str, str]:
    """Per table, the title part that says which cases it holds."""
    cases = pd.concat([_cases(r, table2_alpha) for r in runs], ignore_index=True)
    frames = [r.frame for r in runs]
    labels = " ".join(filter(None, [*(null_note(frames, m) for m in _metrics(runs)),
                                    probes_note(frames, run_labels(runs))]))
    return {
        "comparison": " ".join(filter(None, [table2_note(cases, table2_alpha), labels])),
        "comparison_by_abs_alpha": "[edit_sign 'label': alpha has the sign of the method's label of the direction "
                                   "(Table 2's cases); 'opposite': the reverse edit, scored target -> source]",
        "comparison_by_alpha": "[per signed alpha]",
        "comparison_paired": f"{table2_note(cases, table2_alpha)} [each sample's mean over its cases, paired on "
                             "sample ids; difference = row's run - 'against']",
        "comparison_seeds": f"{table2_note(cases, table2_alpha)} [runs differing only in {SEED_KEY}]",
        "comparison_references": f"{table2_note(cases, table2_alpha)} {REFERENCES_NOTE}",
    }


def check_one_sampler(runs: list[Run]) -> None:
    """Methods compared must share one DDIM sampler: runs of different methods whose rows
    record different ``clip_sample`` are an error (runs of one method may differ in it:
    that compares the option). A run made before rows recorded ``clip_sample`` sampled as
    the checkpoint's config says (``clip_sample_pipeline``, unforced); beside a run that
    forced another setting it is an error whatever the methods, since its setting is
    inferred, not recorded."""
    unrecorded = [r for r in runs if "clip_sample" not in r.frame]
    forced = {f"{r.method} ({r.run_dir})": values for r in runs if (values := forced_clipping(r.frame))}
    if unrecorded and forced:
        old = ", ".join(f"{r.method} ({r.run_dir})" for r in unrecorded)
        new = "; ".join(f"{name}: clip_sample={'/'.join(map(str, v))}" for name, v in forced.items())
        raise ConfigError(f"run(s) {old} predate the clip_sample column, so they sampled as the checkpoint's scheduler "
                          f"config says, but {new} forced model.clip_sample otherwise: a comparison needs one sampler; "
                          "rerun the former with this version at the latter's model.clip_sample, or the latter "
                          "with model.clip_sample=null")
    clipped: dict[bool, set[str]] = {}
    for run in runs:
        if "clip_sample" in run.frame:
            for value in run.frame["clip_sample"].dropna().unique():
                clipped.setdefault(bool(value), set()).add(run.method)
    if len(clipped) > 1 and len(set().union(*clipped.values())) > 1:
        said = "; ".join(f"clip_sample={v}: {', '.join(sorted(m))}" for v, m in sorted(clipped.items()))
        raise ConfigError(f"the methods were sampled with different model.clip_sample ({said}); a comparison needs "
                          "one sampler for every method: rerun them with one model.clip_sample")


def comparison_frames(runs: list[Run], projection: Projection | None = None
                      ) -> tuple[str, dict[str, pd.DataFrame], str, dict[str, str]]:
    """(title, tables with cells, editing-time title, per-table notes) for several runs;
    ``projection``: the editing time projected to another study too."""
    if not runs:
        raise AttneditError("give at least one run directory")
    check_one_sampler(runs)
    metrics = _metrics(runs)
    reference, table2_alpha = study_settings(runs[0].config)
    table = with_label_null(_aggregate(runs, [], table2_alpha), runs, table2_alpha)
    if reference:
        table = with_reference(table, read_reference(reference), metrics)
    tables = {
        "comparison": table,
        "comparison_by_abs_alpha": _aggregate(runs, ["alpha_scale", "abs_alpha", "edit_sign"]),
        "comparison_by_alpha": _aggregate(runs, ["alpha_scale", ALPHA]),
        "comparison_editing_time": timing_table(runs, projection),
    }
    labels = run_labels(runs)
    if len(runs) > 1 and all(SAMPLE_ID in r.frame for r in runs):
        tables["comparison_paired"] = paired_table(runs, labels, table2_alpha)
    if seed_runs(runs):
        tables["comparison_seeds"] = seeds_table(runs, table2_alpha)
    if has_own_sampler([r.frame for r in runs]):  # a method scored against its own sampler's unedited image
        tables["comparison_references"] = references_table(labels, [_cases(r, table2_alpha) for r in runs], metrics)
    labelled = [r.frame.assign(method=label) for label, r in zip(labels, runs)]
    tables.update({f"comparison_{k}": v for k, v in factor_tables(pd.concat(labelled, ignore_index=True)).items()})
    names = sorted({str(r.config.get("name", r.run_dir.parent.name)) for r in runs})
    title = " ".join(filter(None, [" + ".join(names), comparison_notes(runs)]))
    time_title = timing_title(tables["comparison_editing_time"], projection)
    return title, tables, time_title, comparison_table_notes(runs, table2_alpha)


def comparison_table(run_dirs) -> pd.DataFrame:
    """Rows = methods (one per run), columns = method, n, samples, metrics (text cells)."""
    runs = load_runs(run_dirs)
    return display(_aggregate(runs, [], _table2_alpha(runs)))


def build_comparison(run_dirs) -> tuple[str, dict[str, pd.DataFrame], str]:
    """(title, tables with text cells, editing-time title) for several runs."""
    title, tables, time_title, _ = comparison_frames(load_runs(run_dirs))
    return title, {k: display(v) for k, v in tables.items()}, time_title


def build_several(runs: list[Run], projection: Projection | None = None) -> Report:
    """comparison{,_by_abs_alpha,_by_alpha,_editing_time,_paired,_seeds}.* in one folder."""
    title, frames, time_title, notes = comparison_frames(runs, projection)
    tables = []
    for name, frame in frames.items():
        caption = f"{title} {as_notes(time_title)}" if name == "comparison_editing_time" else title
        tables.append(Table(name, " ".join(filter(None, [caption, notes.get(name)])), frame))
    figures = []
    if "comparison_factor_directions" in frames:
        note = figure_note(pd.concat([r.frame for r in runs], ignore_index=True))
        figures.append(Figure("factor_benchmark.png", factor_plot(frames["comparison_factor_directions"], note),
                              {"dpi": 120, "bbox_inches": "tight"}))
    names = " + ".join(sorted({str(r.config.get("name", r.run_dir.parent.name)) for r in runs}))
    figures += comparison_figures(runs, run_labels(runs), names)  # curves, trade-off, methods side by side
    runs_json = json_text([str(r.run_dir.resolve()) for r in runs])
    return Report(tables, figures, {"comparison_runs.json": runs_json}, table_dir="", index="comparison_tables.md")
