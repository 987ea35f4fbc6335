"""Output folders are checked before anything is computed: a folder that cannot be
written is one line naming the config key, the path and the fix, never a traceback
after hours of GPU time."""

from __future__ import annotations

import tempfile
from pathlib import Path

from attnedit.errors import ConfigError


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (created with its parents), or None."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"{blocker} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".attnedit-", suffix=".probe"):
            pass
    except OSError as err:
        return f"cannot write in {folder} ({err.strerror or err})"
    return None


def check_writable_folder(folder: str | Path, key: str) -> Path:
    """Create ``folder`` and prove a file can be written in it; ``key`` is the config key
    that chose it (``paths.runs_dir``), named in the error with its fix."""
    folder = Path(folder).expanduser()
    why = _unwritable(folder)
    if why is not None:
        raise ConfigError(f"{key}={folder}: {why}; choose a folder you can write to: {key}=<dir>")
    return folder


def check_writable_file(path: str | Path, key: str) -> Path:
    """An output file (``out=``): not a folder, and its folder writable."""
    path = Path(path).expanduser()
    fix = f"choose an {key}= path in a folder you can write to"
    if path.is_dir():
        raise ConfigError(f"{key}={path} is a folder; give the file to write, e.g. {key}={path / 'out'}")
    why = _unwritable(path.parent)
    if why is None and path.exists():
        try:
            path.open("a").close()
        except OSError as err:
            why = f"cannot write it ({err.strerror or err})"
    if why is not None:
        raise ConfigError(f"{key}={path}: {why}; {fix}")
    return path
