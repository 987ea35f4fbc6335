"""``attnedit-judge``: judge a folder of someone else's edits, laid out as each benchmark's
official scripts lay them out, and write the project's rows, tables and the official
result files.

Layouts read (what the official scorers open):

- GEdit-Bench: ``<edits>/fullset/<task_type>/<language>/<key>.png`` and the source as the
  generator saved it, ``<key>_SRCIMG.png`` beside it (stepfun-ai/Step1X-Edit @ 570eba6,
  GEdit-Bench/test_gedit_score.py lines 25-29 and 122-127). The edited image is converted to
  RGB and resized to the source's size before judging (line 34; PIL's filter there, attnedit's
  bicubic antialiased resize here, as for a run's saved edits).
- ImgEdit-Basic: ``<edits>/<key>.png``, the original under the dataset's images folder by its
  ``id`` (PKU-YuanGroup/ImgEdit @ 547185d, Benchmark/Basic/basic_bench.py lines 57-60); the
  official script sends both files as they are, the edited image at its own size; here it is
  resized to the original's size like GEdit's, so one pair is judged one way (recorded).

Completeness is checked before any judge call: files the benchmark expects and the folder
lacks, and files of the layout that no benchmark item names, are listed; missing files stop
the job unless ``missing=skip`` (then they are left out and listed in the tables' titles).
``out`` defaults to ``results/judged/<benchmark>/<name>/<prefix>-<judge stack hash>``: the same
edits judged by another judge go to another folder. Rows go to ``<out>/cases`` (a results
store: a rerun skips what is stored and asks again what got no answer; the reply cache
answers what was asked), tables to ``<out>/tables``, the official files to ``<out>/official``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from attnedit.errors import ConfigError, DataError
from attnedit.metrics.registry import build_metrics
from attnedit.judge.metric import unavailable
from attnedit.metrics.settings import SETTINGS_COLUMN, all_settings, quantize, row_settings
from attnedit.run.saved_edits import fit_saved
from attnedit.run.secrets import redact
from attnedit.run.validate import ROOT_HOLDS, _folder, check_judge
from attnedit.store.run_store import RunStore

BENCHMARKS = ("gedit", "imgedit")
SOURCE_SUFFIX = "_SRCIMG"


def expected_files(benchmark: str, dataset, language: str) -> dict[str, dict[str, Path]]:
    """{sample id: {"edited": relative path, "source": relative path (GEdit)}} of the layout."""
    out = {}
    for sid in dataset.sample_ids():
        if benchmark == "gedit":
            row = dataset.row(sid)
            folder = Path("fullset") / row["task_type"] / language
            out[sid] = {"edited": folder / f"{sid}.png", "source": folder / f"{sid}{SOURCE_SUFFIX}.png"}
        else:
            out[sid] = {"edited": Path(f"{sid}.png")}
    return out


def layout_files(benchmark: str, edits: Path) -> set[Path]:
    """The files of ``edits`` that the layout could name (relative paths)."""
    if benchmark == "gedit":
        return {p.relative_to(edits) for p in (edits / "fullset").glob("*/*/*.png")}
    return {p.relative_to(edits) for p in edits.glob("*.png")}


def completeness(benchmark: str, edits: Path, expected: dict[str, dict[str, Path]]) -> tuple[list[Path], list[Path]]:
    """(missing files, extra files), sorted."""
    wanted = {path for paths in expected.values() for path in paths.values()}
    present = layout_files(benchmark, edits)
    return sorted(wanted - present), sorted(present - wanted)


def _listing(paths: list[Path], limit: int = 8) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def read_pair(source_path: Path, edited_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, edited) as float CHW in [0, 1], both RGB; the edited image brought to the
    source's size as a run's saved edits are (bicubic, antialiased: attnedit.run.saved_edits),
    where GEdit's scorer uses PIL's resize (test_gedit_score.py line 34): one resize for every
    judged pair, recorded in the judge stack."""
    try:
        with Image.open(source_path) as source_file:
            source = np.asarray(source_file.convert("RGB")).copy()
        with Image.open(edited_path) as edited_file:
            edited = np.asarray(edited_file.convert("RGB")).copy()
    except OSError as err:
        raise DataError(f"cannot read {edited_path} or {source_path} ({err}); replace the file") from None
    source_t = torch.from_numpy(source).permute(2, 0, 1)
    edited_t = torch.from_numpy(edited).permute(2, 0, 1)
    size = tuple(source_t.shape[-2:])
    fitted = edited_t.float().div(255) if tuple(edited_t.shape[-2:]) == size else fit_saved(edited_t, size, str(edited_path))
    return source_t.float().div(255), quantize(fitted)


def judge_folder(cfg: DictConfig) -> Path:
    """Judge ``cfg.edits``; the output folder."""
    from attnedit.report.judge_official import write_gedit_official, write_imgedit_official
    from attnedit.report.judge_tables import gedit_tables, imgedit_tables
    from attnedit.report.judged import with_stack_notes
    from attnedit.report.render import Report, write_report

    benchmark = str(cfg.benchmark)
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"benchmark={benchmark} is not one of {BENCHMARKS}")
    if cfg.edits is None or not Path(str(cfg.edits)).expanduser().is_dir():
        raise ConfigError(f"edits={cfg.edits} is not a folder; point it at the folder of edited images "
                          f"({'<save>/<model> holding fullset/' if benchmark == 'gedit' else '<key>.png files'})")
    edits = Path(str(cfg.edits)).expanduser().resolve()
    name = str(cfg.name or edits.name)
    check_judge(cfg.judge)
    holds = ROOT_HOLDS["GEditBench" if benchmark == "gedit" else "ImgEditBasic"]
    root = cfg.dataset[benchmark].get("root")
    if root is None:
        raise ConfigError(f"dataset.{benchmark}.root is not set; point it at {holds}")
    _folder(f"dataset.{benchmark}.root", root, holds)
    dataset = instantiate(cfg.dataset[benchmark])
    language = getattr(dataset, "language", "en")
    expected = expected_files(benchmark, dataset, language)
    missing, extra = completeness(benchmark, edits, expected)
    other_language = [p for p in extra if benchmark == "gedit" and len(p.parts) == 4 and p.parts[2] != language]
    if other_language:
        print(f"attnedit-judge: {len(other_language)} edit(s) in other languages than {language} not judged "
              f"(dataset.gedit.language={{en,cn}} judges them)")
    extra = [p for p in extra if p not in other_language]
    if extra:
        print(f"attnedit-judge: {len(extra)} file(s) in {edits} that no {benchmark} item names (not judged): "
              f"{_listing(extra)}")
    if missing and str(cfg.missing) != "skip":
        raise DataError(f"{edits} lacks {len(missing)} file(s) the benchmark expects: {_listing(missing)}; "
                        "add them, or pass missing=skip to judge the rest (the tables then say how many)")
    if missing:
        print(f"attnedit-judge: {len(missing)} expected file(s) missing, their items not judged (missing=skip): "
              f"{_listing(missing)}")
    absent = set(missing)
    todo = [sid for sid, paths in expected.items() if not set(paths.values()) & absent]

    metrics = build_metrics(cfg.metrics)
    judges = [m for m in metrics if hasattr(m, "judge")]
    if not judges:
        raise ConfigError("metrics= names no judge metric (conf/metrics/gedit_viescore.yaml or imgedit_rubric.yaml)")
    stacks = json.dumps({j.prefix: j.stack["hash"] for j in judges}, sort_keys=True)
    # one folder per judge stack, named as table titles name it: another judge never mixes with these rows
    folder = "_".join(f"{j.prefix}-{j.stack['hash'][:10]}" for j in judges)
    out = Path(str(cfg.out)).expanduser() if cfg.out else Path(str(cfg.paths.results_dir)) / "judged" / benchmark / name / folder
    store = RunStore(out)
    for judge in judges:
        judge.bind_run(out)
    settings = all_settings(metrics, OmegaConf.to_container(cfg.metrics, resolve=True), "uint8 (PNG as read)")
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    store.update_json("manifest.json", lambda previous: {
        **(previous or {}), "config": config, "benchmark": benchmark, "edits": str(edits), "dataset": dataset.describe(),
        "metric_order": [c for m in metrics for c in m.columns()], "metric_settings": settings,
        "metrics": {m.name: {"weights": m.weights, "higher_is_better": m.higher_is_better} for m in metrics},
        "judge_stacks": {j.prefix: j.stack for j in judges},
        "completeness": {"expected": len(expected), "missing": [str(p) for p in missing],
                         "extra": [str(p) for p in extra]}})
    stored = store.read()
    if not stored.empty and (set(stored.get("judge_stack", pd.Series(dtype=str)).dropna()) - {stacks}):
        raise ConfigError(f"{out} holds rows judged under another judge stack; give another out= folder "
                          "(by default each judge stack has its own)")
    done = store.done_case_ids()
    failed_before = store.failed_case_ids()  # judge calls that got no answer: asked again, their rows replaced
    pending = [sid for sid in todo if _case_id(name, sid) not in done]
    if done:
        print(f"attnedit-judge: {len(todo) - len(pending)} of {len(todo)} cases already judged in {out}")
    batch_size = max(1, int(cfg.batch_size))
    start = time.perf_counter()
    for begin in range(0, len(pending), batch_size):
        batch = pending[begin : begin + batch_size]
        samples = [_sample(benchmark, dataset, sid) for sid in batch]
        pairs = [read_pair(_source_path(benchmark, dataset, edits, expected, sid), edits / expected[sid]["edited"])
                 for sid in batch]
        scores: dict[str, Any] = {}
        for judge in judges:
            scores.update(judge.judge([p[0] for p in pairs], [p[1] for p in pairs],
                                      [str(s["fields"][judge.instruction_field]) for s in samples],
                                      [s["fields"].get(judge.category_field) for s in samples]))
        rows = []
        for i, (sid, sample) in enumerate(zip(batch, samples)):
            rows.append({
                "case_id": _case_id(name, sid), "sample_id": sid, "category": sample["category"], "method": name,
                **{k: sample["fields"][k] for k in ("instruction_language", "intersection_exist", "instruction")
                   if k in sample["fields"]},
                **{k: (v[i].item() if torch.is_tensor(v) else v[i]) for k, v in scores.items()},
                "image_path": str(edits / expected[sid]["edited"]),
                "reference_path": str(_source_path(benchmark, dataset, edits, expected, sid)),
                "failed": False, "error": None, "judge_stack": stacks, SETTINGS_COLUMN: row_settings(settings),
            })
            no_answer = unavailable(rows[-1], judges)
            if no_answer:  # a failed case: the next run asks again (errors are never cached)
                rows[-1].update({"failed": True, "error": no_answer})
        part = store.append(rows)
        retried = {row["case_id"] for row in rows} & failed_before
        if retried:
            store.drop_failed(retried, keep=part)
    frame = store.read()
    tables = []
    for judge in judges:
        build = gedit_tables if benchmark == "gedit" else imgedit_tables
        made = with_stack_notes(build(frame, judge.prefix, out), judge.stack)
        if missing:  # missing=skip: what the means are not over
            note = f" [{len(missing)} expected file(s) missing from {edits}, not judged (missing=skip; manifest.json lists them)]"
            made = [type(t)(t.name, t.title + note, t.frame) for t in made]
        tables += made
        if benchmark == "gedit":
            write_gedit_official(frame, out / "official", judge.prefix, str(cfg.official_backbone), where=out)
        else:
            write_imgedit_official(frame, out / "official", judge.prefix, where=out)
    write_report(Report(tables), out)
    print(f"attnedit-judge: judged {len(pending)} case(s) in {time.perf_counter() - start:.1f} s")
    for judge in judges:
        print(judge.summary_line())
    print(f"tables: {out / 'tables'}/")
    print(f"official files: {out / 'official'}/")
    return out


def _case_id(name: str, sid: str) -> str:
    return f"{sid}|{name}"


def _sample(benchmark: str, dataset, sid: str) -> dict[str, Any]:
    """The item's texts without decoding its image (GEdit's source is the saved _SRCIMG file)."""
    if benchmark == "gedit":
        row = dataset.row(sid)
        return {"category": row["task_type"], "fields": {
            "instruction": row["instruction"], "task_type": row["task_type"],
            "instruction_language": row["instruction_language"], "intersection_exist": bool(row["Intersection_exist"])}}
    sample = dataset.load_uint8(sid)
    return {"category": sample.category, "fields": sample.fields}


def _source_path(benchmark: str, dataset, edits: Path, expected, sid: str) -> Path:
    return edits / expected[sid]["source"] if benchmark == "gedit" else Path(dataset.image_file(sid))

