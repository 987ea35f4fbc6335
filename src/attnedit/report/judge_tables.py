"""Tables of VLM-judged editability: GEdit-Bench (VIEScore "tie": SC, PQ, O) and
ImgEdit-Basic (rubric item scores), aggregated as the official scripts aggregate, with
bootstrap CIs, the judge's own noise when a case was judged in several passes, and the
agreement of two judges.

Rows (attnedit.judge.metric): one per case with ``sample_id``, ``method``, ``category``
(GEdit task type, ImgEdit edit type), the judge's columns (VIEScore ``<p>_sc``, ``<p>_pq``,
``<p>_o``; ImgEdit ``<p>``; ``p`` the judge's prefix), each with ``<column>_failed`` and
``<column>_passes`` (JSON list of the value of each pass; the column holds their mean),
``intersection_exist`` (GEdit), ``failed`` (the case raised) and ``judge_stack`` (JSON
``{prefix: stack hash}``).

Protocol facts (stepfun-ai/Step1X-Edit @ 570eba6, GEdit-Bench/<file>; PKU-YuanGroup/ImgEdit
@ 547185d, Benchmark/Basic/<file>):

- GEdit (calculate_statistics.py): per task type, the means of the per-sample SC, PQ and
  O = sqrt(SC x PQ) (line 56; means lines 66-68); then the unweighted mean of the 11 type
  means in the GROUPS order (lines 9-11, 85-117): a type of 40 samples weighs as much as
  one of 99. The same over the samples with ``intersection_exist`` true (lines 61-64,
  73-75). Only rows whose ``instruction_language`` equals ``--language`` count (line 51).
  An unparsable reply is replaced there by a random integer (viescore/utils.py lines 187,
  273); here a failed judge call is counted (n_failed) and left out, never filled.
  With several passes a sample's O is its ``<p>_o``, the mean over passes of each pass's
  sqrt(SC x PQ); the official CSV (judge_official) holds the pass means of SC and PQ, from
  which calculate_statistics recomputes sqrt(SC x PQ). With one pass both are the same.
- ImgEdit: item score = round(mean of its criteria, 2) (step1_get_avgscore.py line 12);
  type score = round(mean of its items, 2) (step2_typescore.py line 15). No official
  script computes an overall score: ``overall (items)`` (the mean over items, the
  default) and ``overall (types)`` (the unweighted mean of the type scores) are both given.

Statistics: a type's CI is stats.mean_ci over its samples; an average over types resamples
within each type (stratified); with several passes per case the bootstrap resamples
images, then passes within each resampled image (:func:`bootstrap_ci`), and the judge sd
is the mean over images of the per-image std over passes (ddof=1).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import stats as sps

from attnedit.columns import (
    CATEGORY,
    CI_HIGH,
    CI_LOW,
    MEAN,
    METHOD,
    N,
    N_FAILED,
    N_FINITE,
    N_NAN,
    SAMPLE_ID,
    STD,
    failed_mask,
)
from attnedit.errors import ConfigError, DataError
from attnedit.report.cells import CI_LABEL, Cell, stat_cell
from attnedit.report.render import Table
from attnedit.report.stats import LEVEL, RESAMPLES, SEED, mean_ci

#: calculate_statistics.py lines 9-11: the task types, in the order the script averages them.
GEDIT_GROUPS = ("background_change", "color_alter", "material_alter", "motion_change", "ps_human", "style_change",
                "subject-add", "subject-remove", "subject-replace", "text_change", "tone_transfer")
#: The edit types with a rubric, in the order of Benchmark/Basic/prompts.json.
IMGEDIT_TYPES = ("replace", "add", "adjust", "remove", "style", "action", "extract", "background", "compose")
STACK_COLUMN = "judge_stack"
INTERSECTION = "intersection_exist"
LANGUAGE = "instruction_language"
DEFAULT_LANGUAGE = "en"
SC, PQ, O = "SC", "PQ", "O"
SUFFIXES = {SC: "_sc", PQ: "_pq", O: "_o"}  # the VIEScore columns of a prefix
SUBSET, TYPE = "subset", "type"
FULL, INTERSECTION_SUBSET = "full", "intersection"
AVERAGE = "average"
OVERALL_ITEMS, OVERALL_TYPES = "overall (items)", "overall (types)"
SCORE = "score"
PASS_SD = "judge_sd"  # a cell's number: mean over images of the std over passes
JUDGE_SD = "judge sd"  # the column of those numbers beside each score column
PASS_NOTE = (f"several passes per case: CIs resample images, then passes within each resampled image "
             f"({RESAMPLES} resamples, seed {SEED}); {JUDGE_SD}: mean over images of the std over passes (ddof=1)")


def scored(frame: pd.DataFrame, column: str) -> pd.Series:
    """True where ``column`` was judged: the case ran and ``<column>_failed`` is not set."""
    return ~failed_mask(frame, column)


def check_stack(frame: pd.DataFrame, prefix: str, columns: list[str], where: object = "rows") -> None:
    """Refuse (one line) a judge whose scored rows (any of ``columns`` scored) were judged by
    different judge stacks (model, weights, prompts, decoding...); rows without a record
    count as one stack."""
    if STACK_COLUMN not in frame or frame.empty:
        return
    rows = frame[np.logical_or.reduce([scored(frame, c).to_numpy() for c in columns])]
    records = [json.loads(v) if isinstance(v, str) and v else {} for v in rows[STACK_COLUMN]]
    hashes = {str(r.get(prefix, "not recorded")) for r in records}
    if len(hashes) > 1:
        raise ConfigError(
            f"{where}: judge '{prefix}' ({', '.join(columns)}) holds scores from different judge stacks "
            f"({', '.join(sorted(hashes))}; see manifest.json judge_stacks); rescore it whole with one judge: "
            f"attnedit-rescore {where} metrics=<the judge's metric group>")


def gedit_columns(prefix: str) -> list[str]:
    return [prefix + SUFFIXES[m] for m in (SC, PQ, O)]


# -- the bootstrap -----------------------------------------------------------------------
def bootstrap_ci(strata: list[list], level: float = LEVEL, resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile CI of the mean over strata of each stratum's mean over images, an image's
    value being the mean of its passes. ``strata``: per stratum, its images' pass values
    (non-empty finite 1-D arrays). One stratum of single passes is stats.mean_ci exactly.

    Otherwise, from ``numpy.random.default_rng(seed)``, stratum by stratum: the images
    ``integers(0, n, (resamples, n))``, then, where an image of the stratum has several
    passes, ``random((resamples, n, kmax))``: pass j of resampled slot (r, s), an image of k
    passes, is ``floor(u[r, s, j] * k)`` for j < k. (nan, nan) when a stratum is empty."""
    strata = [[np.asarray(p, dtype=float).ravel() for p in images] for images in strata]
    if not strata or any(len(images) == 0 for images in strata):
        return float("nan"), float("nan")
    if len(strata) == 1 and all(len(p) == 1 for p in strata[0]):
        return mean_ci([p[0] for p in strata[0]], level, resamples, seed)
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for images in strata:
        n, counts = len(images), np.array([len(p) for p in images])
        padded = np.zeros((n, counts.max()))
        for i, p in enumerate(images):
            padded[i, :len(p)] = p
        picks = rng.integers(0, n, size=(resamples, n))
        if counts.max() == 1:
            means = padded[picks, 0]
        else:
            k = counts[picks]
            slots = np.floor(rng.random((resamples, n, counts.max())) * k[..., None]).astype(int)
            drawn = padded[picks[..., None], slots]
            means = np.where(np.arange(counts.max()) < k[..., None], drawn, 0.0).sum(axis=-1) / k
        total += means.mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(total / len(strata), [tail, 100 - tail])
    return float(low), float(high)


def between_pass_sd(images: list) -> tuple[float, int]:
    """(mean over the images with >= 2 passes of the std over their passes, ddof=1; their count)."""
    sds = [float(np.std(p, ddof=1)) for p in images if len(p) > 1]
    return (float(np.mean(sds)) if sds else float("nan")), len(sds)


# -- per-row values ----------------------------------------------------------------------
def _pass_values(value) -> np.ndarray:
    """The finite numbers of a ``<column>_passes`` record (JSON list; NaN for a failed pass)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return np.zeros(0)
    if not isinstance(value, (list, tuple, np.ndarray)):
        return np.zeros(0)
    numbers = [float(v) for v in value if isinstance(v, (int, float, np.integer, np.floating))
               and not isinstance(v, bool)]
    return np.asarray([v for v in numbers if math.isfinite(v)], dtype=float)


def column_values(rows: pd.DataFrame, column: str, decimals: int | None = None) -> pd.DataFrame:
    """Per row: ``value`` (NaN where not judged), ``judged``, ``passes`` (the pass values,
    where the row has several; else the value alone); ``decimals``: values and passes rounded."""
    ok = scored(rows, column)
    value = pd.to_numeric(rows[column], errors="coerce").astype(float).where(ok)
    if decimals is not None:  # Python's round, as the official scripts (numpy's differs on some halves)
        value = value.map(lambda v: round(v, decimals) if math.isfinite(v) else v)
    records = rows[f"{column}_passes"] if f"{column}_passes" in rows else [None] * len(rows)
    passes = []
    for record, v in zip(records, value):
        several = _pass_values(record)
        if decimals is not None:
            several = np.array([round(p, decimals) for p in several])
        passes.append(several if len(several) > 1 else np.array([v]))
    return pd.DataFrame({"value": value, "judged": ok, "passes": pd.Series(passes, index=rows.index, dtype=object)},
                        index=rows.index)


def _finite_passes(values: pd.DataFrame) -> list[np.ndarray]:
    keep = values["judged"].to_numpy() & np.isfinite(values["value"].to_numpy(dtype=float))
    return [p for p, k in zip(values["passes"], keep) if k]


def _several(values: list[pd.DataFrame]) -> bool:
    return any(len(p) > 1 for v in values for p in v.loc[v["judged"], "passes"])


def _mean(values: pd.DataFrame) -> float:
    kept = values.loc[values["judged"], "value"].to_numpy(dtype=float)
    kept = kept[np.isfinite(kept)]
    return float(np.mean(kept)) if len(kept) else float("nan")


# -- cells ---------------------------------------------------------------------------------
def _ci_text(low: float, high: float) -> str:
    return "n/a" if not math.isfinite(low) else f"[{low:.4f}, {high:.4f}]"


def type_cell(values: pd.DataFrame, several: bool, rounded: bool = False) -> Cell:
    """Mean ± std over the judged rows of one type (column_values), n_failed = rows not
    judged; ``several``: the two-level CI and the judge sd; ``rounded``: the mean to 2
    decimals (ImgEdit's type score)."""
    cell = stat_cell(values.loc[values["judged"], "value"], int((~values["judged"]).sum()))
    numbers, extra, text = dict(cell.numbers), dict(cell.extra), cell.text
    if rounded and math.isfinite(numbers[MEAN]):
        kept = [float(v) for v in values.loc[values["judged"], "value"] if math.isfinite(v)]
        numbers[MEAN] = round(sum(kept) / len(kept), 2)  # step2_typescore.py line 15, in Python floats
        text = f"{numbers[MEAN]:.2f} ± {numbers[STD]:.4f}" + (
            f" ({numbers[N_NAN]} non-finite)" if numbers[N_NAN] else "")
    if several:
        images = _finite_passes(values)
        numbers[CI_LOW], numbers[CI_HIGH] = bootstrap_ci([images])
        numbers[PASS_SD] = between_pass_sd(images)[0]
        extra[CI_LABEL] = _ci_text(numbers[CI_LOW], numbers[CI_HIGH])
    return replace(cell, text=text, numbers=numbers, extra=extra)


def average_cell(parts: list[pd.DataFrame], several: bool, means: list[float] | None = None,
                 counted: list[pd.DataFrame] | None = None) -> Cell:
    """The unweighted mean over types of the type means (``means``, default: each part's
    mean over its judged rows; NaN when a type has none, as np.mean in the official), its
    CI resampling within each type (bootstrap_ci's strata); ``counted``: the rows its
    counts cover (default ``parts``)."""
    means = [_mean(part) for part in parts] if means is None else means
    mean = float(np.mean(means)) if means else float("nan")
    low, high = bootstrap_ci([_finite_passes(part) for part in parts])
    return _summary_cell(counted or parts, mean, low, high, several)


def pooled_cell(parts: list[pd.DataFrame], several: bool) -> Cell:
    """The mean over every judged row of ``parts`` together (ImgEdit's overall over items)."""
    every = pd.concat(parts)
    low, high = bootstrap_ci([_finite_passes(every)]) if len(every) else (float("nan"), float("nan"))
    return _summary_cell(parts, _mean(every), low, high, several)


def _summary_cell(parts: list[pd.DataFrame], mean: float, low: float, high: float, several: bool) -> Cell:
    every = pd.concat(parts)
    kept = every.loc[every["judged"], "value"].to_numpy(dtype=float)
    n = int(np.isfinite(kept).sum())
    numbers = {MEAN: mean, STD: float("nan"), CI_LOW: low, CI_HIGH: high, N_FINITE: n,
               N_NAN: len(kept) - n, N_FAILED: int((~every["judged"]).sum())}
    if several:
        numbers[PASS_SD] = between_pass_sd(_finite_passes(every))[0]
    text = "n/a" if not math.isfinite(mean) else f"{mean:.4f}"
    return Cell(text, numbers, {CI_LABEL: _ci_text(low, high), N_NAN: str(numbers[N_NAN]),
                                N_FAILED: str(numbers[N_FAILED])})


def _sd_cell(cell: Cell) -> Cell:
    sd = cell.numbers.get(PASS_SD, float("nan"))
    return Cell("n/a" if not math.isfinite(sd) else f"{sd:.4f}", {MEAN: sd})


def _row(keys: dict, cells: dict[str, Cell], several: bool) -> dict:
    row = {**keys, **cells}
    if several:
        row.update({f"{m} {JUDGE_SD}": _sd_cell(cell) for m, cell in cells.items()})
    return row


def _groups(frame: pd.DataFrame) -> list[tuple[str, str | None, pd.DataFrame]]:
    """(method, language or None, rows): one table each; the language only where the rows hold several."""
    languages = frame[LANGUAGE].fillna(DEFAULT_LANGUAGE).astype(str) if LANGUAGE in frame else None
    several = languages is not None and languages.nunique() > 1
    out = []
    for method, rows in frame.groupby(METHOD, sort=False):
        if several:
            out += [(str(method), str(language), part) for language, part in rows.groupby(languages[rows.index])]
        else:
            out.append((str(method), None, rows))
    return out


def _table(prefix: str, method: str, language: str | None, title: str, notes: list[str],
           frame: pd.DataFrame) -> Table:
    name = "_".join(filter(None, [prefix, method, language]))
    title += f", method {method}" + (f", language {language}" if language else "")
    return Table(name, " ".join([title, *(f"[{n}]" for n in notes)]), frame)


# -- GEdit -------------------------------------------------------------------------------
def gedit_table(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Rows: subset (full, intersection) x (the 11 types, average); columns SC, PQ, O (and
    each one's judge sd with several passes)."""
    values = {m: column_values(rows, prefix + SUFFIXES[m]) for m in (SC, PQ, O)}
    several = _several(list(values.values()))
    category = rows[CATEGORY].astype(str)
    intersection = rows[INTERSECTION].fillna(False).astype(bool) if INTERSECTION in rows \
        else pd.Series(False, index=rows.index)
    out = []
    for subset, mask in ((FULL, pd.Series(True, index=rows.index)), (INTERSECTION_SUBSET, intersection)):
        parts = {m: [v[mask & (category == group)] for group in GEDIT_GROUPS] for m, v in values.items()}
        for i, group in enumerate(GEDIT_GROUPS):
            cells = {m: type_cell(p[i], several) for m, p in parts.items()}
            out.append(_row({SUBSET: subset, TYPE: group, N: len(parts[SC][i])}, cells, several))
        cells = {m: average_cell(p, several) for m, p in parts.items()}
        out.append(_row({SUBSET: subset, TYPE: AVERAGE, N: sum(map(len, parts[SC]))}, cells, several))
    return pd.DataFrame(out)


def gedit_tables(frame: pd.DataFrame, prefix: str, where: object = "rows") -> list[Table]:
    """One table per method (and language, where the rows hold several) of a GEdit judge."""
    check_stack(frame, prefix, gedit_columns(prefix), where)
    tables = []
    for method, language, rows in _groups(frame):
        table = gedit_table(rows, prefix)
        outside = int((~rows[CATEGORY].astype(str).isin(GEDIT_GROUPS)).sum())
        notes = [
            "per type: the mean of the per-sample SC, PQ and O = sqrt(SC x PQ); average: the UNWEIGHTED mean of "
            "the 11 type means, its CI resampling within each type (stepfun-ai/Step1X-Edit @ 570eba6, "
            "GEdit-Bench/calculate_statistics.py lines 56, 66-68, 85-117); intersection: the samples with "
            "intersection_exist true",
            "failed judge calls and failed cases: counted in n_failed and left out of the means, never filled "
            "(the official scorer fills an unparsable reply with a random integer 0-10: viescore/utils.py "
            "lines 187, 273)",
        ]
        if outside:
            notes.append(f"{outside} rows of categories outside the 11 GEdit task types left out")
        if any(JUDGE_SD in c for c in table.columns):
            notes.append(PASS_NOTE + "; O per sample: the mean over passes of sqrt(SC x PQ)")
        tables.append(_table(prefix, method, language, f"GEdit-Bench {prefix} (VIEScore tie)", notes, table))
    return tables


def official_gedit_rows(frame: pd.DataFrame, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows an official per-group CSV holds: key, group, SC, PQ, intersection, language,
    instruction; the rows left out: key, group, reason). Left out: failed cases, failed judge
    calls (SC or PQ), categories outside the 11 types."""
    sc, pq = (column_values(frame, prefix + SUFFIXES[m]) for m in (SC, PQ))
    category = frame[CATEGORY].astype(str)
    kept = pd.DataFrame({
        "key": frame[SAMPLE_ID].astype(str), "group": category, SC: sc["value"], PQ: pq["value"],
        "intersection": frame[INTERSECTION].fillna(False).astype(bool) if INTERSECTION in frame else False,
        "language": frame[LANGUAGE].fillna(DEFAULT_LANGUAGE).astype(str) if LANGUAGE in frame else DEFAULT_LANGUAGE,
        "instruction": frame["instruction"].fillna("").astype(str) if "instruction" in frame else "",
    }, index=frame.index)
    reason = pd.Series("", index=frame.index, dtype=object)
    reason[~category.isin(GEDIT_GROUPS)] = "not a GEdit task type"
    unscored = (reason == "") & ~(np.isfinite(sc["value"]) & np.isfinite(pq["value"]))
    reason[unscored] = "no score"
    call_failed = unscored & ~(sc["judged"] & pq["judged"])
    reason[call_failed] = judge_errors(frame, prefix, call_failed)
    reason[unscored & failed_mask(frame)] = "case failed"
    left = kept.loc[reason != "", ["key", "group"]].assign(reason=reason[reason != ""])
    return kept[reason == ""], left


def _one_method(frame: pd.DataFrame) -> None:
    if METHOD in frame and frame[METHOD].nunique() > 1:
        raise DataError(f"the official numbers are per method; pass one method's rows "
                        f"(got {', '.join(map(str, frame[METHOD].unique()))})")


def official_gedit_numbers(frame: pd.DataFrame, prefix: str, language: str = DEFAULT_LANGUAGE) -> dict:
    """What calculate_statistics.py would print (unrounded; it prints 3 decimals) for the
    per-group CSVs judge_official writes from these rows (one method):
    ``{"full" | "intersection": {group | "average": {"SC", "PQ", "O"}}}``, plain floats; NaN
    where a type has no sample (np.mean of an empty list there)."""
    _one_method(frame)
    kept, _ = official_gedit_rows(frame, prefix)
    kept = kept[kept["language"] == language]  # line 51
    out = {}
    for subset in (FULL, INTERSECTION_SUBSET):
        rows = kept if subset == FULL else kept[kept["intersection"]]
        per_group = {}
        for group in GEDIT_GROUPS:
            part = rows[rows["group"] == group]
            sc, pq = part[SC].tolist(), part[PQ].tolist()
            overall = [math.sqrt(s * q) for s, q in zip(sc, pq)]
            per_group[group] = {m: _np_mean(v) for m, v in ((SC, sc), (PQ, pq), (O, overall))}
        per_group[AVERAGE] = {m: float(np.mean([per_group[g][m] for g in GEDIT_GROUPS])) for m in (SC, PQ, O)}
        out[subset] = per_group
    return out


def _np_mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")  # np.mean([]): nan (with a warning)


# -- ImgEdit -----------------------------------------------------------------------------
def imgedit_types(categories: pd.Series) -> list[str]:
    """The 9 rubric types in prompts.json order, then any other type present, sorted."""
    return [*IMGEDIT_TYPES, *sorted(set(categories.astype(str)) - set(IMGEDIT_TYPES))]


def imgedit_table(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Rows: the types, overall (items), overall (types); column score (and its judge sd)."""
    values = column_values(rows, prefix, decimals=2)
    several = _several([values])
    category = rows[CATEGORY].astype(str)
    out, parts, type_means = [], [], []
    for kind in imgedit_types(category):
        part = values[category == kind]
        cell = type_cell(part, several, rounded=True)
        out.append(_row({TYPE: kind, N: len(part)}, {SCORE: cell}, several))
        if math.isfinite(cell.numbers[MEAN]):
            parts.append(part)
            type_means.append(cell.numbers[MEAN])
    out.append(_row({TYPE: OVERALL_ITEMS, N: len(values)}, {SCORE: pooled_cell([values], several)}, several))
    types = average_cell(parts, several, type_means, [values]) if parts else pooled_cell([values], several)
    out.append(_row({TYPE: OVERALL_TYPES, N: len(values)}, {SCORE: types}, several))
    return pd.DataFrame(out)


def imgedit_tables(frame: pd.DataFrame, prefix: str, where: object = "rows") -> list[Table]:
    """One table per method of an ImgEdit judge."""
    check_stack(frame, prefix, [prefix], where)
    tables = []
    for method, language, rows in _groups(frame):
        table = imgedit_table(rows, prefix)
        notes = [
            "item: round(mean of its criteria, 2); type: round(mean of its items, 2) (PKU-YuanGroup/ImgEdit @ "
            "547185d, Benchmark/Basic/step1_get_avgscore.py line 12, step2_typescore.py line 15)",
            f"no official script computes an overall score: '{OVERALL_ITEMS}' (the DEFAULT) is the mean over "
            f"every item; '{OVERALL_TYPES}' the unweighted mean of the type scores, its CI resampling within "
            "each type",
            "failed judge calls and failed cases: counted in n_failed and left out (the official step1 drops a "
            "reply without scores, step1_get_avgscore.py lines 11-13)",
        ]
        if any(JUDGE_SD in c for c in table.columns):
            notes.append(PASS_NOTE)
        tables.append(_table(prefix, method, language, f"ImgEdit-Basic {prefix}", notes, table))
    return tables


def official_imgedit_numbers(frame: pd.DataFrame, prefix: str) -> dict:
    """The numbers step1 and step2 write for these rows (one method), plain floats:
    ``items`` {key: item score} (average_score.json, row order), ``types`` {type: score}
    (typescore.json, types in order of first appearance, as step2's dict fills), and the
    two overall scores no official script computes: ``overall_items`` (mean over items)
    and ``overall_types`` (mean of the type scores)."""
    _one_method(frame)
    values = column_values(frame, prefix, decimals=2)
    keep = values["judged"] & np.isfinite(values["value"])
    items = {str(k): float(v) for k, v in zip(frame.loc[keep, SAMPLE_ID], values.loc[keep, "value"])}
    by_type: dict[str, list[float]] = {}
    for kind, score in zip(frame.loc[keep, CATEGORY].astype(str), values.loc[keep, "value"]):
        by_type.setdefault(kind, []).append(float(score))
    types = {kind: round(sum(scores) / len(scores), 2) for kind, scores in by_type.items()}
    return {"items": items, "types": types,
            "overall_items": float(np.mean(list(items.values()))) if items else float("nan"),
            "overall_types": float(np.mean(list(types.values()))) if types else float("nan")}


# -- agreement ---------------------------------------------------------------------------
def _judge_of(column: str) -> str:
    """The judge prefix of a column (``<p>_sc`` -> ``<p>``; an ImgEdit column is its prefix)."""
    for suffix in SUFFIXES.values():
        if column.endswith(suffix):
            return column[: -len(suffix)]
    return column


def _judged_values(frame: pd.DataFrame, column: str, where: object) -> pd.Series:
    """The column's values, NaN where the case failed or the column's judge call failed."""
    if column not in frame:
        raise DataError(f"{where}: no column '{column}'; choose a judge column of the rows "
                        f"({', '.join(c for c in frame.columns if f'{c}_failed' in frame) or 'none'})")
    check_stack(frame, _judge_of(column), [column], where)
    return pd.to_numeric(frame[column], errors="coerce").astype(float).where(scored(frame, column))


def agreement_table(frame: pd.DataFrame, a: str, b: str, other: pd.DataFrame | None = None,
                    where: object = "rows") -> Table:
    """Spearman and Kendall (tau-b) correlation of judge columns ``a`` and ``b`` over the
    cases both scored, per method and over all; ``other``: ``b`` read from another run's
    rows, matched on (method, sample_id)."""
    left = pd.DataFrame({METHOD: frame[METHOD].astype(str), SAMPLE_ID: frame[SAMPLE_ID].astype(str),
                         "a": _judged_values(frame, a, where)})
    source = frame if other is None else other
    right = pd.DataFrame({METHOD: source[METHOD].astype(str), SAMPLE_ID: source[SAMPLE_ID].astype(str),
                          "b": _judged_values(source, b, where)})
    pairs = left.assign(b=right["b"]) if other is None else left.merge(right, on=[METHOD, SAMPLE_ID], how="inner")
    pairs = pairs[np.isfinite(pairs["a"]) & np.isfinite(pairs["b"])]
    groups = list(pairs.groupby(METHOD, sort=False))
    if len(groups) != 1:
        groups.append(("all", pairs))
    rows = [{METHOD: method, N: len(group), **_correlations(group["a"].to_numpy(), group["b"].to_numpy())}
            for method, group in groups]
    table = pd.DataFrame(rows, columns=[METHOD, N, "spearman", "spearman_p", "kendall", "kendall_p"])
    second = b if other is None else f"{b} (second rows)"
    title = (f"judge agreement: {a} vs {second} [Spearman rho and Kendall tau-b (scipy.stats) over the cases both "
             f"judges scored; n: those cases; NaN with fewer than 2 cases or a constant side]")
    return Table(f"agreement_{a}_{b}", title, table)


def _correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    nan = float("nan")
    if len(a) < 2:
        return {"spearman": nan, "spearman_p": nan, "kendall": nan, "kendall_p": nan}
    with warnings.catch_warnings():  # a constant side: scipy warns and returns NaN
        warnings.simplefilter("ignore")
        rho, tau = sps.spearmanr(a, b), sps.kendalltau(a, b)
    return {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}


def judge_errors(frame: pd.DataFrame, prefix: str, where: pd.Series) -> pd.Series:
    """"judge call failed: <the row's <prefix>_error>" for the rows ``where`` (the reason the
    judge metric recorded: unparsable, refusal, no answer)."""
    errors = frame.get(f"{prefix}_error", pd.Series(None, index=frame.index))
    return pd.Series([f"judge call failed: {e}" if isinstance(e, str) and e else "judge call failed"
                      for e in errors[where]], index=frame.index[where.to_numpy()], dtype=object)
