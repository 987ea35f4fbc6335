"""Hydra callbacks of attnedit-run (conf/hydra/default.yaml).

RedactSecrets / RedactLogs: secrets (run.secrets) never stay in Hydra's own files or
console. Hydra writes ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml`` and a
sweep's ``multirun.yaml`` before the job starts (hydra/core/utils.py ``run_job``:
``_save_config`` then ``callbacks.on_job_start``), so RedactSecrets rewrites them at
``on_job_start``, before any computation, and the sweep file again at
``on_multirun_end``. Hydra's launcher also logs each job's overrides to the console (and
so to SLURM logs): from ``on_run_start`` / ``on_multirun_start`` a logging filter on the
root logger's handlers masks every ``key=value`` whose key is a secret.

RunDirSummary: at the end of a multirun, the launching process lists every job's run
directory. Launchers that run jobs in other processes (submitit_local, submitit_slurm)
send the jobs' output to log files, so their ``run dir:`` lines never reach the console;
each job writes its run directory to ``run_dir.txt`` in its Hydra output folder
(``attnedit.cli.run``) and this callback reads them back from the sweep folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnedit.run.secrets import MASK, is_secret_key, redact_yaml_file, secret_values

RUN_DIR_FILE = "run_dir.txt"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


class RunDirSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        found = sorted((p for p in sweep.glob(f"*/{RUN_DIR_FILE}") if p.parent.name.isdigit()),
                       key=lambda p: int(p.parent.name))
        if not found:
            return
        print(f"multirun: {len(found)} job(s) wrote run directories (sweep folder {sweep.resolve()}):")
        for path in found:
            print(f"job {path.parent.name} run dir: {path.read_text().strip()}")


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
