"""Experiment tracking: the runner reports cases, figures, tables and summaries to a Logger.

`logger=none` (the default) builds a NullLogger, which does nothing. `logger=wandb` builds
a WandbLogger, which mirrors a run to Weights & Biases (online, or offline for a later
`wandb sync`). Secrets never reach W&B: the config and the command line W&B records go
through run.secrets (secret keys kept, their values and every secret value written ``***``).
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

from attnedit.columns import failures, grid_columns, metric_names
from attnedit.errors import AttneditError, ConfigError
from attnedit.run.secrets import redact, redact_argv

_MODES = (None, "online", "offline", "disabled")


@contextmanager
def _redacted_argv() -> Iterator[None]:
    # wandb.init stores sys.argv in the run metadata, and overrides may carry a token.
    saved = sys.argv
    sys.argv = redact_argv(saved)
    try:
        yield
    finally:
        sys.argv = saved


def multirun_group() -> str | None:
    """The Hydra multirun sweep dir (relative to the cwd when below it); None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):  # ValueError: no Hydra app is running
        return None
    if hydra_cfg.mode != RunMode.MULTIRUN or not hydra_cfg.sweep.dir:
        return None
    sweep = Path(hydra_cfg.sweep.dir)
    if sweep.is_absolute() and sweep.is_relative_to(Path.cwd()):
        sweep = sweep.relative_to(Path.cwd())
    return sweep.as_posix()[-128:]  # W&B's limit on group names


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


class WandbLogger(Logger):
    """`logger=wandb`: one W&B run per attnedit run, named by the run signature.

    History: one step per case, metrics under `cases/<column>`; figures and tables are
    logged at the latest case's step. The `cases` table holds the columns of the HTML
    report's grid (:mod:`attnedit.columns`: case id, keys such as category /
    direction / alpha / dk / dv / method, the run's metrics) plus reference (source or
    unedited) and edited thumbnails, one row per case of this session; it is logged at
    finish, per-case metrics as they arrive. Thumbnails are held in memory until then
    (3 * thumbnail_size**2 bytes each, ~100 KB per case at 128 px): for sweeps of tens of
    thousands of cases lower thumbnail_size or set log_images=false. At the end of a run,
    :meth:`log_tables_dir` logs every CSV of the run's tables (their columns as written,
    confidence intervals included) and :meth:`log_failures` the count and table of the
    failed cases.
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
        self._step = 0
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
                group=self.group or group or multirun_group(), name=self.name or run_name,
                tags=list(dict.fromkeys([*self.tags, *tags])), config=redact(config),
                reinit="finish_previous",  # a stale run in a reused launcher worker
                # console=off: Hydra already logs stdout, and wrapping it breaks live progress bars.
                settings=wandb.Settings(console="off"))
        self._step, self._cases = 0, []
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
        # Same step as the latest case: figures and tables then line up with case counts.
        self._require_run("log").log(data, step=max(self._step - 1, 0))

    def log_cases(self, rows: list[dict], images: dict[str, tuple[str, str]]) -> None:
        run = self._require_run("log_cases")
        for row in rows:
            metrics = {f"cases/{k}": v for k, v in row.items() if _is_number(v)}
            run.log(metrics, step=self._step)
            self._step += 1
            thumbs = self._thumbnails(row.get("case_id"), images) if self.log_images else ()
            self._cases.append((dict(row), thumbs))
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
        ``tables/<path without .csv>``, with the columns the file has."""
        import pandas as pd

        self._require_run("log_tables_dir")
        root = Path(tables_dir)
        for path in sorted(root.rglob("*.csv")):
            try:
                frame = pd.read_csv(path)
            except pd.errors.EmptyDataError:  # a table with no columns: nothing to show
                continue
            self.log_table(path.relative_to(root).with_suffix("").as_posix(), frame)

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
