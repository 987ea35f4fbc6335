"""The judge tables against computations written here: planted VIEScore and ImgEdit scores
(random integers), per-type means, the UNWEIGHTED mean over types, the intersection subset,
failures counted and left out, the bootstrap CIs (one level: stats.mean_ci; several passes:
a loop over the documented draws), the judge sd, agreement (scipy directly) and mixed
judge stacks refused. The builders are shared with test_judge_official."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from attnedit.errors import ConfigError
from attnedit.report.judge_tables import (
    agreement_table,
    bootstrap_ci,
    gedit_tables,
    imgedit_tables,
    official_gedit_numbers,
    official_imgedit_numbers,
)
from attnedit.report.render import numeric, table_text
from attnedit.report.stats import mean_ci

# The task types and edit types, spelled out here (not imported from the code under test).
GROUPS = ("background_change", "color_alter", "material_alter", "motion_change", "ps_human", "style_change",
          "subject-add", "subject-remove", "subject-replace", "text_change", "tone_transfer")
TYPES = ("replace", "add", "adjust", "remove", "style", "action", "extract", "background", "compose")
NAN = float("nan")


def gedit_rows(seed: int = 0, method: str = "m", passes: int = 1, prefix: str = "g") -> pd.DataFrame:
    """2..5 samples per type (unequal: a weighted mean differs), SC and PQ integers 0-10 per
    pass (the columns their pass means, O the mean of sqrt(SC x PQ) per pass), ~20% of the
    judge calls failed (SC or PQ), one failed case, one row of an unknown type."""
    rng = np.random.default_rng(seed)
    rows = []
    for t, group in enumerate(GROUPS):
        for s in range(2 + t % 4):
            sc, pq = rng.integers(0, 11, passes).astype(float), rng.integers(0, 11, passes).astype(float)
            bad = rng.random() < 0.2
            sc_failed, pq_failed = bad and s % 2 == 0, bad and s % 2 == 1
            row = {"sample_id": f"{group}-{s}", "method": method, "category": group, "failed": False,
                   "intersection_exist": bool(s == 0 or rng.random() < 0.5), "instruction": f"edit {s}",
                   "instruction_language": "en", "judge_stack": json.dumps({prefix: "h1"})}
            for name, values, failed in (("sc", sc, sc_failed), ("pq", pq, pq_failed),
                                         ("o", np.sqrt(sc * pq), sc_failed or pq_failed)):
                row[f"{prefix}_{name}"] = NAN if failed else float(values.mean())
                row[f"{prefix}_{name}_failed"] = failed
                row[f"{prefix}_{name}_passes"] = json.dumps([NAN if failed else float(v) for v in values])
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.loc[1, ["failed", "judge_stack"]] = [True, None]
    for name in ("sc", "pq", "o"):
        frame.loc[1, f"{prefix}_{name}"] = NAN
    outside = frame.iloc[[0]].assign(sample_id="odd-0", category="not_a_type")
    return pd.concat([frame, outside], ignore_index=True)


def imgedit_rows(seed: int = 0, method: str = "m", prefix: str = "r") -> tuple[pd.DataFrame, dict]:
    """2..6 items per type, three criteria 1-5 each; the column the criteria mean (as the
    metric writes it, unrounded); ~15% failed calls; one failed case. Returns the rows and
    {key: criteria} of the scored items."""
    rng = np.random.default_rng(seed)
    rows, criteria = [], {}
    for t, kind in enumerate(TYPES):
        for s in range(2 + t % 5):
            key = f"{100 * t + s}"
            values = [int(v) for v in rng.integers(1, 6, 3)]
            failed = bool(rng.random() < 0.15)
            reply = "\n".join(f"Criterion {c}: {v}" for c, v in zip("ABC", values))
            rows.append({"sample_id": key, "method": method, "category": kind, "failed": False,
                         prefix: NAN if failed else sum(values) / 3, f"{prefix}_failed": failed,
                         f"{prefix}_passes": json.dumps([NAN if failed else sum(values) / 3]),
                         f"{prefix}_raw": json.dumps([{"rubric": "no scores here" if failed else reply}]),
                         "judge_stack": json.dumps({prefix: "h9"})})
            if not failed:
                criteria[key] = values
    frame = pd.DataFrame(rows)
    frame.loc[2, ["failed", prefix]] = [True, NAN]
    criteria.pop(frame.loc[2, "sample_id"], None)
    return frame, criteria


def expected_gedit(frame: pd.DataFrame, prefix: str = "g", official: bool = False) -> dict:
    """{(subset, type): {SC, PQ, O}} and the averages, from the planted rows: per type the
    mean over the rows scored (official: rows with SC and PQ both), O = sqrt(SC x PQ) per
    row; average = plain mean of the 11 type means."""
    out = {}
    ok_case = ~frame["failed"].astype(bool)
    for subset in ("full", "intersection"):
        sub = frame if subset == "full" else frame[frame["intersection_exist"]]
        for metric, columns in (("SC", ["sc"]), ("PQ", ["pq"]), ("O", ["sc", "pq"])):
            needed = ["sc", "pq"] if official else columns
            means = []
            for group in GROUPS:
                part = sub[(sub["category"] == group) & ok_case.loc[sub.index]]
                for c in needed:
                    part = part[~part[f"{prefix}_{c}_failed"].astype(bool)]
                sc, pq = part[f"{prefix}_sc"].to_numpy(float), part[f"{prefix}_pq"].to_numpy(float)
                values = {"SC": sc, "PQ": pq, "O": np.sqrt(sc * pq)}[metric]
                means.append(values.mean() if len(values) else NAN)
                out[(subset, group, metric)] = means[-1]
            out[(subset, "average", metric)] = float(np.mean(means))
    return out


def cell_of(table, subset: str | None, kind: str, column: str):
    frame = table.frame
    mask = frame["type"] == kind
    if subset is not None:
        mask &= frame["subset"] == subset
    (cell,) = frame.loc[mask, column]
    return cell


def test_gedit_means_are_per_type_then_unweighted_over_types():
    frame = gedit_rows()
    (table,) = gedit_tables(frame, "g")
    expected = expected_gedit(frame)
    ok = ~frame["failed"]
    for (subset, kind, metric), value in expected.items():
        cell = cell_of(table, subset, kind, metric)
        np.testing.assert_allclose(cell.numbers["mean"], value, rtol=1e-12, err_msg=f"{subset} {kind} {metric}")
        if kind == "average":
            continue
        rows = frame[(frame["category"] == kind) & (frame["intersection_exist"] | (subset == "full"))]
        flags = {"SC": ["sc"], "PQ": ["pq"], "O": ["o"]}[metric]
        failed = (~ok.loc[rows.index] | rows[[f"g_{f}_failed" for f in flags]].any(axis=1)).sum()
        assert cell.numbers["n_failed"] == failed and cell.numbers["n"] == len(rows) - failed
    # the planted counts differ per type: a sample-weighted mean would not match
    scored = frame[ok & ~frame["g_sc_failed"] & frame["category"].isin(GROUPS)]
    assert abs(scored["g_sc"].mean() - expected[("full", "average", "SC")]) > 1e-3
    average = cell_of(table, "full", "average", "O")
    typed = frame["category"].isin(GROUPS)  # the row of an unknown type is in no type
    assert average.numbers["n_failed"] == int(((~ok | frame["g_o_failed"]) & typed).sum())
    assert "UNWEIGHTED" in table.title and "random integer" in table.title and "n_failed" in table.title
    assert "not_a_type" not in set(table.frame["type"]) and "1 rows of categories outside" in table.title
    # the official numbers: rows with SC and PQ both scored
    official = official_gedit_numbers(frame, "g")
    for (subset, kind, metric), value in expected_gedit(frame, official=True).items():
        np.testing.assert_allclose(official[subset][kind][metric], value, rtol=1e-12)
    text = table_text(table)  # renders: compact cells and the notes
    assert "average" in text.body and any("UNWEIGHTED" in n for n in text.notes)


def test_one_pass_cis_are_the_projects_bootstrap_and_stratified_for_the_average():
    frame = gedit_rows(seed=1)
    (table,) = gedit_tables(frame, "g")
    ok = ~frame["failed"] & ~frame["g_pq_failed"]
    per_type = [frame.loc[ok & (frame["category"] == g), "g_pq"].to_numpy(float) for g in GROUPS]
    for group, values in zip(GROUPS, per_type):
        cell = cell_of(table, "full", group, "PQ")
        assert (cell.numbers["ci_low"], cell.numbers["ci_high"]) == mean_ci(values)
    rng = np.random.default_rng(0)  # stratified: each type resampled in turn, the type means averaged
    total = np.zeros(1000)
    for values in per_type:
        total += values[rng.integers(0, len(values), (1000, len(values)))].mean(axis=1)
    low, high = np.percentile(total / len(per_type), [2.5, 97.5])
    cell = cell_of(table, "full", "average", "PQ")
    np.testing.assert_allclose([cell.numbers["ci_low"], cell.numbers["ci_high"]], [low, high], rtol=1e-12)
    assert low <= cell.numbers["mean"] <= high
    assert not any("judge sd" in c for c in table.frame.columns)


def two_level_loop(images: list[np.ndarray], seed: int = 0, resamples: int = 1000) -> tuple[float, float]:
    """Images drawn with replacement, then each drawn image's passes with replacement, from
    the draws bootstrap_ci documents; one resample at a time."""
    rng = np.random.default_rng(seed)
    n, kmax = len(images), max(len(p) for p in images)
    picks = rng.integers(0, n, size=(resamples, n))
    uniforms = rng.random((resamples, n, kmax))
    means = []
    for r in range(resamples):
        total = 0.0
        for s in range(n):
            passes = images[picks[r, s]]
            k = len(passes)
            total += sum(passes[int(uniforms[r, s, j] * k)] for j in range(k)) / k
        means.append(total / n)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def test_several_passes_two_level_ci_and_judge_sd():
    frame = gedit_rows(seed=2, passes=3)
    (table,) = gedit_tables(frame, "g")
    group = GROUPS[3]  # 5 samples
    rows = frame[(frame["category"] == group) & ~frame["failed"] & ~frame["g_sc_failed"]]
    images = [np.asarray(json.loads(v), float) for v in rows["g_sc_passes"]]
    cell = cell_of(table, "full", group, "SC")
    np.testing.assert_allclose([cell.numbers["ci_low"], cell.numbers["ci_high"]], two_level_loop(images), rtol=1e-12)
    assert cell.numbers["ci_low"] <= cell.numbers["mean"] <= cell.numbers["ci_high"]
    sd = np.mean([np.std(p, ddof=1) for p in images])
    np.testing.assert_allclose(cell.numbers["judge_sd"], sd, rtol=1e-12)
    np.testing.assert_allclose(cell_of(table, "full", group, "SC judge sd").numbers["mean"], sd, rtol=1e-12)
    assert "several passes" in table.title
    # a ragged stratum (2 and 3 passes) and one pass everywhere (= the one-level CI)
    ragged = [np.array([1.0, 4.0, 2.0]), np.array([7.0, 9.0]), np.array([3.0, 3.0, 8.0]), np.array([0.0, 5.0])]
    np.testing.assert_allclose(bootstrap_ci([ragged]), two_level_loop(ragged), rtol=1e-12)
    single = [np.array([v]) for v in (1.0, 4.0, 2.0, 9.0)]
    assert bootstrap_ci([single]) == mean_ci([1.0, 4.0, 2.0, 9.0])
    csv = numeric(table.frame)
    assert {"SC_ci_low", "SC_judge_sd", "SC judge sd_mean"} <= set(csv.columns)


def test_imgedit_items_types_and_both_overall_scores():
    frame, criteria = imgedit_rows()
    (table,) = imgedit_tables(frame, "r")
    items = {k: round(sum(v) / len(v), 2) for k, v in criteria.items()}
    kinds = dict(zip(frame["sample_id"], frame["category"]))
    by_type = {t: [items[k] for k in items if kinds[k] == t] for t in TYPES}
    types = {t: round(sum(v) / len(v), 2) for t, v in by_type.items() if v}
    for kind, value in types.items():
        cell = cell_of(table, None, kind, "score")
        assert cell.numbers["mean"] == value
        rows = frame[frame["category"] == kind]
        assert cell.numbers["n_failed"] == int((rows["failed"] | rows["r_failed"]).sum())
    overall_items = float(np.mean(list(items.values())))
    overall_types = float(np.mean(list(types.values())))
    np.testing.assert_allclose(cell_of(table, None, "overall (items)", "score").numbers["mean"], overall_items,
                               rtol=1e-12)
    np.testing.assert_allclose(cell_of(table, None, "overall (types)", "score").numbers["mean"], overall_types,
                               rtol=1e-12)
    assert "'overall (items)' (the DEFAULT)" in table.title
    official = official_imgedit_numbers(frame, "r")
    assert official["items"] == items and official["types"] == types
    np.testing.assert_allclose([official["overall_items"], official["overall_types"]], [overall_items, overall_types],
                               rtol=1e-12)


def test_agreement_is_scipys_over_the_cases_both_judges_scored():
    frame = gedit_rows(seed=3)
    other = gedit_rows(seed=4, prefix="h").drop(columns=["sample_id", "method", "category", "failed",
                                                          "intersection_exist", "judge_stack"])
    frame = pd.concat([frame, other[[c for c in other.columns if c.startswith("h_")]]], axis=1)
    frame["judge_stack"] = json.dumps({"g": "h1", "h": "h2"})
    table = agreement_table(frame, "g_o", "h_sc")
    keep = ~frame["failed"] & ~frame["g_o_failed"] & ~frame["h_sc_failed"]
    a, b = frame.loc[keep, "g_o"].to_numpy(float), frame.loc[keep, "h_sc"].to_numpy(float)
    (row,) = table.frame.to_dict("records")
    assert row["n"] == len(a) and 0 < len(a) < len(frame)
    np.testing.assert_allclose([row["spearman"], row["spearman_p"]], list(sps.spearmanr(a, b)), rtol=1e-12)
    np.testing.assert_allclose([row["kendall"], row["kendall_p"]], list(sps.kendalltau(a, b)), rtol=1e-12)
    two = pd.concat([frame, frame.assign(method="n")], ignore_index=True)
    assert list(agreement_table(two, "g_o", "h_sc").frame["method"]) == ["m", "n", "all"]


def test_mixed_judge_stacks_are_refused_in_one_line():
    frame = gedit_rows()
    gedit_tables(frame.assign(judge_stack=lambda f: f["judge_stack"].where(~f["failed"], json.dumps({"g": "zz"}))),
                 "g")  # a failed case's stack does not count
    mixed = frame.copy()
    mixed.loc[5, "judge_stack"] = json.dumps({"g": "h2"})
    for build in (lambda: gedit_tables(mixed, "g", where="runs/x"), lambda: agreement_table(mixed, "g_sc", "g_pq")):
        with pytest.raises(ConfigError) as err:
            build()
        message = str(err.value)
        assert "'g'" in message and "h1, h2" in message and "rescore" in message and "\n" not in message
    images, _ = imgedit_rows()
    images.loc[images.index[~images["failed"] & ~images["r_failed"]][0], "judge_stack"] = json.dumps({})
    with pytest.raises(ConfigError, match="h9, not recorded"):
        imgedit_tables(images, "r")


def test_a_type_without_samples_makes_the_average_nan_as_the_official():
    frame = gedit_rows()
    frame = frame[frame["category"] != GROUPS[0]]
    (table,) = gedit_tables(frame, "g")
    assert math.isnan(cell_of(table, "full", "average", "SC").numbers["mean"])
    assert math.isnan(official_gedit_numbers(frame, "g")["full"]["average"]["SC"])
