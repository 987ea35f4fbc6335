"""The official result files written from planted rows, read back as the official scripts
read them: GEdit's per-group CSVs through a re-implementation (written here) of
calculate_statistics' loop give official_gedit_numbers and the planted means; ImgEdit's
result.json through a re-implementation of step1's parsing gives average_score.json, and
typescore.json the planted type means. Failed rows are left out and listed in README.txt."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_judge_tables import GROUPS, TYPES, expected_gedit, gedit_rows, imgedit_rows

from attnedit.errors import DataError
from attnedit.report.judge_official import write_gedit_official, write_imgedit_official
from attnedit.report.judge_tables import official_gedit_numbers

COLUMNS = ["source_image", "edited_image", "instruction", "sementics_score", "quality_score", "intersection_exist",
           "instruction_language"]


def statistics_of(folder, model: str, language: str = "en") -> dict:
    """calculate_statistics' numbers from the CSVs: per group, rows of the language, O =
    sqrt(SC x PQ) per row, np.mean per group, then np.mean over the 11 groups."""
    out = {"full": {}, "intersection": {}}
    for group in GROUPS:
        csv = pd.read_csv(folder / f"{model}_{group}_gpt_score.csv")
        assert list(csv.columns) == COLUMNS
        lists = {"full": ([], [], []), "intersection": ([], [], [])}
        for _, row in csv.iterrows():
            if row["instruction_language"] != language:
                continue
            sc, pq = row["sementics_score"], row["quality_score"]
            for subset in ("full", "intersection") if row["intersection_exist"] else ("full",):
                for values, value in zip(lists[subset], (sc, pq, math.sqrt(sc * pq))):
                    values.append(value)
        for subset, (sc, pq, o) in lists.items():
            out[subset][group] = {"SC": np.mean(sc), "PQ": np.mean(pq), "O": np.mean(o)}
    for subset, groups in out.items():
        groups["average"] = {m: np.mean([groups[g][m] for g in GROUPS]) for m in ("SC", "PQ", "O")}
    return out


def test_gedit_csvs_give_the_official_numbers(tmp_path):
    frame = pd.concat([gedit_rows(seed=5), gedit_rows(seed=6, method="other/method")], ignore_index=True)
    folders = write_gedit_official(frame, tmp_path, "g", backbone="qwen25vl")
    assert folders == [tmp_path / "m" / "qwen25vl" / "eval_results_new",
                       tmp_path / "other_method" / "qwen25vl" / "eval_results_new"]
    with pytest.raises(DataError, match="one method"):
        official_gedit_numbers(frame, "g")
    for folder, model in zip(folders, ("m", "other/method")):
        rows = frame[frame["method"] == model]
        read = statistics_of(folder, folder.parts[-3])
        ours = official_gedit_numbers(rows, "g")
        planted = expected_gedit(rows, official=True)
        for subset in ("full", "intersection"):
            for group in (*GROUPS, "average"):
                for metric in ("SC", "PQ", "O"):
                    np.testing.assert_allclose(ours[subset][group][metric], read[subset][group][metric], rtol=1e-12)
                    np.testing.assert_allclose(ours[subset][group][metric], planted[(subset, group, metric)],
                                               rtol=1e-12)
        readme = (folder / "README.txt").read_text()
        left = rows[rows["failed"] | rows["g_sc_failed"] | rows["g_pq_failed"] | ~rows["category"].isin(GROUPS)]
        assert 2 < len(left) and f"{len(left)} left out" in readme and "random integer" in readme
        for key in left["sample_id"]:
            assert f" {key}: " in readme
        written = sum(len(pd.read_csv(folder / f"{folder.parts[-3]}_{g}_gpt_score.csv")) for g in GROUPS)
        assert written == len(rows) - len(left)
    csv = pd.read_csv(folders[0] / f"m_{GROUPS[1]}_gpt_score.csv")  # paths as the generation script saves
    key = csv["edited_image"].iloc[0].rpartition("/")[2].removesuffix(".png")
    assert key.startswith(GROUPS[1]) and csv["edited_image"].iloc[0] == f"{tmp_path}/m/fullset/{GROUPS[1]}/en/{key}.png"
    assert csv["source_image"].iloc[0] == f"{tmp_path}/m/fullset/{GROUPS[1]}/en/{key}_SRCIMG.png"


def step1_item(reply: str) -> float | None:
    """step1's reading of a reply: lines "<name>: <digits>", their mean to 2 decimals."""
    found = [int(value) for name, sep, value in (line.strip().partition(": ") for line in reply.splitlines())
             if sep and value.isdigit()]
    return round(sum(found) / len(found), 2) if found else None


def test_imgedit_files_as_steps_one_and_two_write_them(tmp_path):
    frame, criteria = imgedit_rows(seed=7)
    (folder,) = write_imgedit_official(frame, tmp_path, "r")
    replies = json.loads((folder / "result.json").read_text())
    average = json.loads((folder / "average_score.json").read_text())
    types = json.loads((folder / "typescore.json").read_text())
    assert set(replies) == set(criteria) == set(average)
    assert {k: step1_item(v) for k, v in replies.items()} == average
    assert average == {k: round(sum(v) / 3, 2) for k, v in criteria.items()}
    kinds = dict(zip(frame["sample_id"], frame["category"]))
    expected = {}
    for key, score in average.items():
        expected.setdefault(kinds[key], []).append(score)
    assert types == {t: round(sum(v) / len(v), 2) for t, v in expected.items()} and set(types) <= set(TYPES)
    readme = (folder / "README.txt").read_text()
    for key in set(frame["sample_id"]) - set(criteria):
        assert f" {key}: " in readme
    assert "case failed" in readme and "judge call failed" in readme
