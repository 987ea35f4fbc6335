"""Secrets never land on disk: a config key named like a secret (token, secret, password,
api_key; ``attnedit.run.tracking.is_secret_key``) keeps its name and has its value written as
``***`` in the run directory's config.yaml and manifest.json and in Hydra's own
``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml`` and a sweep's ``multirun.yaml``.

Hydra writes its files before the job starts (hydra/core/utils.py ``run_job``: ``_save_config``
then ``callbacks.on_job_start``), so the callback ``RedactSecrets`` rewrites them at
``on_job_start``, before any computation, and the sweep file again at ``on_multirun_end``.
Hydra's launcher also logs each job's overrides to the console (and so to SLURM logs):
from ``on_run_start`` / ``on_multirun_start`` a logging filter on the root logger's
handlers masks every ``key=value`` whose key is a secret.
A secret's value is also masked wherever else it appears in those files (Hydra's
``job.override_dirname`` joins the overrides into one string).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnedit.run.tracking import is_secret_key

MASK = "***"
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def secret_values(tree: Any, found: set[str] | None = None) -> set[str]:
    """Values of secret keys anywhere in a nested config, and of ``key=value`` strings
    (Hydra overrides such as ``+secret_token=...``) whose key is a secret."""
    found = set() if found is None else found
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if is_secret_key(key) and value is not None and not isinstance(value, (Mapping, list, tuple)):
                found.add(str(value))
            secret_values(value, found)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            secret_values(value, found)
    elif isinstance(tree, str):
        for part in tree.split(","):  # Hydra's job.override_dirname joins overrides with ","
            key, eq, value = part.partition("=")
            if eq and is_secret_key(key.lstrip("+~")) and value:
                found.add(value)
    return {v for v in found if v and v != MASK}


def _mask(text: str, values: Iterable[str]) -> str:
    for value in sorted(values, key=len, reverse=True):  # longest first: one secret may hold another
        text = text.replace(value, MASK)
    key, eq, _ = text.partition("=")
    if eq and "," not in text and is_secret_key(key.lstrip("+~")):  # one override, not a joined list
        return f"{key}={MASK}"
    return text


def redact(tree: Any, values: Iterable[str] | None = None) -> Any:
    """A copy of a nested config with secret keys' values as ``***`` and secret values
    masked in every string (keys stay, so the config's shape is unchanged)."""
    values = secret_values(tree) if values is None else set(values)
    if isinstance(tree, Mapping):
        return {k: (MASK if is_secret_key(k) and v is not None and not isinstance(v, (Mapping, list, tuple))
                    else redact(v, values)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [redact(v, values) for v in tree]
    if isinstance(tree, str):
        return _mask(tree, values)
    return tree


def redact_yaml_file(path: Path, values: Iterable[str]) -> None:
    """Rewrite a YAML file with its secrets masked (atomically: a kill leaves old or new)."""
    if not path.is_file():
        return
    data = yaml.safe_load(path.read_text())
    clean = redact(data, set(values) | secret_values(data))
    if clean == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(clean, sort_keys=False, default_flow_style=False))
    os.replace(tmp, path)


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
