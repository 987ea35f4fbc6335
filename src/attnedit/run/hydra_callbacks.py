"""Hydra callbacks of attnedit-run (conf/hydra/default.yaml).

RedactSecrets / RedactLogs: secrets (run.secrets) never stay in Hydra's own files or
console. Hydra writes ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml`` and a
sweep's ``multirun.yaml`` before the job starts (hydra/core/utils.py ``run_job``:
``_save_config`` then ``callbacks.on_job_start``), so RedactSecrets rewrites them at
``on_job_start``, before any computation, and the sweep file again at
``on_multirun_end``. Hydra's launcher also logs each job's overrides to the console (and
so to SLURM logs): from ``on_run_start`` / ``on_multirun_start`` a logging filter on the
root logger's handlers masks every ``key=value`` whose key is a secret.

RunDirSummary: at the end of a multirun, the launching process writes the comparison of
the jobs' runs into the sweep folder (``comparison/``: attnedit-tables' tables; ``report/``:
attnedit-report's page), never into one of the runs, and ends with a line per job: the
overrides that tell it from the other jobs (store.overrides, from each job's
``.hydra/overrides.yaml``) beside its run directory, then ``report: <index.html>``.
Launchers that run jobs in other processes (submitit_local, submitit_slurm) send the
jobs' output to log files, so their ``run dir:`` lines never reach the console; each job
writes its run directory to ``run_dir.txt`` in its Hydra output folder
(``attnedit.cli.run``) and this callback reads them back (store.run_index.sweep_jobs).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnedit.errors import AttneditError, explain
from attnedit.run.secrets import MASK, is_secret_key, redact_yaml_file, secret_values
from attnedit.store.overrides import distinguishing_overrides, overrides_text
from attnedit.store.run_index import Job, is_run_dir, sweep_jobs

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


class RunDirSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        jobs = sweep_jobs(sweep) if sweep.is_dir() else []
        if jobs:
            summarize_sweep(sweep, jobs)


def summarize_sweep(sweep: Path, jobs: list[Job]) -> None:
    """The sweep's comparison and report, then a line per job and the report's path."""
    runs = list(dict.fromkeys(j.run_dir.resolve() for j in jobs if j.run_dir is not None and is_run_dir(j.run_dir)))
    index = None
    try:
        if runs:
            index = write_comparison(sweep, runs)
    except (AttneditError, OSError) as err:  # the jobs' runs stand; say why there is no comparison
        print(f"attnedit: error: no comparison of the multirun's runs: {explain(err) or err}", file=sys.stderr)
    print(f"multirun: {len(jobs)} job(s), sweep folder {sweep.resolve()}:")
    for job, pairs in zip(jobs, distinguishing_overrides([j.overrides for j in jobs])):
        label = f"job {job.name}" + (f" ({overrides_text(pairs)})" if pairs else "")
        print(f"{label} run dir: {job.run_dir}" if job.run_dir is not None
              else f"{label}: no run dir, the job did not finish (its log is in {job.folder})")
    if index is not None:
        print(f"report: {index.resolve()}")


def write_comparison(sweep: Path, runs: list[Path]) -> Path:
    """Comparison tables (several runs) in ``<sweep>/comparison``, printed; the HTML report
    in ``<sweep>/report``; returns its index.html. Each job wrote its run's own tables."""
    from attnedit.report.html import write_html_report
    from attnedit.report.studies import write_all

    if len(runs) > 1:  # shards of one run are one run
        written = write_all(runs, sweep / "comparison", each_run=False)
        print(written.text)
        print(f"{written.kind}: {written.folder.resolve()}")
        if written.figure is not None:
            print(f"figure: {written.figure.resolve()}")
    return write_html_report(runs, sweep / "report", each_run=False)


def _config_values(config: DictConfig) -> set[str]:
    return secret_values(OmegaConf.to_container(config, resolve=False))


_OVERRIDE = re.compile(r"(?P<key>[+~]*[\w.]+)=(?P<value>\S+)")


class RedactLogs(logging.Filter):
    """Masks the value of every ``key=value`` in a log record whose key is a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _OVERRIDE.sub(
            lambda m: f"{m['key']}={MASK}" if is_secret_key(m["key"].lstrip("+~").rsplit(".", 1)[-1]) else m[0],
            message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def redact_console_logs() -> None:
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactLogs) for f in handler.filters):
            handler.addFilter(RedactLogs())


class RedactSecrets(Callback):
    """Hydra callback (conf/hydra/default.yaml ``callbacks``): mask secrets in the files
    Hydra wrote for this job (and for its sweep) before the job runs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_console_logs()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_console_logs()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_console_logs()
        values = _config_values(config)
        hydra = config.hydra
        if hydra.output_subdir is not None:
            folder = Path(hydra.runtime.output_dir) / str(hydra.output_subdir)
            for name in HYDRA_FILES:
                redact_yaml_file(folder / name, values)
        if hydra.mode == RunMode.MULTIRUN:
            redact_yaml_file(Path(hydra.sweep.dir) / "multirun.yaml", values)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        redact_yaml_file(Path(config.hydra.sweep.dir) / "multirun.yaml", _config_values(config))
