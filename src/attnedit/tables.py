"""Tables built from a run's rows: Markdown, CSV and LaTeX in <run dir>/tables/.

Metric columns are the ones the run's manifest lists. Cells are "mean ± std" over
cases (non-finite values skipped, their count reported), with n. Every title says when
the numbers come from random weights (test-only metric backbones or an untrained model)
and how alpha is scaled (``alpha_scale``), and each table's title says which cases it
holds. Means over alphas leave out alpha = 0 rows (the unedited sample: PSNR near the
float32 limit would swamp them), and the summary is per |alpha|: weaker edits would
inflate fidelity (only by_category, and Table 2 without table2_alpha, pool strengths;
their titles say so).

Table 2 follows the SAD paper's protocol when the config sets ``tables.table2_alpha``:
one case per (sample, direction), 15 x 100 = 1500 in the study, at alpha = the sign of
the direction's label (methods/labeling.py) x table2_alpha. ``by_abs_alpha`` shows every
strength with the label's sign and the opposite one. Without the key Table 2 pools
every edit and its title says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from attnedit.dcag_runs import is_study_run
from attnedit.errors import ConfigError
from attnedit.factors.benchmark import direction_scores, factor_figure, has_factor_columns, method_summary
from attnedit.metric_settings import check_uniform
from attnedit.metrics.piebench import SSIM_CONVENTION_TEXT
from attnedit.numerical_floor import floor_title
from attnedit.reference import read_reference, with_reference
from attnedit.store import RunStore
from attnedit.timing import timing_table

RANDOM_BACKBONE_MARK = "[RANDOM-BACKBONE METRICS: test-only, not comparable to published numbers]"
RANDOM_MODEL_MARK = "[RANDOM MODEL WEIGHTS: demonstrates the machinery, not the method]"
EDIT_KEYS = ("layers", "position", "alpha_scale", "window_lo", "window_hi")
NO_EDIT_MARK = "[alpha = 0 rows (no edit) left out of the means over alphas]"
POOLED_MARK = "[pooled over every alpha: not the paper's one-strength Table 2; set tables.table2_alpha]"
# Per-row metric settings (column suffix -> is this value the reference's?): any other
# value is a named deviation that every title shows.
METRIC_SETTINGS = {
    "_templates": lambda v: v.startswith("stylegan_nada("),  # metrics/clip.py: StyleGAN-NADA's templates
    "_border": lambda v: v == "crop",  # metrics/fidelity.py: SSIM over the valid windows (Wang et al.)
}


def metric_columns(run_dir: Path, frame: pd.DataFrame) -> list[str]:
    manifest = RunStore(run_dir).read_json("manifest.json")
    names = [name for name in manifest.get("metric_order", manifest.get("metrics", {})) if name in frame]
    check_uniform(frame, names, run_dir)  # never one mean over values scored under different settings
    return names


def title_marks(frame: pd.DataFrame) -> str:
    marks = []
    if "random_backbone" in frame and frame.random_backbone.astype(bool).any():
        marks.append(RANDOM_BACKBONE_MARK)
    if "model_random_weights" in frame and frame.model_random_weights.astype(bool).any():
        marks.append(RANDOM_MODEL_MARK)
    if "alpha" in frame and (frame.alpha == 0).any() and (frame.alpha != 0).any():
        marks.append(NO_EDIT_MARK)
    for suffix, is_reference in METRIC_SETTINGS.items():
        for column in (c for c in frame.columns if c.endswith(suffix)):
            other = sorted({str(v) for v in frame[column].dropna() if not is_reference(str(v))})
            if other:
                marks.append(f"[{column[: -len(suffix)]}: {suffix[1:]} {', '.join(other)}, not the reference's]")
    marks += ssim_marks(frame)
    return " ".join(marks)


def scale_note(frame: pd.DataFrame) -> str:
    """What alpha means in these rows: "[alpha_scale=token_norm]", per method when they differ."""
    if "alpha_scale" not in frame or frame.alpha_scale.dropna().empty:
        return ""
    scales = frame.dropna(subset=["alpha_scale"])
    if "method" in scales and scales.alpha_scale.nunique() > 1:
        per_method = scales.groupby("method", sort=False).alpha_scale.unique()
        return "[alpha_scale: " + ", ".join(f"{m}={'/'.join(map(str, v))}" for m, v in per_method.items()) + "]"
    return f"[alpha_scale={scales.alpha_scale.iloc[0]}]"


def with_strength(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds ``abs_alpha`` and ``edit_sign``: "label" when alpha has the sign of the
    direction's label (``label_sign``, +1 for rows without one), "opposite", or "none"."""
    if "alpha" not in frame:
        return frame
    alpha = frame.alpha.astype(float)
    sign = frame.label_sign.fillna(1).astype(float) if "label_sign" in frame else 1.0
    edit_sign = np.where(alpha == 0, "none", np.where(np.sign(alpha) == sign, "label", "opposite"))
    return frame.assign(abs_alpha=alpha.abs(), edit_sign=edit_sign)


def table2_cases(frame: pd.DataFrame, abs_alpha: float, what: str = "the run") -> pd.DataFrame:
    """The SAD paper's Table 2 cases: one per (sample, direction), alpha = label sign x abs_alpha."""
    if "alpha" not in frame:
        return frame
    framed = with_strength(frame)
    chosen = framed[np.isclose(framed.abs_alpha, float(abs_alpha), rtol=0, atol=1e-9) & (framed.edit_sign == "label")]
    if chosen.empty:
        held = sorted({abs(float(a)) for a in frame.alpha if a != 0})
        raise ConfigError(f"tables.table2_alpha={abs_alpha} but {what} holds no edit at that |alpha| "
                          f"(|alpha| held: {held}); set tables.table2_alpha to one of them, or null to pool.")
    return chosen


def table2_note(cases: pd.DataFrame, abs_alpha: float | None) -> str:
    """The title part that says which cases Table 2 holds."""
    if abs_alpha is None:
        return POOLED_MARK
    note = f"[Table 2 protocol: one edit per (sample, direction), alpha = label sign x {float(abs_alpha):g}"
    if {"direction", "sample_id", "method"} <= set(cases.columns) and cases.method.nunique() == 1:
        note += (f": {len(cases)} cases = {cases.direction.nunique()} directions x "
                 f"{cases.sample_id.nunique()} samples")
    return note + "]"


def study_settings(config: dict) -> tuple[str | None, float | None]:
    """(reference CSV, Table 2 |alpha|) from a run's config ``tables`` node."""
    tables = config.get("tables") or {}
    abs_alpha = tables.get("table2_alpha")
    if abs_alpha is not None and not float(abs_alpha) > 0:
        raise ConfigError(f"tables.table2_alpha={abs_alpha} must be > 0 (the |alpha| of Table 2) or null")
    return tables.get("reference"), None if abs_alpha is None else float(abs_alpha)


def ssim_marks(frame: pd.DataFrame) -> list[str]:
    """How PIE-Bench SSIM columns averaged their map: rows record it in ``<metric>_convention``."""
    conventions = {}
    for column in (c for c in frame.columns if c.startswith("ssim") and c.endswith("_convention")):
        for convention in frame[column].dropna().unique():
            conventions.setdefault(str(convention), []).append(column.removesuffix("_convention"))
    return [f"[{', '.join(names)}: {SSIM_CONVENTION_TEXT.get(c, c)}]" for c, names in sorted(conventions.items())]


def edits_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that edit: without alpha = 0 (unless every row is alpha = 0)."""
    if "alpha" not in frame or not (frame.alpha != 0).any():
        return frame
    return frame[frame.alpha != 0]


def mean_std(values: pd.Series, digits: int = 4) -> str:
    values = values.astype(float)
    finite = values[values.map(math.isfinite)]
    if finite.empty:
        return "n/a"
    text = f"{finite.mean():.{digits}f} ± {finite.std(ddof=0):.{digits}f}"
    skipped = len(values) - len(finite)
    return text + (f" ({skipped} non-finite)" if skipped else "")


def aggregate(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    by = [c for c in by if c in frame]
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n"] = len(group)
        for metric in metrics:
            row[metric] = mean_std(group[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def build_tables(run_dir: Path, frame: pd.DataFrame, reference: str | None = None,
                 table2_alpha: float | None = None) -> dict[str, pd.DataFrame]:
    metrics = metric_columns(run_dir, frame)
    edits = with_strength(edits_only(frame))
    tables = {"summary": aggregate(edits, ["method", *EDIT_KEYS, "abs_alpha"], metrics)}
    if reference or table2_alpha is not None:
        cases = edits if table2_alpha is None else table2_cases(frame, table2_alpha)
        measured = aggregate(cases, ["method"], metrics)
        tables["table2"] = with_reference(measured, read_reference(reference), metrics) if reference else measured
    if "alpha" in frame:
        tables["by_abs_alpha"] = aggregate(edits, ["method", "abs_alpha", "edit_sign"], metrics)
    if "direction" in frame:
        tables["by_direction"] = aggregate(frame, ["method", "direction", "label", "label_sign", "alpha"], metrics)
    if "category" in frame and frame.category.notna().any():
        tables["by_category"] = aggregate(edits, ["method", "category"], metrics)
    tables["editing_time"] = timing_table([run_dir])  # discovery / per-edit / projected study time
    tables.update(factor_tables(frame))
    return tables


def table_notes(frame: pd.DataFrame, table2_alpha: float | None) -> dict[str, str]:
    """Per table, the title part that says which cases it holds."""
    notes = {
        "summary": "[per |alpha|, both signs]",
        "by_abs_alpha": "[edit_sign 'label': alpha has the sign of the direction's label (Table 2's cases); "
                        "'opposite': the reverse edit, scored target -> source]",
        "by_category": "[all edits pooled per category]",
    }
    if table2_alpha is not None or "alpha" in frame:
        cases = edits_only(frame) if table2_alpha is None else table2_cases(frame, table2_alpha)
        notes["table2"] = table2_note(cases, table2_alpha)
    return notes


def factor_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The factor benchmark (shapes model), when the rows carry the factor metric's columns."""
    if not has_factor_columns(frame):
        return {}
    scores = direction_scores(frame)
    return {"factor_directions": scores.round(4), "factor_methods": method_summary(scores).round(4)}


def render_markdown(name: str, title: str, table: pd.DataFrame) -> str:
    return f"### {title} — {name}\n\n{table.to_markdown(index=False)}\n"


def write_tables(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    run_dir = Path(run_dir)
    store = RunStore(run_dir)
    frame = store.read()
    if is_study_run(run_dir, frame):  # GRAG/DCAG (and their unedited) runs: per-(dk, dv) tables and figures
        from attnedit.dcag_report import write_report

        return write_report([run_dir]).tables
    manifest = store.read_json("manifest.json")
    title = " ".join(filter(None, [str(manifest["config"].get("name", run_dir.name)), title_marks(frame),
                                   scale_note(frame), floor_title(manifest.get("numerical_floor"))]))
    reference, table2_alpha = study_settings(manifest["config"])
    tables = build_tables(run_dir, frame, reference, table2_alpha)
    notes = table_notes(frame, table2_alpha)
    markdown = []
    for name, table in tables.items():
        caption = " ".join(filter(None, [title, notes.get(name)]))
        table.to_csv(store.tables_dir / f"{name}.csv", index=False)
        (store.tables_dir / f"{name}.tex").write_text(
            table.to_latex(index=False, escape=True, caption=_latex_escape(f"{caption} — {name}"))
            .replace("±", r"$\pm$")
        )
        markdown.append(render_markdown(name, caption, table))
        (store.tables_dir / f"{name}.md").write_text(markdown[-1])
    (store.tables_dir / "tables.md").write_text("\n".join(markdown))
    if "factor_directions" in tables:
        factor_figure(tables["factor_directions"], store.figures_dir / "factor_benchmark.png")
    (store.tables_dir / "meta.json").write_text(json.dumps({"title": title, "rows": len(frame)}, indent=2))
    return tables


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text.replace("±", r"$\pm$")
