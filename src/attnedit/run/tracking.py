"""Experiment tracking: the runner reports cases, figures, tables and summaries to a Logger.

`logger=none` (the default) builds a NullLogger, which does nothing. `logger=wandb` builds
a WandbLogger, which mirrors a run to Weights & Biases (online, or offline for a later
`wandb sync`), shaped for W&B's dashboards: per-case values go to tables (never to history
charts, where case keys such as alpha would become metrics), the summary holds means, and
metric-vs-alpha curves are custom charts. Secrets never reach W&B: the config, the command
line and a multirun job's name go through run.secrets (secret keys kept, their values and
every secret value written ``***``).
"""

from __future__ import annotations

import json
import numbers
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from attnedit.columns import (
    ALPHA,
    CI_HIGH,
    CI_LOW,
    DIFF,
    DIRECTION,
    FAILED,
    MEAN,
    METHOD,
    N,
    N_FAILED,
    N_FINITE,
    N_NAN,
    P_VALUE,
    SIGNIFICANT,
    STD,
    failures,
    grid_columns,
    metric_names,
)
from attnedit.errors import AttneditError, ConfigError
from attnedit.run.secrets import redact, redact_argv

_MODES = (None, "online", "offline", "disabled")
#: The tables (attnedit-tables' CSVs of one SAD-like run, report/sad.py) the summary and the
#: curves are read from, so that W&B shows the numbers the report shows.
SUMMARY_TABLE, CURVES_TABLE = "summary.csv", "by_direction.csv"
ABS_ALPHA = "abs_alpha"
_STATS = (MEAN, STD, CI_LOW, CI_HIGH, N_FINITE, N_NAN, N_FAILED, DIFF, P_VALUE, SIGNIFICANT)


@contextmanager
def _redacted_argv() -> Iterator[None]:
    # wandb.init stores sys.argv in the run metadata, and overrides may carry a token.
    saved = sys.argv
    sys.argv = redact_argv(saved)
    try:
        yield
    finally:
        sys.argv = saved


def _multirun_hydra() -> Any:
    """Hydra's config of this multirun job; None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):  # ValueError: no Hydra app is running
        return None
    if hydra_cfg.mode != RunMode.MULTIRUN or not hydra_cfg.sweep.dir:
        return None
    return hydra_cfg


def multirun_group() -> str | None:
    """The Hydra multirun sweep dir (relative to the cwd when below it); None outside a multirun."""
    hydra_cfg = _multirun_hydra()
    if hydra_cfg is None:
        return None
    sweep = Path(hydra_cfg.sweep.dir)
    if sweep.is_absolute() and sweep.is_relative_to(Path.cwd()):
        sweep = sweep.relative_to(Path.cwd())
    return sweep.as_posix()[-128:]  # W&B's limit on group names


def _swept_keys(hydra_cfg: Any) -> set[tuple[str, str | None]] | None:
    """(key, package) of every override the sweep varies: the sweeper's ``params`` and the
    sweep overrides of the launching command (the sweep's multirun.yaml, written before any
    job starts); None when neither can be read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None, throw_on_missing=False) or {}
    overrides = [f"{k}={v}" for k, v in params.items()]
    try:
        launched = OmegaConf.load(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
        overrides += list(OmegaConf.select(launched, "hydra.overrides.task", default=None) or [])
    except (OSError, ValueError):  # another launcher's file system, or no such file
        if not overrides:
            return None
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None
    return {(o.key_or_group, o.package) for o in parsed if o.is_sweep_override()}


def multirun_name() -> str | None:
    """A multirun job's distinguishing overrides (those of its overrides whose key the sweep
    varies; all of them when the sweep's keys are unknown), secrets masked; None outside a
    multirun or for a job without overrides."""
    hydra_cfg = _multirun_hydra()
    if hydra_cfg is None:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = [str(o) for o in hydra_cfg.overrides.task]
    swept = _swept_keys(hydra_cfg)
    if swept:
        parsed = OverridesParser.create().parse_overrides(task)
        task = [text for text, o in zip(task, parsed) if (o.key_or_group, o.package) in swept] or task
    return " ".join(redact(task))[:128] or None


class Logger:
    """The interface the runner calls; every method is a no-op here."""

    def start(self, config: dict, run_dir: str, run_name: str, group: str | None = None,
              tags: Iterable[str] = ()) -> None:
        pass

    def log_cases(self, rows: list[dict], images: dict[str, tuple[str, str]]) -> None:
        pass

    def log_figure(self, name: str, path: str) -> None:
        pass

    def log_table(self, name: str, frame: Any) -> None:
        pass

    def log_tables_dir(self, tables_dir: str) -> None:
        pass

    def log_failures(self, frame: Any) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class NullLogger(Logger):
    """`logger=none`: tracking off; writes nothing anywhere."""


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def _plain_frame(frame: Any) -> Any:
    """W&B tables need flat string column names; a named index (groupby keys) becomes columns."""
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    frame = frame.copy()
    frame.columns = [" ".join(map(str, c)).strip() if isinstance(c, tuple) else str(c)
                     for c in frame.columns]
    return frame


def _key_text(value: Any) -> str:
    """A key's value in a summary key or a series name: 0.3 rather than 0.30000000000000004."""
    if _is_number(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:g}" if _is_number(value) else str(value)


def _series_name(row: Mapping[str, Any], keys: list[str]) -> str:
    """A curve's name: "<direction> (<label>)", the method first where a table has several."""
    parts = [f"({row[k]})" if k == "label" else _key_text(row[k]) for k in keys
             if k != "label" or isinstance(row[k], str)]  # a direction without a label: NaN
    return " ".join(parts) or "all"


class WandbLogger(Logger):
    """`logger=wandb`: one W&B run per attnedit run, named by the run signature or, for a
    job of a multirun, by its distinguishing overrides (:func:`multirun_name`), and grouped
    by the multirun's sweep folder (:func:`multirun_group`) unless a group is set.

    History: progress counters only (``progress/cases_done``, ``progress/cases_failed``; the
    step is the count of cases done), kept out of the summary; figures and tables are
    logged at the latest step. The summary: ``mean/<metric>`` (the runner's, over the edits),
    ``mean/<metric>/abs_alpha=<a>`` (the run's summary table, per |alpha|),
    ``failed_cases`` and, for test-only backbones, ``random_backbone``. The `cases` table
    holds the columns of the HTML report's grid (:mod:`attnedit.columns`: case id, keys such
    as category / direction / alpha / dk / dv / method, the run's metrics) plus reference
    (source or unedited) and edited thumbnails, one row per case of this session, logged at
    finish. Thumbnails are held in memory until then (3 * thumbnail_size**2 bytes each,
    ~100 KB per case at 128 px): for sweeps of tens of thousands of cases lower
    thumbnail_size or set log_images=false. At the end of a run, :meth:`log_tables_dir` logs
    every CSV of the run's tables (their columns as written, confidence intervals included),
    the per-|alpha| means and ``curves/by_alpha`` (each direction's mean per alpha) with one
    line chart ``curves/<metric>`` per metric; :meth:`log_failures` logs the count and table
    of the failed cases.
    """

    def __init__(self, project: str = "attnedit", entity: str | None = None,
                 mode: str | None = None, group: str | None = None, tags: Iterable[str] = (),
                 dir: str | None = None, log_images: bool = True, thumbnail_size: int = 128,
                 name: str | None = None) -> None:
        if mode not in _MODES:
            raise ConfigError(f"logger.mode={mode!r}: use online, offline, disabled or null "
                              "(null follows the WANDB_MODE environment variable)")
        if int(thumbnail_size) < 1:
            raise ConfigError(f"logger.thumbnail_size={thumbnail_size!r} must be a positive int")
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.tags, self.dir, self.name = group, list(tags or ()), dir, name
        self.log_images, self.thumbnail_size = bool(log_images), int(thumbnail_size)
        self._run: Any = None
        self._step, self._failed = 0, 0
        self._cases: list[tuple[dict, tuple]] = []
        self._run_dir, self._warned_missing = Path("."), False
        self._manifest: dict = {}

    def start(self, config: dict, run_dir: str, run_name: str, group: str | None = None,
              tags: Iterable[str] = ()) -> None:
        import wandb
        from omegaconf import OmegaConf

        if self._run is not None:
            raise RuntimeError("WandbLogger.start() called twice; call finish() first")
        if OmegaConf.is_config(config):
            config = OmegaConf.to_container(config, resolve=True)
        # Read env now, not via wandb's setup singleton, which caches the env of its first use.
        mode = self.mode or os.environ.get("WANDB_MODE") or None
        root = Path(self.dir or os.environ.get("WANDB_DIR") or run_dir)
        root.mkdir(parents=True, exist_ok=True)
        with _redacted_argv():
            self._run = wandb.init(
                project=self.project, entity=self.entity, mode=mode, dir=str(root),
                group=self.group or group or multirun_group(),
                name=self.name or multirun_name() or run_name, notes=f"attnedit run {run_name}: {run_dir}",
                tags=list(dict.fromkeys([*self.tags, *tags])), config=redact(config),
                reinit="finish_previous",  # a stale run in a reused launcher worker
                # console=off: Hydra already logs stdout, and wrapping it breaks live progress bars.
                settings=wandb.Settings(console="off"))
        self._run.define_metric("progress/*", summary="none")  # counters: the summary holds means
        self._step, self._failed, self._cases = 0, 0, []
        self._run_dir, self._warned_missing = Path(run_dir), False
        manifest = Path(run_dir) / "manifest.json"  # the runner writes it first: the metrics, in config order
        self._manifest = json.loads(manifest.read_text()) if manifest.is_file() else {}
        if not self._run.disabled:  # lets results be traced to their dashboard run
            record = {"id": self._run.id, "name": self._run.name, "project": self.project,
                      "entity": self.entity, "group": self._run.group or None,
                      "mode": "offline" if self._run.offline else "online",
                      "dir": self._run.dir, "url": self._run.url}
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(run_dir) / "wandb_runs.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _require_run(self, method: str) -> Any:
        if self._run is None:
            raise RuntimeError(f"WandbLogger.{method}() called before start() or after finish()")
        return self._run

    def _log_now(self, data: dict) -> None:
        # The step of the latest cases: figures and tables then line up with case counts.
        self._require_run("log").log(data, step=self._step)

    def log_cases(self, rows: list[dict], images: dict[str, tuple[str, str]]) -> None:
        """Counts the cases for the progress charts; their values wait for the cases table."""
        run = self._require_run("log_cases")
        for row in rows:
            thumbs = self._thumbnails(row.get("case_id"), images) if self.log_images else ()
            self._cases.append((dict(row), thumbs))
        self._step += len(rows)
        self._failed += sum(bool(r.get(FAILED)) for r in rows)
        run.log({"progress/cases_done": self._step, "progress/cases_failed": self._failed}, step=self._step)
        if any(bool(r.get("random_backbone")) for r in rows):
            run.summary["random_backbone"] = True  # the dashboard must not pass for real scores
            if "random-backbone" not in (run.tags or ()):
                run.tags = (*(run.tags or ()), "random-backbone")

    def _thumbnails(self, case_id: Any, images: Mapping[str, tuple[str, str]]) -> tuple:
        import wandb
        from PIL import Image

        thumbs = []
        for path in images.get(case_id, (None, None)):
            found = self._resolve(path) if path is not None else None
            if found is None:
                # No image (e.g. save_images=false): an empty cell; metrics are still logged.
                if path is not None and not self._warned_missing:
                    warnings.warn(f"case {case_id!r}: image {path} not found under {self._run_dir} "
                                  "or the cwd; its thumbnail is left empty", stacklevel=3)
                    self._warned_missing = True
                thumbs.append(None)
                continue
            with Image.open(found) as image:
                thumb = image.convert("RGB")
            thumb.thumbnail((self.thumbnail_size, self.thumbnail_size))
            thumbs.append(wandb.Image(thumb))
        return tuple(thumbs)

    def _resolve(self, path: str) -> Path | None:
        # Rows store image paths relative to the run directory (the store's convention).
        candidates = [Path(path)] if Path(path).is_absolute() else [self._run_dir / path, Path(path)]
        return next((p for p in candidates if p.is_file()), None)

    def _cases_table(self) -> Any:
        import wandb

        rows = [row for row, _ in self._cases]
        columns = grid_columns(dict.fromkeys(k for row in rows for k in row), metric_names(self._manifest, rows))
        image_columns = ["reference", "edited"] if self.log_images else []
        data = [[row.get(c) for c in columns] + list(thumbs) for row, thumbs in self._cases]
        return wandb.Table(columns=columns + image_columns, data=data, allow_mixed_types=True)

    def log_figure(self, name: str, path: str) -> None:
        import wandb

        self._require_run("log_figure")
        found = self._resolve(path)
        if found is None:
            raise FileNotFoundError(f"figure {name!r}: {path} not found under {self._run_dir} "
                                    "or the cwd")
        self._log_now({f"figures/{name}": wandb.Image(str(found))})

    def log_table(self, name: str, frame: Any) -> None:
        import wandb

        table = wandb.Table(dataframe=_plain_frame(frame), allow_mixed_types=True)
        self._log_now({f"tables/{name}": table})

    def log_tables_dir(self, tables_dir: str) -> None:
        """Every CSV under ``tables_dir`` (what attnedit-tables wrote) as the table
        ``tables/<path without .csv>``, with the columns the file has; from the run's
        summary table the per-|alpha| means into the summary, from its per-direction table
        the metric-vs-alpha curves."""
        import pandas as pd

        run = self._require_run("log_tables_dir")
        root = Path(tables_dir)
        frames = {}
        for path in sorted(root.rglob("*.csv")):
            try:
                frames[path.relative_to(root).as_posix()] = frame = pd.read_csv(path)
            except pd.errors.EmptyDataError:  # a table with no columns: nothing to show
                continue
            self.log_table(path.relative_to(root).with_suffix("").as_posix(), frame)
        if SUMMARY_TABLE in frames:
            run.summary.update(self._table_means(frames[SUMMARY_TABLE]))
        if CURVES_TABLE in frames:
            self._log_curves(frames[CURVES_TABLE])

    def _metrics_of(self, frame: Any) -> list[str]:
        """The metrics a table has ``<metric>_mean`` columns of, in the manifest's order."""
        ordered = [m for m in metric_names(self._manifest) if f"{m}_{MEAN}" in frame]
        return ordered or [c[: -len(MEAN) - 1] for c in frame.columns if c.endswith(f"_{MEAN}")]

    def _table_means(self, frame: Any) -> dict[str, float]:
        """``mean/<metric>/<keys>`` per row: the |alpha| and any other key the rows differ in."""
        metrics = self._metrics_of(frame)
        stats = {f"{m}_{stat}" for m in metrics for stat in _STATS}
        keys = [c for c in frame.columns if c not in stats and c != N
                and (c == ABS_ALPHA or frame[c].nunique(dropna=False) > 1)]
        means = {}
        for _, row in frame.iterrows():
            where = ",".join(f"{k}={_key_text(row[k])}" for k in keys)
            for m in metrics:
                means[f"mean/{m}/{where}" if where else f"mean/{m}"] = float(row[f"{m}_{MEAN}"])
        return means

    def _log_curves(self, frame: Any) -> None:
        """``curves/by_alpha``: each direction's mean (and 95% CI) per alpha; one line chart
        ``curves/<metric>`` of it per metric, a line per direction."""
        import wandb

        metrics = self._metrics_of(frame)
        if ALPHA not in frame or not metrics:
            return
        keys = [c for c in (METHOD, DIRECTION, "label") if c in frame]
        shown = [c for c in keys if c != METHOD or frame[METHOD].nunique() > 1]  # a line's name
        series = [_series_name(row, shown) for _, row in frame.iterrows()]
        stats = [f"{m}_{s}" for m in metrics for s in (MEAN, CI_LOW, CI_HIGH) if f"{m}_{s}" in frame]
        columns = ["series", *keys, ALPHA, *([N] if N in frame else []), *stats]
        data = [[name, *row] for name, row in zip(series, frame[columns[1:]].itertuples(index=False))]
        table = wandb.Table(columns=columns, data=data, allow_mixed_types=True)
        charts = {f"curves/{m}": wandb.plot.line(table, ALPHA, f"{m}_{MEAN}", stroke="series",
                                                 title=f"{m} vs alpha (mean per direction)") for m in metrics}
        self._log_now({"curves/by_alpha": table, **charts})

    def log_failures(self, frame: Any) -> None:
        """``failed_cases`` (the run's rows with failed=True) in the summary and, if any,
        the ``failures`` table: case id, keys and the error of each."""
        run = self._require_run("log_failures")
        failed = failures(frame)
        run.summary["failed_cases"] = len(failed)
        if len(failed):
            import wandb

            self._log_now({"failures": wandb.Table(dataframe=failed, allow_mixed_types=True)})

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self._require_run("log_summary").summary.update(_flatten(summary))

    def finish(self, exit_code: int = 0) -> None:
        """Log the cases table and close the run; a second call does nothing."""
        if self._run is None:
            return
        try:
            if self._cases:
                self._log_now({"cases": self._cases_table()})
        finally:
            import wandb

            run, self._run = self._run, None
            run.finish(exit_code=exit_code)
            # finish() can return before wandb-core has flushed the offline run file;
            # teardown waits for it, so the files are complete once this returns.
            wandb.teardown()


def build_logger(cfg: Any) -> Logger:
    """The Logger of the `logger` config group node; None gives a NullLogger."""
    if cfg is None:
        return NullLogger()
    if "_target_" not in cfg:
        raise ConfigError("the logger config has no _target_; choose logger=none or logger=wandb "
                          "(conf/logger/*.yaml)")
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        logger = instantiate(cfg, _convert_="all")
    except InstantiationException as e:  # surface our own message, not Hydra's wrapper
        if isinstance(e.__cause__, AttneditError):
            raise e.__cause__ from None
        raise
    if not isinstance(logger, Logger):
        raise ConfigError(f"logger._target_={cfg['_target_']} built a {type(logger).__name__}, "
                          "not an attnedit.run.tracking.Logger")
    return logger
