"""Output folders are checked before anything is computed: a folder that cannot be
written is one line naming the config key, the path and the fix, never a traceback
after hours of GPU time."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from attnedit.errors import ConfigError


def check_writable_folder(folder: str | Path, key: str) -> Path:
    """Create ``folder`` (and parents) and prove a file can be written in it; ``key`` is the
    config key that chose it (``paths.runs_dir``), named in the error with its fix."""
    folder = Path(folder).expanduser()
    fix = f"choose a folder you can write to: {key}=<dir>"
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"{key}={folder}: {blocker} is a file, not a folder; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".attnedit-", suffix=".probe"):
            pass
    except OSError as err:
        raise ConfigError(f"{key}={folder}: cannot write in it ({err.strerror or err}); {fix}") from None
    return folder


def check_writable_file(path: str | Path, key: str) -> Path:
    """The folder of an output file (``out=``) as above; the file itself must not be a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{key}={path} is a folder; give the file to write, e.g. {key}={path / 'out'}")
    check_writable_folder(path.parent, f"{key} (its folder)")
    if path.exists():
        try:
            path.open("a").close()
        except OSError as err:
            raise ConfigError(f"{key}={path}: cannot write it ({err.strerror or err}); choose another {key}=") from None
    return path


class CheckOutputFolders(Callback):
    """Hydra callback (conf/hydra/default.yaml): before Hydra creates its output folder
    (beside the results) and before any job runs, the results and runs folders must be
    writable."""

    def _check(self, config: DictConfig, hydra_dir: str) -> None:
        paths = config.get("paths") or {}
        if paths.get("results_dir") is not None:
            check_writable_folder(paths.results_dir, "paths.results_dir")
        check_writable_folder(hydra_dir, "paths.results_dir (Hydra's output folder hydra.run.dir/sweep.dir)")
        if paths.get("runs_dir") is not None:
            check_writable_folder(paths.runs_dir, "paths.runs_dir")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, config.hydra.sweep.dir)
