"""attnedit-rescore: compute or recompute metric columns of a run from its saved images.

    attnedit-rescore <run dir> [metrics=<group> | metrics=[<group>,<group>]]
                     [metrics.<column>.<key>=<value> ...] [judge=<file> judge.<key>=<value> ...]
                     [metric_weights=pretrained|random] [device=auto|cpu|cuda] [batch_size=<n>]

A judged group (VIEScore, ImgEdit) uses the run's own judge unless ``judge=`` /
``judge.<key>=`` name another (conf/judge/); every reply already in the reply cache is
served from it, so rescoring judged columns asks the judge only what it was never asked.

Which columns: with ``metrics=<group(s)>`` every metric of those conf/metrics groups
(composed as attnedit-run composes them, ``metric_weights`` as the run's unless given);
without, the run's own metrics, and only those a ``metrics.<column>...`` override names
(``metrics.ssim.border=pad`` rescores ``ssim`` alone; ``+metrics.mse._target_=...`` adds a
column). A metric reads each successful row's saved edited image and its reference
(8-bit PNGs, as the runner scores them: attnedit.metrics.settings) and the per-case
fields it needs from the rows or, for masks and prompts, the run's dataset. Failed rows
keep NaN. Rows scored against one of two references (``reference_kind``: pullback,
attnedit.run.references) get their ``<column>_vs_<kind>`` columns recomputed too, from the
other reference's saved image (reference.png or reference_own_sampler.png) with the same
metric, and record their settings as the column's.

Writing is safe: each part file of ``<run dir>/cases`` is rewritten atomically (a
temporary file renamed over it), so a kill leaves every row, some with old values and
some with new; each row records its settings hashes (``metric_settings``), so tables
refuse the mixed column until the rescore is run again. The manifest's
``metric_settings``, ``metrics`` and ``metric_order`` are updated last, with the
rescore appended to ``rescores``; the run's tables are rewritten.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

from attnedit.columns import REFERENCE_KIND, failed_mask
from attnedit.config import compose
from attnedit.errors import ConfigError, DataError
from attnedit.metrics.settings import SETTINGS_COLUMN, all_settings, scored_images_label
from attnedit.run.references import REFERENCE_FILES, other_kinds, with_other_settings
from attnedit.run.saved_edits import fit_saved
from attnedit.store.run_store import RunStore

USAGE = ("usage: attnedit-rescore <run dir> [metrics=<group>|[<group>,...]] [metrics.<column>.<key>=<value> ...] "
         "[judge=<conf/judge file>] [judge.<key>=<value> ...] [metric_weights=pretrained|random] "
         "[device=auto|cpu|cuda] [batch_size=<n>]")
OPTIONS = ("metric_weights", "device", "batch_size")


def parse_overrides(overrides: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """(metrics group options, dotted metric overrides without their '+', other options)."""
    groups, dotted, options = [], [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"'{item}' is not key=value. {USAGE}")
        key = key.removeprefix("+")
        if key == "metrics":
            groups += [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        elif key.startswith("metrics.") and key.count(".") >= 2:
            dotted.append(f"{key.removeprefix('metrics.')}={value}")
        elif key in OPTIONS:
            options[key] = value
        elif key == "judge" or key.startswith("judge."):  # the VLM judge of judged metric groups
            options.setdefault("judge", []).append(item)
        else:
            raise ConfigError(f"attnedit-rescore changes metric columns only; '{item}' is not one of metrics=..., "
                              f"metrics.<column>.<key>=..., {', '.join(o + '=' for o in OPTIONS)}. {USAGE}")
    return groups, dotted, options


def metric_nodes(config: dict[str, Any], groups: list[str], dotted: list[str],
                 options: dict[str, str]) -> dict[str, Any]:
    """The resolved config nodes of the metrics to compute, by column name."""
    if groups:
        weights = options.get("metric_weights", config.get("metric_weights", "pretrained"))
        group = f"metrics=[{','.join(groups)}]" if len(groups) > 1 else f"metrics={groups[0]}"
        judge = list(options.get("judge", []))
        composed = compose("config", [group, f"metric_weights={weights}", *judge])
        if not judge and config.get("judge") is not None:  # judged groups: the run's own judge unless one is given
            with open_dict(composed):
                composed.judge = OmegaConf.create(config["judge"])
        nodes = OmegaConf.to_container(composed.metrics, resolve=True)
        chosen = list(nodes)
    else:
        if options.get("judge"):
            raise ConfigError(f"judge overrides apply to a metric group: add metrics=<the judged group>. {USAGE}")
        nodes = dict(config.get("metrics") or {})
        chosen = list(dict.fromkeys(d.split(".", 1)[0] for d in dotted))
        if not chosen:
            raise ConfigError(f"name the columns to rescore: metrics=<group> or metrics.<column>.<key>=<value>. {USAGE}")
    merged = OmegaConf.merge(OmegaConf.create(nodes), OmegaConf.from_dotlist(dotted)) if dotted else nodes
    merged = OmegaConf.to_container(OmegaConf.create(merged), resolve=True)
    unknown = [c for c in chosen if "_target_" not in (merged.get(c) or {})]
    if unknown:
        raise ConfigError(f"metric(s) {unknown} are not metrics of this run; add one with "
                          f"+metrics.<column>._target_=<class> or pick a group with metrics=<group>")
    return {c: merged[c] for c in chosen}


def read_image(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A saved image as float CHW in [0, 1] (8-bit value / 255); one of another size than
    ``size`` (a PIE-Bench edit saved at the model's output size) brought to it as the
    runner and attnedit-evaluate do (attnedit.run.saved_edits)."""
    if not path.exists():
        raise DataError(f"{path} does not exist: attnedit-rescore needs the run's saved images (save_images=true)")
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1)
    if size is not None and tuple(pixels.shape[-2:]) != tuple(size):
        return fit_saved(pixels, size, str(path))
    return pixels.float().div(255)


def rescore(run_dir: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Compute the chosen metric columns for every successful row and write them back."""
    from hydra.utils import instantiate

    from attnedit.backends.loading import pick_device
    from attnedit.metrics.registry import build_metrics
    from attnedit.run.runner import metric_context

    run_dir = Path(run_dir)
    store = RunStore.open(run_dir)
    manifest = store.read_json("manifest.json")
    config = manifest["config"]
    groups, dotted, options = parse_overrides(overrides)
    nodes = metric_nodes(config, groups, dotted, options)
    metrics = build_metrics(OmegaConf.create(nodes))
    judges = [m for m in metrics if hasattr(m, "bind_run")]  # VLM judges: replies archived in the run, cache first
    for judge in judges:
        judge.bind_run(run_dir)
    stacks = {j.prefix: j.stack["hash"] for j in judges}
    dataset = config.get("dataset") or {}  # runs saved PNG unless their dataset said otherwise (PIE-Bench: JPEG)
    settings = all_settings(metrics, nodes, scored_images_label(dataset.get("edited_format", "png"),
                                                                dataset.get("jpeg_quality", 75),
                                                                dataset.get("saved_size", "source")))
    device = pick_device(str(options.get("device", "auto")))
    batch_size = int(options.get("batch_size", config.get("batch_size", 8)))
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")

    frame = store.read()
    if frame.empty:
        raise DataError(f"{run_dir} holds no rows to rescore")
    rows = frame[~failed_mask(frame)]
    if rows.image_path.isna().any():
        raise DataError(f"{run_dir}: rows without a saved image; rescoring needs save_images=true")
    needs = {k for m in metrics for k in m.needs}
    dataset = instantiate(config["dataset"]) if needs - set(frame.columns) else None
    start = time.perf_counter()
    scores: dict[str, dict[str, Any]] = {}
    records = rows.to_dict("records")
    for begin in range(0, len(records), batch_size):
        for batch in _same_size(records[begin : begin + batch_size], run_dir):
            refs = torch.stack([read_image(run_dir / r["reference_path"]) for r in batch]).to(device)
            edited = torch.stack([read_image(run_dir / r["image_path"], refs.shape[-2:]) for r in batch]).to(device)
            samples = [dataset.load(r["sample_id"]) if dataset is not None else _RowSample(r) for r in batch]
            cases = [(r["sample_id"], r) for r in batch]
            out: dict[str, Any] = {}
            for metric in metrics:
                out.update(metric(edited, refs, **metric_context([metric], cases, samples, refs)))
            for i, r in enumerate(batch):
                scores[r["case_id"]] = {k: _value(v, i) for k, v in out.items()}
                if stacks:  # the row's judge stacks: the rescored judges' replace theirs, others stay
                    scores[r["case_id"]]["judge_stack"] = _merge_json(r.get("judge_stack"), stacks)
            _other_references(batch, edited, samples, cases, metrics, run_dir, device, scores)
    columns = sorted({k for values in scores.values() for k in values})
    _write_back(store, scores, columns, settings, {m.name: m.weights for m in metrics})
    manifest = store.read_json("manifest.json")  # re-read: the run may have been resumed meanwhile
    manifest.setdefault("metric_settings", {}).update(settings)
    for metric in metrics:
        manifest.setdefault("metrics", {})[metric.name] = {"weights": metric.weights,
                                                           "higher_is_better": metric.higher_is_better}
        for column in metric.columns():
            if column not in manifest.setdefault("metric_order", []):
                manifest["metric_order"].append(column)
    if judges:
        manifest["judge_stacks"] = {**manifest.get("judge_stacks", {}), **{j.prefix: j.stack for j in judges}}
    entry = {"finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "overrides": list(overrides),
             "columns": columns, "rows": len(scores), "seconds": round(time.perf_counter() - start, 3)}
    manifest["rescores"] = [*manifest.get("rescores", []), entry]
    store.write_json("manifest.json", manifest)
    for judge in judges:
        print(judge.summary_line())
    return entry


def _other_references(batch, edited, samples, cases, metrics, run_dir: Path, device, scores) -> None:
    """Rows scored against one reference of several (``reference_kind``, attnedit.run.references)
    also get ``<column>_vs_<kind>`` from the other's saved image, with the same metric."""
    from attnedit.run.runner import metric_context

    for kind in REFERENCE_FILES:
        idx = [i for i, r in enumerate(batch) if isinstance(r.get(REFERENCE_KIND), str) and r[REFERENCE_KIND] != kind]
        if not idx:
            continue
        refs = torch.stack([read_image(run_dir / Path(batch[i]["reference_path"]).parent / REFERENCE_FILES[kind])
                            for i in idx]).to(device)
        picked = [cases[i] for i in idx], [samples[i] for i in idx]
        for metric in metrics:
            values = metric(edited[idx], refs, **metric_context([metric], *picked, refs))
            for k, v in values.items():
                if torch.is_tensor(v):  # a metric's settings columns (text) stay the main column's
                    for j, i in enumerate(idx):
                        scores[batch[i]["case_id"]][f"{k}_vs_{kind}"] = _value(v, j)


class _RowSample:
    """Stands in for a sample where every field a metric needs is a row column."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.id, self.image, self.category, self.fields = row["sample_id"], None, row.get("category"), {}


def _same_size(batch: list[dict[str, Any]], run_dir: Path) -> list[list[dict[str, Any]]]:
    """Consecutive rows whose edited images share a size (a batch is one tensor)."""
    groups: list[list[dict[str, Any]]] = []
    last = None
    for row in batch:
        with Image.open(run_dir / row["image_path"]) as image:
            size = image.size
        if size != last:
            groups.append([])
            last = size
        groups[-1].append(row)
    return groups


def _value(values: Any, i: int) -> Any:
    value = values[i]
    return value.item() if torch.is_tensor(value) else value


def _write_back(store: RunStore, scores: dict[str, dict[str, Any]], columns: list[str],
                settings: dict[str, dict[str, Any]], weights: dict[str, str]) -> None:
    """Each part rewritten atomically with the new values, settings hashes and weights."""
    hashes = {column: s["hash"] for column, s in settings.items()}
    for part in store.part_files():
        frame = pq.read_table(part).to_pandas()
        ok = ~failed_mask(frame)
        for column in columns:
            new = [scores.get(cid, {}).get(column) if good else None for cid, good in zip(frame.case_id, ok)]
            old = frame[column] if column in frame else pd.Series([None] * len(frame), index=frame.index)
            hit = [good and column in scores.get(cid, {}) for cid, good in zip(frame.case_id, ok)]
            frame[column] = [n if h else o for n, h, o in zip(new, hit, old)]
            if all(isinstance(v, float) or v is None for v in frame[column]):
                frame[column] = frame[column].astype(float)
        hit = np.array([good and cid in scores for cid, good in zip(frame.case_id, ok)], dtype=bool)
        kinds = frame[REFERENCE_KIND] if REFERENCE_KIND in frame else pd.Series([None] * len(frame))
        frame[SETTINGS_COLUMN] = [  # the _vs_ columns as their metric's (attnedit.run.references)
            _merge_json(v, with_other_settings(hashes, other_kinds(k)) if isinstance(k, str) else hashes) if h else v
            for v, h, k in zip(frame.get(SETTINGS_COLUMN, pd.Series([None] * len(frame))), hit, kinds)]
        if "metric_weights" in frame:
            frame["metric_weights"] = [_merge_json(v, weights) for v in frame.metric_weights]
            frame["random_backbone"] = [any(str(w).startswith("random") for w in json.loads(v).values())
                                        for v in frame.metric_weights]
        store._write_part(pa.Table.from_pandas(frame, preserve_index=False), part)


def _merge_json(value: Any, update: dict[str, str]) -> str:
    current = json.loads(value) if isinstance(value, str) and value else {}
    return json.dumps({**current, **update}, sort_keys=True)
