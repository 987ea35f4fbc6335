"""Several runs in one table, the SAD paper's Table 2 layout: a row per method, a column
per metric ("mean ± std" over cases), n; plus the same per edit strength, the editing-time
table, and the published rows when the runs' config names ``tables.reference``.

The comparison follows the Table 2 protocol of tables.py when the first run's config
sets ``tables.table2_alpha``: per method one case per (sample, direction), at alpha =
the sign of that method's own label of the direction x table2_alpha; its title says so
(and says "pooled" otherwise). ``comparison_by_abs_alpha`` shows every strength with the
label's sign and the opposite one; ``comparison_by_alpha`` every signed alpha.

Every title names each method's ``alpha_scale``, and says when the runs do not share
their samples, alphas or model weights (then the rows are not a like-for-like
comparison), and carries the random-weights marks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from attnedit.errors import AttneditError
from attnedit.reference import read_reference, with_reference
from attnedit.store import RunStore
from attnedit.factors.benchmark import factor_figure
from attnedit.tables import (
    _latex_escape,
    edits_only,
    factor_tables,
    mean_std,
    render_markdown,
    scale_note,
    study_settings,
    table2_cases,
    table2_note,
    title_marks,
    with_strength,
)
from attnedit.timing import timing_table, timing_title


@dataclass
class Run:
    run_dir: Path
    frame: pd.DataFrame
    manifest: dict

    @property
    def method(self) -> str:
        if "method" in self.frame and len(self.frame):
            return str(self.frame.method.iloc[0])
        return str((self.manifest.get("method") or {}).get("name", self.run_dir.name))

    @property
    def metrics(self) -> list[str]:
        names = self.manifest.get("metric_order", self.manifest.get("metrics", {}))
        return [n for n in names if n in self.frame]


def load_runs(run_dirs) -> list[Run]:
    runs = []
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "manifest.json").exists():
            raise AttneditError(f"{run_dir} is not a run directory (no manifest.json); "
                                "give the paths printed as 'run dir:' by attnedit-run")
        store = RunStore(run_dir)
        runs.append(Run(run_dir, store.read(), store.read_json("manifest.json")))
    return runs


def _labels(runs: list[Run]) -> list[str]:
    """Method names; a name shared by several runs gets its run signature appended."""
    names = [r.method for r in runs]
    return [f"{n} ({r.run_dir.name})" if names.count(n) > 1 else n for n, r in zip(names, runs)]


def _metrics(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(m for r in runs for m in r.metrics))


def _cases(run: Run, table2_alpha: float | None) -> pd.DataFrame:
    """A run's rows in the comparison table: Table 2's cases, or every edit (alpha = 0 left out)."""
    if table2_alpha is None:
        return edits_only(run.frame)
    return table2_cases(run.frame, table2_alpha, what=f"run {run.run_dir}")


def _aggregate(runs: list[Run], by: list[str], table2_alpha: float | None = None) -> pd.DataFrame:
    """Rows per run (and per ``by`` keys); without keys, the Table 2 cases of each run
    (``table2_alpha``, else every edit); with keys, every row but alpha = 0 unless "alpha" is a key."""
    metrics = _metrics(runs)
    rows = []
    for label, run in zip(_labels(runs), runs):
        if not by:
            frame, keys = _cases(run, table2_alpha), []
        else:
            frame = with_strength(run.frame)
            keys = [c for c in by if c in frame]
            frame = frame if "alpha" in keys else edits_only(frame)
        groups = frame.groupby(keys, sort=True, dropna=False) if keys else [((), frame)]
        for key, group in groups:
            key = key if isinstance(key, tuple) else (key,)
            row = {"method": label, **dict(zip(keys, key)), "n": len(group)}
            if not keys:
                row["samples"] = group.sample_id.nunique() if "sample_id" in group else None
            for metric in metrics:
                row[metric] = mean_std(group[metric]) if metric in group else "n/a"
            rows.append(row)
    return pd.DataFrame(rows)


def _table2_alpha(runs: list[Run]) -> float | None:
    return study_settings(runs[0].manifest["config"])[1] if runs else None


def comparison_table(run_dirs) -> pd.DataFrame:
    """Rows = methods (one per run), columns = method, n, samples, metrics."""
    runs = load_runs(run_dirs)
    return _aggregate(runs, [], _table2_alpha(runs))


def comparison_notes(runs: list[Run]) -> str:
    """Marks for the title: random weights, and what the runs do not share."""
    frame = pd.concat([r.frame.assign(method=label) for label, r in zip(_labels(runs), runs)], ignore_index=True)
    notes = [title_marks(frame), scale_note(frame)]
    checks = {
        "samples": lambda r: frozenset(r.frame.sample_id) if "sample_id" in r.frame else None,
        "alphas": lambda r: frozenset(r.frame.alpha) if "alpha" in r.frame else None,
        "model weights": lambda r: (r.manifest.get("model") or {}).get("weights_sha256_16"),
    }
    differ = [what for what, key in checks.items() if len({key(r) for r in runs}) > 1]
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
    }


def build_comparison(run_dirs) -> tuple[str, dict[str, pd.DataFrame], str]:
    """(title, tables, editing-time title) for several runs."""
    title, tables, time_title, _ = _build(load_runs(run_dirs))
    return title, tables, time_title


def _build(runs: list[Run]) -> tuple[str, dict[str, pd.DataFrame], str, dict[str, str]]:
    if not runs:
        raise AttneditError("give at least one run directory")
    metrics = _metrics(runs)
    reference, table2_alpha = study_settings(runs[0].manifest["config"])
    table = _aggregate(runs, [], table2_alpha)
    if reference:
        table = with_reference(table, read_reference(reference), metrics)
    tables = {
        "comparison": table,
        "comparison_by_abs_alpha": _aggregate(runs, ["alpha_scale", "abs_alpha", "edit_sign"]),
        "comparison_by_alpha": _aggregate(runs, ["alpha_scale", "alpha"]),
        "comparison_editing_time": timing_table([r.run_dir for r in runs]),
    }
    labelled = [r.frame.assign(method=label) for label, r in zip(_labels(runs), runs)]
    tables.update({f"comparison_{k}": v for k, v in factor_tables(pd.concat(labelled, ignore_index=True)).items()})
    names = sorted({str(r.manifest["config"].get("name", r.run_dir.parent.name)) for r in runs})
    title = " ".join(filter(None, [" + ".join(names), comparison_notes(runs)]))
    return title, tables, timing_title(tables["comparison_editing_time"]), comparison_table_notes(runs, table2_alpha)


def write_comparison(run_dirs, out_dir: str | Path | None = None) -> tuple[Path, str]:
    """Write comparison{,_by_abs_alpha,_by_alpha,_editing_time}.{md,csv,tex} into ``out_dir`` (default:
    the first run's tables/, beside its own tables); returns (the folder, the Markdown)."""
    run_dirs = [Path(d) for d in run_dirs]
    title, tables, time_title, notes = _build(load_runs(run_dirs))
    out = Path(out_dir) if out_dir is not None else run_dirs[0] / "tables"
    out.mkdir(parents=True, exist_ok=True)
    markdown = []
    for name, table in tables.items():
        caption = f"{title} — {time_title}" if name == "comparison_editing_time" else title
        caption = " ".join(filter(None, [caption, notes.get(name)]))
        table.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.tex").write_text(
            table.to_latex(index=False, escape=True, caption=_latex_escape(f"{caption} — {name}")).replace("±", r"$\pm$")
        )
        markdown.append(render_markdown(name, caption, table))
        (out / f"{name}.md").write_text(markdown[-1])
    text = "\n".join(markdown)
    (out / "comparison_tables.md").write_text(text)
    if "comparison_factor_directions" in tables:
        factor_figure(tables["comparison_factor_directions"], out / "factor_benchmark.png")
    (out / "comparison_runs.json").write_text(json.dumps([str(d.resolve()) for d in run_dirs], indent=2))
    return out, text
