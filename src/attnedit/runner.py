"""The experiment loop: enumerate cases -> edit -> score -> store. The only place that
ties a backend, a method, a dataset and metrics together.

Where the backend's reference is the unedited generation (``reference_is_unedited``,
DDPM), an edit the method calls an identity (``is_identity``, e.g. alpha = 0) is not
recomputed: its image is the reference (column ``identity_edit``; ``seconds_per_case``
NaN, as the reference's cost is not counted). Its distance through the edit path is the
run's numerical floor, measured once per run (attnedit.numerical_floor) and shown in
every table title.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm.auto import tqdm

from attnedit.backends.base import check_description
from attnedit.data.base import Sample
from attnedit.errors import ConfigError, NonFiniteOutputError
from attnedit.manifest import SessionCost, build_manifest, resumed_manifest, run_cost
from attnedit.metrics.base import PairMetric
from attnedit.numerical_floor import measure_floor
from attnedit.signature import config_signature, resolved_container
from attnedit.store import RunStore
from attnedit.tracking import build_logger

log = logging.getLogger(__name__)


def case_id(sample_id: str, method: str, edit: dict[str, Any]) -> str:
    """Readable and unique per (sample, edit parameters)."""
    params = ",".join(f"{k}={edit[k]}" for k in sorted(edit) if k not in ("label", "source_text", "target_text"))
    return f"{sample_id}|{method}|{params}"


def build_metrics(cfg_metrics: DictConfig | None) -> list[PairMetric]:
    metrics = [instantiate(node) for node in (cfg_metrics or {}).values()]
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ConfigError(f"two metrics share a column name: {names}")
    return metrics


def run_dir_for(cfg: DictConfig) -> Path:
    return Path(cfg.paths.runs_dir) / str(cfg.name) / config_signature(cfg)


def _save_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.clamp(0, 1).permute(1, 2, 0).mul(255).round().byte().numpy())
    Image.fromarray(array).save(path)


def _context(metrics, cases, samples, references) -> dict[str, Any]:
    """Per-case fields the metrics declared in ``needs``: edit params first, then sample fields."""
    context: dict[str, Any] = {}
    for key in {k for m in metrics for k in m.needs}:
        values = []
        for (_, edit), sample in zip(cases, samples):
            if key in edit:
                values.append(edit[key])
            elif key == "source_image":
                values.append(sample.image)
            else:
                values.append(sample.fields.get(key))
        if any(v is None for v in values):
            context[key] = None
        elif all(torch.is_tensor(v) for v in values):
            context[key] = torch.stack(values)
        else:
            context[key] = values
    return context


class Runner:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.config = resolved_container(cfg)
        self.signature = config_signature(cfg)
        self.run_dir = run_dir_for(cfg)
        self.store = RunStore(self.run_dir)
        torch.manual_seed(int(cfg.get("seed", 0)))
        self.backend = instantiate(cfg.model)
        self.method = instantiate(cfg.method)
        self.dataset = instantiate(cfg.dataset)
        self.metrics = build_metrics(cfg.get("metrics"))
        self.logger = build_logger(cfg.get("logger"))
        self.batch_size = int(cfg.get("batch_size", 8))
        self.session: SessionCost | None = None  # this process's cost, recorded by finish()
        self.cases_done = 0
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    # -- enumeration -------------------------------------------------------------------
    def sample_ids(self) -> list[str]:
        ids = self.dataset.sample_ids()
        shard = self.cfg.get("shard") or {}
        index, count = int(shard.get("index", 0)), int(shard.get("count", 1))
        if not 0 <= index < count:
            raise ConfigError(f"shard.index={index} must be in [0, shard.count={count})")
        return ids[index::count]

    def cases(self) -> list[tuple[str, dict[str, Any]]]:
        edits = self.method.edits()
        return [(sid, edit) for sid in self.sample_ids() for edit in edits]

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> Path:
        self.method.setup(self.backend, cache_dir=str(self.cfg.paths.cache_dir))
        weights = {m.name: m.weights for m in self.metrics}
        random_backbone = any(m.uses_random_weights for m in self.metrics)
        model = check_description(self.backend.describe(), type(self.backend).__name__)
        manifest = build_manifest(
            self.config,
            self.signature,
            model=model,
            method=self.method.describe(),
            dataset=self.dataset.describe(),
            metrics={m.name: {"weights": m.weights, "higher_is_better": m.higher_is_better} for m in self.metrics},
            metric_order=[m.name for m in self.metrics],  # the JSON is key-sorted; tables keep config order
        )
        if (self.run_dir / "manifest.json").exists():  # resumed: keep the first run's facts
            manifest = resumed_manifest(self.store.read_json("manifest.json"), manifest)
        self.session = SessionCost(model["device"], model["device_name"])
        self.store.write_json("manifest.json", manifest)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        self.logger.start(self.config, str(self.run_dir), self.signature, self.cfg.get("group"), [str(self.cfg.name)])

        self._check_metric_inputs(self.method.edits())
        all_cases = self.cases()
        done = self.store.done_case_ids()
        method_name = self.method.name
        pending = [(sid, e) for sid, e in all_cases if case_id(sid, method_name, e) not in done]
        resumed = {sid for sid, e in all_cases if case_id(sid, method_name, e) in done}  # rows in earlier parts
        sample_rows: dict[str, list[dict[str, Any]]] = {}  # this session's rows, until the sample's figure
        self.cases_done = 0
        remaining_per_sample: dict[str, int] = {}
        for sid, _ in pending:
            remaining_per_sample[sid] = remaining_per_sample.get(sid, 0) + 1
        if done:
            print(f"resuming {self.run_dir}: {len(all_cases) - len(pending)} of {len(all_cases)} cases already done")

        samples: OrderedDict[str, Sample] = OrderedDict()
        references: dict[str, torch.Tensor] = {}
        self._numerical_floor(manifest, samples, references, set(remaining_per_sample))
        bar = tqdm(total=len(all_cases), initial=len(all_cases) - len(pending), desc=f"{self.cfg.name}", unit="case",
                   disable=not self.cfg.get("progress", True))
        for start in range(0, len(pending), self.batch_size):
            batch = pending[start : start + self.batch_size]
            for sid, _ in batch:
                if sid not in samples:
                    samples[sid] = self.dataset.load(sid)
            batch_samples = [samples[sid] for sid, _ in batch]
            self._references([samples[s] for s in dict.fromkeys(sid for sid, _ in batch)], references)
            rows = self._run_batch(batch, batch_samples, references, weights, random_backbone)
            self.store.append(rows)
            for row in rows:
                sample_rows.setdefault(row["sample_id"], []).append(row)
            self.cases_done += len(rows)
            self.logger.log_cases(rows, {r["case_id"]: (r["reference_path"], r["image_path"]) for r in rows})
            bar.update(len(batch))
            for sid, _ in batch:
                remaining_per_sample[sid] -= 1
                if remaining_per_sample[sid] == 0:  # sample finished: free memory, draw its figure now
                    references.pop(sid, None)
                    samples.pop(sid, None)
                    self._sample_figure(sid, sample_rows.pop(sid, []), sid in resumed)
        bar.close()
        return self.finish()

    def _references(self, samples: list[Sample], references: dict[str, torch.Tensor]) -> None:
        """Compute (one batch) and save the references of ``samples`` not held yet."""
        missing = [s for s in samples if s.id not in references]
        if not missing:
            return
        for sample, ref in zip(missing, self.backend.reference(missing)):
            references[sample.id] = ref
            if self.cfg.get("save_images", True):
                _save_png(ref, self.store.images_dir / sample.id / "reference.png")

    def _numerical_floor(self, manifest, samples, references, pending_ids: set[str]) -> None:
        """Measure the run's numerical floor once (on the numerical_floor.samples first
        samples) into the manifest; their references stay for the loop if still needed."""
        count = min(int((self.cfg.get("numerical_floor") or {}).get("samples", 2)), len(self.sample_ids()))
        if count < 1 or not getattr(self.backend, "reference_is_unedited", False) or self.method.identity_edit() is None:
            return
        if len((manifest.get("numerical_floor") or {}).get("sample_ids", [])) == count:
            return  # measured by an earlier session of this run
        floor_samples = [self.dataset.load(sid) for sid in self.sample_ids()[:count]]
        held: dict[str, torch.Tensor] = {}
        self._references(floor_samples, held)
        manifest["numerical_floor"] = measure_floor(
            self.backend, self.method, floor_samples, self.batch_size, torch.stack([held[s.id] for s in floor_samples]))
        self.store.write_json("manifest.json", manifest)
        for sample in floor_samples:
            if sample.id in pending_ids:
                samples[sample.id] = sample
                references[sample.id] = held[sample.id]

    def _check_metric_inputs(self, edits: list[dict[str, Any]]) -> None:
        """Fail before any work when an edit lacks a field a metric needs (e.g. texts)."""
        for metric in self.metrics:
            for key in metric.needs:
                lacking = sorted({str(e.get("direction", e.get("label", "?"))) for e in edits if key in e and e[key] is None})
                if lacking:
                    raise ConfigError(
                        f"metric '{metric.name}' needs '{key}' for every edit, but direction(s) {', '.join(lacking)} "
                        "have none. Label them: method.labels={<k>: {label: ..., source: ..., target: ...}}, or "
                        "`attnedit-directions label=auto out=<file>` then method.directions_file=<file>."
                    )

    def _run_batch(self, batch, batch_samples, references, weights, random_backbone) -> list[dict[str, Any]]:
        edits = [edit for _, edit in batch]
        shortcut = getattr(self.backend, "reference_is_unedited", False)
        identity = [shortcut and self.method.is_identity(edit) for edit in edits]
        todo = [i for i, same in enumerate(identity) if not same]
        refs = torch.stack([references[s.id] for s in batch_samples])
        images = refs.clone()  # identity edits: the reference is the image
        extras = [{} for _ in batch]
        seconds = float("nan")
        if todo:
            start = time.perf_counter()
            with self.method.control(self.backend, [edits[i] for i in todo]) as control:
                generated = self.backend.generate([batch_samples[i] for i in todo], control)
            seconds = (time.perf_counter() - start) / len(todo)
            if not torch.isfinite(generated).all():
                raise NonFiniteOutputError(f"{self.method.name} produced NaN/inf images for cases {batch}")
            images[todo] = generated
            for i, extra in zip(todo, getattr(control, "row_extras", None) or [{}] * len(todo)):
                extras[i] = extra  # per-case facts a method measured
        scores: dict[str, torch.Tensor] = {}
        for metric in self.metrics:
            scores.update(metric(images, refs, **_context([metric], batch, batch_samples, refs)))
        rows = []
        for i, ((sid, edit), sample) in enumerate(zip(batch, batch_samples)):
            cid = case_id(sid, self.method.name, edit)
            reference_path = self.store.images_dir / sid / "reference.png"
            image_path = reference_path if identity[i] else self.store.images_dir / sid / f"{_slug(cid)}.png"
            if self.cfg.get("save_images", True) and not identity[i]:
                _save_png(images[i], image_path)
            row = {
                "case_id": cid,
                "sample_id": sid,
                "category": sample.category,
                "method": self.method.name,
                **edit,
                **{k: _scalar(v[i]) for k, v in scores.items()},
                **extras[i],
                "identity_edit": identity[i],
                "seconds_per_case": float("nan") if identity[i] else seconds,
                "batch_size": len(todo),
                "image_path": str(image_path.relative_to(self.run_dir)),
                "reference_path": str(reference_path.relative_to(self.run_dir)),
                "model": self.backend.name,
                "model_random_weights": bool(getattr(self.backend, "random_weights", False)),
                "metric_weights": json.dumps(weights, sort_keys=True),
                "random_backbone": random_backbone,
                "run_signature": self.signature,
            }
            rows.append(row)
        return rows

    def _sample_figure(self, sample_id: str, rows: list[dict[str, Any]], resumed: bool) -> None:
        """The sample's alpha sweep from its rows: this session's, or (a resumed sample) its
        rows in the store, read alone rather than the whole store after every sample."""
        if not self.cfg.get("figures", True) or not self.cfg.get("save_images", True):
            return
        from attnedit.report.plots import alpha_sweep_figure

        frame = self.store.read(sample_id=sample_id) if resumed else pd.DataFrame(rows)
        if "alpha" not in frame or "direction" not in frame:
            return
        path = alpha_sweep_figure(frame[frame.sample_id == sample_id], self.run_dir, self.store.figures_dir)
        if path is not None:
            self.logger.log_figure(f"alpha_sweep/{sample_id}", str(path))

    def finish(self) -> Path:
        from attnedit.report.studies import write_tables

        frame = self.store.read()
        self._record_cost(frame)
        if not frame.empty:
            tables = write_tables(self.run_dir)
            for name, table in tables.items():
                self.logger.log_table(name, table)
            self.logger.log_summary(_summary(frame, self.metrics))
        self.logger.finish()
        return self.run_dir

    def _record_cost(self, frame) -> None:
        """manifest['cost'] updated with this session (re-read first: shards may share a run)."""
        if self.session is None:
            return
        manifest = self.store.read_json("manifest.json")
        seconds = frame.seconds_per_case if "seconds_per_case" in frame else pd.Series(dtype=float)
        manifest["cost"] = run_cost(manifest.get("cost"), self.session.finish(self.cases_done), seconds)
        self.store.write_json("manifest.json", manifest)
        self.session = None


def _summary(frame, metrics) -> dict[str, float]:
    out = {}
    for metric in metrics:
        if metric.name in frame:
            values = frame[metric.name].astype(float)
            out[f"mean/{metric.name}"] = float(values[values.map(math.isfinite)].mean())
    return out


def _scalar(value):
    if torch.is_tensor(value):
        return value.item()
    return value


def _slug(text: str) -> str:
    """File-system-safe, readable, and unique (a hash suffix survives truncation)."""
    keep = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text.split("|", 1)[-1])
    return f"{keep[:120]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
