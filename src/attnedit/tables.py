"""Tables built from a run's rows: Markdown, CSV and LaTeX in <run dir>/tables/.

Metric columns are the ones the run's manifest lists. Cells are "mean ± std" over
cases (non-finite values skipped, their count reported), with n. Every title says when
the numbers come from random weights: test-only metric backbones or an untrained model.
Tables that average over alphas leave out alpha = 0 rows (the unedited sample: PSNR near
the float32 limit would swamp the means); the per-alpha tables keep them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from attnedit.dcag_runs import is_study_run
from attnedit.factors.benchmark import direction_scores, factor_figure, has_factor_columns, method_summary
from attnedit.numerical_floor import floor_title
from attnedit.reference import read_reference, with_reference
from attnedit.store import RunStore
from attnedit.timing import timing_table

RANDOM_BACKBONE_MARK = "[RANDOM-BACKBONE METRICS: test-only, not comparable to published numbers]"
RANDOM_MODEL_MARK = "[RANDOM MODEL WEIGHTS: demonstrates the machinery, not the method]"
EDIT_KEYS = ("layers", "position", "alpha_scale", "window_lo", "window_hi")
NO_EDIT_MARK = "[alpha = 0 rows (no edit) left out of the means over alphas]"


def metric_columns(run_dir: Path, frame: pd.DataFrame) -> list[str]:
    manifest = RunStore(run_dir).read_json("manifest.json")
    return [name for name in manifest.get("metric_order", manifest.get("metrics", {})) if name in frame]


def title_marks(frame: pd.DataFrame) -> str:
    marks = []
    if "random_backbone" in frame and frame.random_backbone.astype(bool).any():
        marks.append(RANDOM_BACKBONE_MARK)
    if "model_random_weights" in frame and frame.model_random_weights.astype(bool).any():
        marks.append(RANDOM_MODEL_MARK)
    if "alpha" in frame and (frame.alpha == 0).any() and (frame.alpha != 0).any():
        marks.append(NO_EDIT_MARK)
    return " ".join(marks)


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


def build_tables(run_dir: Path, frame: pd.DataFrame, reference: str | None = None) -> dict[str, pd.DataFrame]:
    metrics = metric_columns(run_dir, frame)
    edits = edits_only(frame)
    tables = {"summary": aggregate(edits, ["method", *EDIT_KEYS], metrics)}
    if reference:
        measured = aggregate(edits, ["method"], metrics)
        tables["table2"] = with_reference(measured, read_reference(reference), metrics)
    if "direction" in frame:
        tables["by_direction"] = aggregate(frame, ["method", "direction", "label", "alpha"], metrics)
    if "category" in frame and frame.category.notna().any():
        tables["by_category"] = aggregate(edits, ["method", "category"], metrics)
    tables["editing_time"] = timing_table([run_dir])  # discovery / per-edit / projected study time
    tables.update(factor_tables(frame))
    return tables


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
                                   floor_title(manifest.get("numerical_floor"))]))
    tables = build_tables(run_dir, frame, (manifest["config"].get("tables") or {}).get("reference"))
    markdown = []
    for name, table in tables.items():
        table.to_csv(store.tables_dir / f"{name}.csv", index=False)
        (store.tables_dir / f"{name}.tex").write_text(
            table.to_latex(index=False, escape=True, caption=_latex_escape(f"{title} — {name}"))
            .replace("±", r"$\pm$")
        )
        markdown.append(render_markdown(name, title, table))
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
