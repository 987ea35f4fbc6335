"""Test-only fault injection, read from the environment; unset, nothing happens.

- ``ATTNEDIT_TEST_DIE_AT=<point>``: the process SIGKILLs itself the first time it
  reaches ``<point>`` (``before_figure``: a sample's last rows are on disk, its
  alpha-sweep figure not drawn yet), so a test can place a real kill exactly there.
- ``ATTNEDIT_TEST_BARRIER=<folder>:<n>``: before claiming work, each process writes
  ``<folder>/<pid>`` and waits until ``n`` processes have (at most 10 minutes), so
  writers whose start-up times differ by seconds really start together.
- ``ATTNEDIT_TEST_OSERROR=<point>:<ERRNO>:<n>``: from the n-th time on that the process
  writes at ``<point>``, the write fails with that errno (``ENOSPC``: a disk that filled
  up) as the library doing it would raise it: ``image`` (a PNG, PIL's ``open``: the path
  named) or ``part`` (a parquet part, pyarrow: no path named).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path


def die_at(point: str) -> None:
    if os.environ.get("ATTNEDIT_TEST_DIE_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def barrier() -> None:
    spec = os.environ.get("ATTNEDIT_TEST_BARRIER")
    if not spec:
        return
    folder, count = spec.rsplit(":", 1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + 600
    while len(list(Path(folder).iterdir())) < int(count) and time.monotonic() < deadline:
        time.sleep(0.05)


_writes: dict[str, int] = {}  # point -> writes this process made there


def os_error(point: str, path: str | Path) -> None:
    """``ATTNEDIT_TEST_OSERROR`` (module doc), at a write of ``path``."""
    spec = os.environ.get("ATTNEDIT_TEST_OSERROR", "")
    where, _, rest = spec.partition(":")
    if where != point:
        return
    name, _, after = rest.partition(":")
    _writes[point] = _writes.get(point, 0) + 1
    if _writes[point] >= int(after or 1):
        code = getattr(errno, name)
        if point == "part":
            raise OSError(code, f"Error writing bytes to file. Detail: [errno {code}] {os.strerror(code)}")
        raise OSError(code, os.strerror(code), str(path))
