"""Test-only fault injection, read from the environment; unset, nothing happens.

- ``ATTNEDIT_TEST_DIE_AT=<point>``: the process SIGKILLs itself the first time it
  reaches ``<point>`` (``before_figure``: a sample's last rows are on disk, its
  alpha-sweep figure not drawn yet), so a test can place a real kill exactly there.
- ``ATTNEDIT_TEST_BARRIER=<folder>:<n>``: before claiming work, each process writes
  ``<folder>/<pid>`` and waits until ``n`` processes have (at most 10 minutes), so
  writers whose start-up times differ by seconds really start together.
"""

from __future__ import annotations

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
