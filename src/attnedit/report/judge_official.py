"""The official result files of a judged run, so the official statistics scripts can be run
on attnedit's scores (and their numbers checked against attnedit's tables).

- GEdit-Bench (stepfun-ai/Step1X-Edit @ 570eba6): per method,
  ``<out>/<model_name>/<backbone>/eval_results_new/<model_name>_<group>_gpt_score.csv`` for each
  of the 11 task types, with the columns test_gedit_score.py writes (lines 145-150; folder
  from line 79, image paths from lines 122-123 under ``<out>/<model_name>``), which
  calculate_statistics.py reads (lines 31-49).
- ImgEdit-Basic (PKU-YuanGroup/ImgEdit @ 547185d): per method, ``<out>/<method>/result.json``
  ({key: reply text}, as basic_bench.py line 89 writes it), ``average_score.json`` (step1, line
  36) and ``typescore.json`` (step2, line 39).

A failed case or judge call is left out of these files, never filled (the official GEdit
scorer would have filled it with a random integer; ImgEdit's step1 would have dropped it),
and a README.txt beside them lists the keys left out and why.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pandas as pd

from attnedit.columns import CATEGORY, METHOD, SAMPLE_ID, failed_mask
from attnedit.report.judge_tables import (
    GEDIT_GROUPS,
    PQ,
    SC,
    STACK_COLUMN,
    check_stack,
    column_values,
    gedit_columns,
    judge_errors,
    official_gedit_rows,
    official_imgedit_numbers,
)

#: test_gedit_score.py lines 147 and 164 (the score column's spelling is the official one).
GEDIT_COLUMNS = ("source_image", "edited_image", "instruction", "sementics_score", "quality_score",
                 "intersection_exist", "instruction_language")
#: calculate_statistics.py lines 129-130: the values its arguments accept.
GEDIT_BACKBONES = ("gpt4o", "qwen25vl")
GEDIT_LANGUAGES = ("en", "zh")


def folder_name(name: object) -> str:
    """A method name as one path component."""
    return re.sub(r"[^\w.+-]", "_", str(name)) or "_"


def _stacks(rows: pd.DataFrame, prefix: str) -> list[str]:
    if STACK_COLUMN not in rows:
        return []
    records = [json.loads(v) for v in rows.loc[~failed_mask(rows), STACK_COLUMN] if isinstance(v, str) and v]
    return sorted({str(r[prefix]) for r in records if prefix in r})


def _number(value: float) -> int | float:
    """As VIEScore's parsed scores are written: an integer where the score is whole."""
    return int(value) if float(value).is_integer() else float(value)


def write_gedit_official(frame: pd.DataFrame, out: Path, prefix: str, backbone: str,
                         model_names: dict[str, str] | None = None, where: object = "rows") -> list[Path]:
    """The per-group CSVs of every method of ``frame`` (judge column ``prefix``) under ``out``;
    ``model_names``: {method: model name} (default: the method's name). Returns the folders
    written (``.../eval_results_new``)."""
    check_stack(frame, prefix, gedit_columns(prefix), where)
    folders = []
    for method, rows in frame.groupby(METHOD, sort=False):
        model = folder_name((model_names or {}).get(method, method))
        folder = Path(out) / model / backbone / "eval_results_new"
        folder.mkdir(parents=True, exist_ok=True)
        kept, left = official_gedit_rows(rows, prefix)
        generated = Path(out) / model  # the generation script's save path, the image paths' root
        for group in GEDIT_GROUPS:
            part = kept[kept["group"] == group]
            with open(folder / f"{model}_{group}_gpt_score.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=GEDIT_COLUMNS)
                writer.writeheader()
                for row in part.itertuples(index=False):
                    base = generated / "fullset" / group / row.language / row.key
                    writer.writerow({
                        "source_image": f"{base}_SRCIMG.png", "edited_image": f"{base}.png",
                        "instruction": row.instruction, "sementics_score": _number(getattr(row, SC)),
                        "quality_score": _number(getattr(row, PQ)), "intersection_exist": bool(row.intersection),
                        "instruction_language": row.language})
        (folder / "README.txt").write_text(_gedit_readme(rows, prefix, model, backbone, out, kept, left))
        folders.append(folder)
    return folders


def _gedit_readme(rows: pd.DataFrame, prefix: str, model: str, backbone: str, out: Path, kept: pd.DataFrame,
                  left: pd.DataFrame) -> str:
    method = rows[METHOD].iloc[0]
    languages = sorted(set(kept["language"]))
    lines = [
        f"GEdit-Bench result files written by attnedit: method {method}, judge column '{prefix}', "
        f"judge stack {', '.join(_stacks(rows, prefix)) or 'not recorded'}.",
        "One CSV per task type with the columns of the official scorer (stepfun-ai/Step1X-Edit @ 570eba6, "
        "GEdit-Bench/test_gedit_score.py lines 145-150). The official statistics:",
        f"  python GEdit-Bench/calculate_statistics.py --model_name {model} --save_path {out} "
        f"--backbone {backbone} --language en",
        f"{len(kept)} rows written; {len(left)} left out, listed below. The official scorer would have retried "
        "an unparsable reply and then filled it with a random integer 0-10 (viescore/utils.py lines 187, 273); "
        "attnedit leaves failed judge calls and failed cases out, so the official statistics are over the rows "
        "written.",
    ]
    if backbone not in GEDIT_BACKBONES:
        lines.append(f"calculate_statistics.py accepts --backbone {' or '.join(GEDIT_BACKBONES)} only (line 129): "
                     f"the folder '{backbone}' must be renamed to one of them to run it.")
    other = [lang for lang in languages if lang not in GEDIT_LANGUAGES]
    if other:
        lines.append(f"rows of language {', '.join(other)}: calculate_statistics.py --language accepts "
                     f"{' or '.join(GEDIT_LANGUAGES)} only (line 130) and counts only rows whose "
                     "instruction_language equals it (line 51), so it never counts them.")
    if "instruction" not in rows:
        lines.append("the rows hold no instruction text: the instruction column is empty (the statistics do not "
                     "read it).")
    lines += ["", "left out (task type, key, reason):"]
    lines += [f"  {row.group} {row.key}: {row.reason}" for row in left.itertuples(index=False)] or ["  none"]
    return "\n".join(lines) + "\n"


def _reply_text(raw: object) -> str | None:
    """The first reply text in a ``<p>_raw`` record: JSON, per pass ``{call: reply text}``
    (None for an error), or a text, or a reply object with ``text``."""
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(decoded, str):
            return decoded
        raw = decoded
    if isinstance(raw, dict):
        raw = [raw["text"]] if "text" in raw else list(raw.values())
    if isinstance(raw, (list, tuple)):
        for item in raw:
            if (text := _reply_text(item)) is not None:
                return text
    return None


def write_imgedit_official(frame: pd.DataFrame, out: Path, prefix: str, where: object = "rows") -> list[Path]:
    """result.json, average_score.json and typescore.json of every method of ``frame`` (judge
    column ``prefix``) in ``<out>/<method>/``. Returns the folders written."""
    check_stack(frame, prefix, [prefix], where)
    folders = []
    for method, rows in frame.groupby(METHOD, sort=False):
        folder = Path(out) / folder_name(method)
        folder.mkdir(parents=True, exist_ok=True)
        values = column_values(rows, prefix, decimals=2)
        keep = values["judged"] & values["value"].map(math.isfinite)
        raw_column = f"{prefix}_raw"
        replies, no_text = {}, []
        for key, raw in zip(rows.loc[keep, SAMPLE_ID].astype(str),
                            rows.loc[keep, raw_column] if raw_column in rows else [None] * int(keep.sum())):
            text = _reply_text(raw)
            if text is None:
                no_text.append(key)
            else:
                replies[key] = text
        numbers = official_imgedit_numbers(rows, prefix)
        (folder / "result.json").write_text(json.dumps(replies, indent=4))
        (folder / "average_score.json").write_text(json.dumps(numbers["items"], indent=2))
        (folder / "typescore.json").write_text(json.dumps(numbers["types"], indent=2))
        reasons = judge_errors(rows, prefix, pd.Series(True, index=rows.index))
        reasons[values["judged"]] = "no score"
        reasons[failed_mask(rows)] = "case failed"
        left = list(zip(rows.loc[~keep, CATEGORY].astype(str), rows.loc[~keep, SAMPLE_ID].astype(str),
                        reasons[~keep]))
        several = bool(values.loc[keep, "passes"].map(len).gt(1).any())
        (folder / "README.txt").write_text(_imgedit_readme(rows, prefix, numbers, left, no_text, several))
        folders.append(folder)
    return folders


def _imgedit_readme(rows: pd.DataFrame, prefix: str, numbers: dict, left: list, no_text: list[str],
                    several: bool) -> str:
    lines = [
        f"ImgEdit-Basic result files written by attnedit: method {rows[METHOD].iloc[0]}, judge column '{prefix}', "
        f"judge stack {', '.join(_stacks(rows, prefix)) or 'not recorded'}.",
        "result.json: {key: judge reply}; average_score.json: item scores; typescore.json: type scores, as "
        "PKU-YuanGroup/ImgEdit @ 547185d, Benchmark/Basic/step1_get_avgscore.py and step2_typescore.py write them.",
        "No official script computes an overall score; attnedit's: mean over items "
        f"{numbers['overall_items']:.4f} (its tables' default), mean over the type scores "
        f"{numbers['overall_types']:.4f}.",
        f"{len(numbers['items'])} items written; {len(left)} left out, listed below (a failed judge call is never "
        "filled; an error reply in the official result.json is a dict that step1 cannot read).",
    ]
    if several:
        lines.append("several judge passes per item: result.json holds each item's first reply; the item scores "
                     "are the judge column's (the mean over the passes), rounded to 2 decimals.")
    if no_text:
        lines.append(f"no reply text recorded for {len(no_text)} scored items (left out of result.json only): "
                     f"{', '.join(no_text)}")
    lines += ["", "left out (edit type, key, reason):"]
    lines += [f"  {kind} {key}: {reason}" for kind, key, reason in left] or ["  none"]
    return "\n".join(lines) + "\n"
