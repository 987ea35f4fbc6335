"""The experiment loop: enumerate cases -> edit -> score -> store. The only place that
ties a backend, a method, a dataset and metrics together.

Where the backend's reference is the unedited generation (``reference_is_unedited``,
DDPM), an edit the method calls an identity (``is_identity``, e.g. alpha = 0) is not
recomputed: its image is the reference (column ``identity_edit``; ``seconds_per_case``
NaN, as the reference's cost is not counted). Its distance through the edit path is the
run's numerical floor, measured once per run (attnedit.run.numerical_floor) and shown in
every table title. A method that samples otherwise (pullback's eta-1 boosting) is scored
against its own sampler's unedited image too (attnedit.run.references: ``reference_kind``,
``<metric>_vs_<kind>``), and its floor measured against that one.

A case that raises is a failed row and the run goes on (attnedit.run.failures: the policy,
batch retries one case at a time, what a resume retries); ``failure`` holds the line
the run ends with when cases failed. An operating-system error on the run's own folder (a
full disk, its permissions changed, the folder removed) is no case's fault: the run stops
with :class:`ResultsFolderError`, which says how many cases are stored (they stay, and the
same command resumes). Start-up stages print their times (attnedit.run.stages).

Metrics score the edited image and its reference rounded to 8 bits, as saved (the
official PIE-Bench evaluator scores the saved files; PIE-Bench edits are saved at the
pipeline's output size as the official scripts save them and scored through
attnedit-evaluate's own decoding and resize: attnedit.run.saved_edits); each metric column's settings are
in the manifest and each row (attnedit.metrics.settings), so ``attnedit-rescore`` can
recompute a column from the saved PNGs and tables never pool different settings.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
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

from attnedit.backends.base import check_control, check_description, row_columns
from attnedit.columns import ERROR, FAILED, OWN_SAMPLER, UNEDITED, successful
from attnedit.data.base import Sample
from attnedit.errors import ConfigError, NonFiniteOutputError, ResultsFolderError
from attnedit.judge.metric import unavailable
from attnedit.methods.labeling import check_probes_disjoint, with_null_texts
from attnedit.metrics.registry import build_metrics
from attnedit.metrics.settings import (
    SETTINGS_COLUMN,
    all_settings,
    keep_recorded,
    quantize,
    row_settings,
    scored_images_label,
)
from attnedit.run import faults
from attnedit.run.failures import failure_line, run_cases
from attnedit.run.manifest import SessionCost, build_manifest, resumed_manifest, run_cost
from attnedit.run.numerical_floor import measure_floor
from attnedit.run.progress import work_plan
from attnedit.run.saved_edits import saved_edit
from attnedit.run.references import OWN_REFERENCE_FILE, ReferenceChoice
from attnedit.run.secrets import redact
from attnedit.run.stages import stage
from attnedit.run.tracking import build_logger
from attnedit.run.workunits import WorkUnits
from attnedit.store.claims import DEFAULT_STALE_SECONDS, Claims
from attnedit.store.run_store import RunStore
from attnedit.store.signature import config_signature, resolved_container, same_config_elsewhere

log = logging.getLogger(__name__)


#: Edit fields that describe a direction's label, not the edit: not part of a case's id.
LABEL_FIELDS = ("label", "source_text", "target_text", "label_probes", "null_texts")


def case_id(sample_id: str, method: str, edit: dict[str, Any]) -> str:
    """Readable and unique per (sample, edit parameters)."""
    params = ",".join(f"{k}={edit[k]}" for k in sorted(edit) if k not in LABEL_FIELDS)
    return f"{sample_id}|{method}|{params}"


def run_dir_for(cfg: DictConfig) -> Path:
    return Path(cfg.paths.runs_dir) / str(cfg.name) / config_signature(cfg)


def _save_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    faults.os_error("image", path)
    array = (image.clamp(0, 1).permute(1, 2, 0).mul(255).round().byte().numpy())
    Image.fromarray(array).save(path)


def metric_context(metrics, cases, samples, references) -> dict[str, Any]:
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


def _check_not_elsewhere(run_dir: Path, config: dict[str, Any]) -> None:
    """A new run directory whose config already has rows under an earlier signature stops
    before any work, naming both folders, rather than computing them all again."""
    if (run_dir / "manifest.json").exists():
        return
    earlier = same_config_elsewhere(run_dir, config)
    if earlier:
        raise ConfigError(
            f"{earlier[0]} holds this config's rows under the signature an earlier attnedit gave it (README, "
            f"'Changes'); to resume it: mv {earlier[0]} {run_dir} and run again; to start over, move it elsewhere")


class Runner:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.config = resolved_container(cfg)
        self.signature = config_signature(cfg)
        self.run_dir = run_dir_for(cfg)
        _check_not_elsewhere(self.run_dir, self.config)
        self.store = RunStore(self.run_dir)
        torch.manual_seed(int(cfg.get("seed", 0)))
        with stage(f"loading model {cfg.model.get('name', '')}".rstrip()):
            self.backend = instantiate(cfg.model)
        self.method = instantiate(cfg.method)
        self.dataset = instantiate(cfg.dataset)
        with stage(f"loading metrics {', '.join(map(str, cfg.get('metrics') or []))}"[:100].rstrip()):
            self.metrics = build_metrics(cfg.get("metrics"))
        # VLM judges (attnedit.judge.metric) archive their replies in the run dir and record their stack
        self.judges = [m for m in self.metrics if hasattr(m, "bind_run")]
        for judge in self.judges:
            judge.bind_run(self.run_dir)
        self.judge_stacks = {j.prefix: j.stack for j in self.judges}
        # How edited images are saved, hence scored: PNG, or what the dataset's protocol saves (PIE-Bench: JPEG of
        # the pipeline's full-size output, scored as attnedit-evaluate scores it: attnedit.run.saved_edits).
        self.saved_format = (getattr(self.dataset, "edited_format", "png"), getattr(self.dataset, "jpeg_quality", 75))
        self.saved_size = getattr(self.dataset, "saved_size", "source")
        self.native_outputs = self.saved_size == "output" and hasattr(self.backend, "generate_native")
        if self.native_outputs and getattr(self.backend, "resize", "bicubic") != "bicubic":
            raise ConfigError(f"model.resize={self.backend.resize} resizes outputs before saving, which "
                              "dataset.saved_size=output does not do (saved at full size, resized bicubic when "
                              "scored, as attnedit-evaluate); pass dataset.saved_size=source or drop model.resize")
        self.metric_settings = all_settings(self.metrics, self.config.get("metrics"),
                                            scored_images_label(*self.saved_format, self.saved_size))
        self.logger = build_logger(cfg.get("logger"))
        self.batch_size = int(cfg.get("batch_size", 8))
        self.session: SessionCost | None = None  # this process's cost, recorded by finish()
        self.claims = Claims(self.run_dir, float((cfg.get("claims") or {}).get("stale_seconds", DEFAULT_STALE_SECONDS)))
        self.cases_done = 0
        self.failure: str | None = None  # set by finish() when cases of this run failed
        self.choice = ReferenceChoice(None, None)  # run(): after the method's setup
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
        for metric in self.metrics:  # Directional CLIP's label-shuffled null: other directions' label texts
            edits = with_null_texts(edits, getattr(self.method, "labels", {}), getattr(metric, "label_null", 0),
                                    getattr(metric, "label_null_seed", 0))
        return [(sid, edit) for sid in self.sample_ids() for edit in edits]

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> Path:
        """Every case of the run stored (resuming what is there); the run directory."""
        try:
            return self._run()
        except OSError as err:
            stop = self._results_error(err)
            if stop is None:
                raise
            raise stop from err

    def _run(self) -> Path:
        with stage(f"setting up method {self.method.name} (its directions)"):
            self.method.setup(self.backend, cache_dir=str(self.cfg.paths.cache_dir))
        check_probes_disjoint(getattr(self.method, "labels", {}), getattr(self.dataset, "seeds", None))
        save_own = (lambda sid, image: _save_png(image, self.store.images_dir / sid / OWN_REFERENCE_FILE)) \
            if self.cfg.get("save_images", True) else None
        self.choice = ReferenceChoice(self.backend, self.method, save_own)
        weights = {m.name: m.weights for m in self.metrics}
        random_backbone = any(m.uses_random_weights for m in self.metrics)
        model = check_description(self.backend.describe(), type(self.backend).__name__)
        manifest = build_manifest(
            redact(self.config),  # secrets (tokens, passwords) are written as ***
            self.signature,
            model=model,
            method=self.method.describe(),
            dataset=self.dataset.describe(),
            metrics={m.name: {"weights": m.weights, "higher_is_better": m.higher_is_better} for m in self.metrics},
            metric_order=[c for m in self.metrics for c in m.columns()],  # the JSON is key-sorted; tables keep config order
            plan=work_plan(self.dataset.sample_ids(), [case_id("", self.method.name, e) for e in self.method.edits()]),
            metric_settings=self.metric_settings,
            **({"judge_stacks": self.judge_stacks} if self.judges else {}),
        )

        def merge(previous):  # a resume keeps the first run's facts
            if previous is None:
                return manifest
            merged = resumed_manifest(previous, manifest)
            merged.setdefault("metric_settings", self.metric_settings)  # a manifest without them
            return merged

        # under the run's lock: writers starting together record one first run and resumes
        manifest = self.store.update_json("manifest.json", merge)
        self.metric_settings = keep_recorded(manifest.get("metric_settings") or {}, self.metric_settings)
        self.session = SessionCost(model["device"], model["device_name"])
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact(self.config))))
        self.logger.start(self.config, str(self.run_dir), self.signature, self.cfg.get("group"), [str(self.cfg.name)])

        self._check_metric_inputs(self.method.edits())
        all_cases = self.cases()
        done = self.store.done_case_ids()
        failed_before = self.store.failed_case_ids()  # retried below, their rows replaced
        method_name = self.method.name
        pending = [(sid, e) for sid, e in all_cases if case_id(sid, method_name, e) not in done]
        resumed = {sid for sid, e in all_cases if case_id(sid, method_name, e) in done}  # rows in earlier parts
        sample_rows: dict[str, list[dict[str, Any]]] = {}  # this session's rows, until the sample's figure
        self.cases_done = 0
        if done:
            print(f"resuming {self.run_dir}: {len(all_cases) - len(pending)} of {len(all_cases)} cases already done")
        if failed_before:
            print(f"retrying {len(failed_before)} failed case(s)")

        samples: OrderedDict[str, Sample] = OrderedDict()
        references: dict[str, torch.Tensor] = {}
        self._numerical_floor(manifest, samples, references, {sid for sid, _ in pending})

        resumed = {sid for sid, e in all_cases if case_id(sid, method_name, e) in done}  # rows in earlier parts
        sample_rows: dict[str, list[dict[str, Any]]] = {}  # this session's rows, until the sample's figure

        def complete(sid: str, computed: bool) -> None:  # a sample's rows are all on disk
            references.pop(sid, None)
            self.choice.forget(sid)
            samples.pop(sid, None)
            rows = sample_rows.pop(sid, [])
            if computed or not self._figure_path(sid).exists():
                faults.die_at("before_figure")  # only where a figure is due (not a sample finished earlier)
                # from this session's rows; a sample finished earlier (or by another writer) is read alone
                self._sample_figure(sid, rows, resumed=sid in resumed or not computed)

        position = {case_id(sid, method_name, e): i for i, (sid, e) in enumerate(all_cases)}
        units = WorkUnits(pending, self.batch_size, self.claims, self.store, lambda sid, e: case_id(sid, method_name, e),
                          complete, figure_only=self._missing_figures(pending), position=position.__getitem__)
        bar = tqdm(total=len(all_cases), initial=len(all_cases) - len(pending), desc=f"{self.cfg.name}", unit="case",
                   disable=not self.cfg.get("progress", True))
        faults.barrier()
        try:
            for batch in units.batches():
                rows = run_cases(batch, lambda cases: self._load_and_run(cases, samples, references, weights,
                                                                         random_backbone),
                                 lambda case, error: self._failed_row(case, samples, error, weights, random_backbone))
                faults.os_error("part", self.store.cases_dir)
                part = self.store.append(rows)
                for row in rows:
                    sample_rows.setdefault(row["sample_id"], []).append(row)
                retried = {row["case_id"] for row in rows} & failed_before
                if retried:  # one row per case: the retry's row replaces the failed one
                    self.store.drop_failed(retried, keep=part)
                self.cases_done += len(rows)
                self.logger.log_cases(rows, {r["case_id"]: (r["reference_path"], r["image_path"]) for r in rows})
                bar.update(len(batch))
                units.stored(batch)  # finished samples: figure drawn, claim removed
        finally:  # also when stopped (Ctrl-C, a full disk): a resume finds no claim of this process
            bar.close()
            try:
                self.claims.release_all()
            except OSError:  # the folder went away or read-only: the claims of a dead process are stale
                pass
        return self.finish()

    def _load_and_run(self, batch, samples, references, weights, random_backbone) -> list[dict[str, Any]]:
        try:
            for sid, _ in batch:
                if sid not in samples:
                    samples[sid] = self.dataset.load(sid)
            self._references([samples[s] for s in dict.fromkeys(sid for sid, _ in batch)], references)
            rows = []  # a batch is one tensor: samples of other sizes (GEdit, ImgEdit photos) go in their own
            for group in _same_size(batch, references):
                rows += self._run_batch(group, [samples[sid] for sid, _ in group], references, weights, random_backbone)
            return rows
        except OSError as err:  # an image the run's folder refused stops the run, fails no case
            stop = self._results_error(err)
            if stop is None:
                raise
            raise stop from err

    def _results_error(self, err: OSError) -> ResultsFolderError | None:
        """``err`` as the error of the run's own folder, with what is stored; None for
        another OS error (a dataset file: that case's failure)."""
        named = next((str(n) for n in (err.filename, err.filename2) if n), None)
        full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
        if named is not None:
            if not (full or Path(os.path.abspath(named)).is_relative_to(os.path.abspath(self.run_dir))):
                return None
            path = named
        else:  # pyarrow names no file: the folders' state says whose error it is
            blocked = next((f for f in (self.store.cases_dir, self.store.images_dir, self.store.figures_dir,
                                        self.store.tables_dir) if not f.is_dir() or not os.access(f, os.W_OK)), None)
            if blocked is None and not full:
                return None
            path = blocked or self.run_dir
        reason = os.strerror(err.errno) if err.errno else str(err)
        return ResultsFolderError(path, reason, self.saved_text())

    def saved_text(self) -> str:
        """``<k> of <n> cases saved in <run dir>``: what a stopped run keeps (of this shard)."""
        try:
            ours = {case_id(sid, self.method.name, edit) for sid, edit in self.cases()}
        except Exception:  # noqa: BLE001 - stopped before the method could list its edits
            ours = None
        try:
            done = self.store.done_case_ids()
        except OSError:  # the folder is gone or unreadable
            done = set()
        count = f"{len(done & ours)} of {len(ours)}" if ours is not None else str(len(done))
        return f"{count} cases saved in {self.run_dir}"

    def _failed_row(self, case, samples, error: str, weights, random_backbone) -> dict[str, Any]:
        """A case that raised: its ids, edit and error; metric columns NaN; no edited image."""
        sid, edit = case
        reference_path = self.store.images_dir / sid / self.choice.file_name()
        return {
            "case_id": case_id(sid, self.method.name, edit),
            "sample_id": sid,
            "category": samples[sid].category if sid in samples else None,
            "method": self.method.name,
            **edit,
            **{m.name: float("nan") for m in self.metrics},
            "identity_edit": False,
            "seconds_per_case": float("nan"),
            "batch_size": 1,
            "image_path": None,
            "reference_path": str(reference_path.relative_to(self.run_dir)) if reference_path.exists() else None,
            "model": self.backend.name,
            "model_random_weights": bool(getattr(self.backend, "random_weights", False)),
            **row_columns(self.backend),
            **self.choice.row(),  # the reference its reference_path names, as a successful row's
            "metric_weights": json.dumps(weights, sort_keys=True),
            "random_backbone": random_backbone,
            "run_signature": self.signature,
            FAILED: True,
            ERROR: error,
        }

    def _references(self, samples: list[Sample], references: dict[str, torch.Tensor]) -> None:
        """Compute and save the references of ``samples`` not held yet."""
        missing = [s for s in samples if s.id not in references]
        # one sample at a time: its reference (and the unedited states its edits start
        # from) is then the same bits whichever samples a resumed run, a shard or a second
        # writer happens to need with it; a batch would change the float rounding
        for sample in missing:
            ref = self.backend.reference([sample])[0]
            references[sample.id] = ref
            if self.cfg.get("save_images", True):
                _save_png(ref, self.store.images_dir / sample.id / "reference.png")

    def _numerical_floor(self, manifest, samples, references, pending_ids: set[str]) -> None:
        """Measure the run's numerical floor once (on the numerical_floor.samples first
        samples) into the manifest; their references stay for the loop if still needed."""
        count = min(int((self.cfg.get("numerical_floor") or {}).get("samples", 2)), len(self.dataset.sample_ids()))
        if count < 1 or not getattr(self.backend, "reference_is_unedited", False) or self.method.identity_edit() is None:
            return
        if len((manifest.get("numerical_floor") or {}).get("sample_ids", [])) == count:
            return  # measured by an earlier session (or another shard) of this run
        with stage(f"measuring the numerical floor on {count} sample(s)"):
            # the run's first samples, not the shard's: every shard measures the same floor
            floor_samples = [self.dataset.load(sid) for sid in self.dataset.sample_ids()[:count]]
            held: dict[str, torch.Tensor] = {}
            self._references(floor_samples, held)
            by_kind = self.choice.batch(floor_samples, torch.stack([held[s.id] for s in floor_samples]))
            kind = OWN_SAMPLER if OWN_SAMPLER in by_kind else UNEDITED  # the edit path's null: its sampler's image
            floor = measure_floor(self.backend, self.method, floor_samples, self.batch_size, by_kind[kind])
        if floor is not None and self.choice.sampler is not None:
            floor["reference"] = kind

        def keep_first(now: dict) -> dict:  # shards measure at once: the first one's floor stays
            if len((now.get("numerical_floor") or {}).get("sample_ids", [])) == count:
                return now
            return {**now, "numerical_floor": floor}

        manifest["numerical_floor"] = self.store.update_json("manifest.json", keep_first)["numerical_floor"]
        for sample in floor_samples:
            if sample.id in pending_ids:
                samples[sample.id] = sample
                references[sample.id] = held[sample.id]
            else:
                self.choice.forget(sample.id)

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
        by_kind = self.choice.batch(batch_samples, refs)  # + the method's own-sampler references
        extras = [{} for _ in batch]
        outputs: dict[int, torch.Tensor] = {}
        seconds = float("nan")
        if todo:
            start = time.perf_counter()
            with self.method.control(self.backend, [edits[i] for i in todo]) as yielded:
                control = check_control(yielded, self.method)
                generate = self.backend.generate_native if self.native_outputs else self.backend.generate
                generated = generate([batch_samples[i] for i in todo], control)
            seconds = (time.perf_counter() - start) / len(todo)
            if not torch.isfinite(generated).all():
                raise NonFiniteOutputError(f"{self.method.name} produced NaN/inf images for cases {batch}")
            if self.native_outputs:  # the model's own size: saved so, scored once resized (below)
                outputs = dict(zip(todo, generated))
            else:
                images[todo] = generated
            for i, extra in zip(todo, control.row_extras or [{}] * len(todo)):
                extras[i] = extra  # per-case facts a method measured
        scores: dict[str, torch.Tensor] = {}
        scored, scored_refs = quantize(images), quantize(by_kind[self.choice.kind])  # the saved PNGs (attnedit.metrics.settings)
        files: dict[int, bytes] = {}
        if self.saved_format[0] != "png" or self.saved_size == "output":  # scored as the saved files decode
            for i in todo:
                files[i], scored[i] = saved_edit(outputs.get(i, images[i]), tuple(refs.shape[-2:]),
                                                 *self.saved_format, self.saved_size, batch[i][0])
        for metric in self.metrics:
            scores.update(metric(scored, scored_refs, **metric_context([metric], batch, batch_samples, refs)))
        scores.update(self.choice.other_scores(self.metrics, scored, by_kind,
                                               lambda metric: metric_context([metric], batch, batch_samples, refs)))
        rows = []
        for i, ((sid, edit), sample) in enumerate(zip(batch, batch_samples)):
            cid = case_id(sid, self.method.name, edit)
            reference_path = self.store.images_dir / sid / self.choice.file_name()
            suffix = ".png" if self.saved_format[0] == "png" else ".jpg"
            unedited_path = self.store.images_dir / sid / "reference.png"  # an identity edit's image
            image_path = unedited_path if identity[i] else self.store.images_dir / sid / f"{_slug(cid)}{suffix}"
            if self.cfg.get("save_images", True) and not identity[i]:
                if i in files:
                    image_path.parent.mkdir(parents=True, exist_ok=True)
                    image_path.write_bytes(files[i])
                else:
                    _save_png(images[i], image_path)
            row = {
                "case_id": cid,
                "sample_id": sid,
                "category": sample.category,
                "method": self.method.name,
                **{k: sample.fields.get(k) for k in getattr(self.dataset, "row_fields", ())},  # e.g. GEdit's subset flag
                **edit,
                **{k: _scalar(v[i]) for k, v in scores.items()},
                **extras[i],
                **self.choice.row(),
                **({"edited_format": "png" if self.saved_format[0] == "png" else scored_images_label(*self.saved_format),
                    "saved_size": self.saved_size} if hasattr(self.dataset, "edited_format") else {}),
                "identity_edit": identity[i],
                "seconds_per_case": float("nan") if identity[i] else seconds,
                "batch_size": len(todo),
                "image_path": str(image_path.relative_to(self.run_dir)),
                "reference_path": str(reference_path.relative_to(self.run_dir)),
                "model": self.backend.name,
                "model_random_weights": bool(getattr(self.backend, "random_weights", False)),
                **row_columns(self.backend),
                "metric_weights": json.dumps(weights, sort_keys=True),
                "random_backbone": random_backbone,
                "run_signature": self.signature,
                **({"judge_stack": json.dumps({k: v["hash"] for k, v in self.judge_stacks.items()}, sort_keys=True)}
                   if self.judges else {}),
                SETTINGS_COLUMN: row_settings(self.choice.settings(self.metric_settings)),  # + the _vs_ columns
            }
            no_answer = unavailable(row, self.judges)  # a judge call that got no answer: a failed case, retried
            if no_answer:
                row.update({FAILED: True, ERROR: no_answer})
            rows.append(row)
        return rows

    def _figure_path(self, sample_id: str) -> Path:
        from attnedit.report.plots import alpha_sweep_path

        return alpha_sweep_path(self.store.figures_dir, sample_id)

    def _missing_figures(self, pending) -> list[str]:
        """Finished samples of this shard whose alpha-sweep figure is missing (a process
        killed between a sample's last rows and its figure): the resumed run draws them."""
        edits = self.method.edits()
        if not (self.cfg.get("figures", True) and self.cfg.get("save_images", True) and edits
                and all("alpha" in e and "direction" in e for e in edits)):
            return []
        open_ids = {sid for sid, _ in pending}
        return [s for s in self.sample_ids() if s not in open_ids and not self._figure_path(s).exists()]

    def _sample_figure(self, sample_id: str, rows: list[dict[str, Any]], resumed: bool) -> None:
        """The sample's alpha sweep from its rows: this session's, or (a resumed sample) its
        rows in the store, read alone rather than the whole store after every sample."""
        if not self.cfg.get("figures", True) or not self.cfg.get("save_images", True):
            return
        from attnedit.report.plots import alpha_sweep_figure

        frame = self.store.read(sample_id=sample_id) if resumed else pd.DataFrame(rows)
        if "alpha" not in frame or "direction" not in frame:
            return
        frame = successful(frame)  # a failed case has no image
        path = alpha_sweep_figure(frame[frame.sample_id == sample_id], self.run_dir, self.store.figures_dir)
        if path is not None:
            self.logger.log_figure(f"alpha_sweep/{sample_id}", str(path))

    def finish(self) -> Path:
        from attnedit.report.studies import write_tables

        frame = self.store.read()
        self._record_cost(frame)
        if not frame.empty:
            ours = {case_id(sid, self.method.name, edit) for sid, edit in self.cases()}
            self.failure = failure_line(frame[frame.case_id.isin(ours)], self.run_dir)
        if not frame.empty:
            write_tables(self.run_dir)
            self.logger.log_tables_dir(str(self.store.tables_dir))  # every CSV, with the columns it has
            self.logger.log_summary(_summary(frame, self.metrics))
            self.logger.log_failures(frame)
        self.logger.finish()
        for judge in self.judges:
            print(judge.summary_line())  # cache hits and misses: a rerun asks nothing twice
        return self.run_dir

    def _record_cost(self, frame) -> None:
        """manifest['cost'] updated with this session (re-read first: shards may share a run)."""
        if self.session is None:
            return
        seconds = frame.seconds_per_case if "seconds_per_case" in frame else pd.Series(dtype=float)
        session = self.session.finish(self.cases_done)
        self.store.update_json("manifest.json", lambda manifest: {
            **manifest, "cost": run_cost(manifest.get("cost"), session, seconds)})
        self.session = None


def _summary(frame, metrics) -> dict[str, float]:
    """Each metric's mean over the edits: alpha = 0 rows left out, as in the tables."""
    from attnedit.report.sad import edits_only

    frame, out = edits_only(frame), {}
    for metric in metrics:
        if metric.name in frame:
            values = frame[metric.name].astype(float)
            out[f"mean/{metric.name}"] = float(values[values.map(math.isfinite)].mean())
    return out


def _same_size(batch, references) -> list[list]:
    """The cases of ``batch`` grouped by their reference's size, in order of first appearance."""
    groups: dict[tuple, list] = {}
    for case in batch:
        groups.setdefault(tuple(references[case[0]].shape), []).append(case)
    return list(groups.values())


def _scalar(value):
    if torch.is_tensor(value):
        return value.item()
    return value


def _slug(text: str) -> str:
    """File-system-safe, readable, and unique (a hash suffix survives truncation)."""
    keep = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text.split("|", 1)[-1])
    return f"{keep[:120]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
