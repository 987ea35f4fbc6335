"""The start-up of a run told as it happens: one line per stage (imports, the model, the
metrics, the method's directions, the numerical floor) with its time, on stderr beside
the progress bar, so the 10-50 s before the first case are not silent."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stage(what: str) -> Iterator[None]:
    """``<what> ...`` when the stage starts, its seconds on the same line when it ends
    (``stopped`` when it raised, so the error's own line follows on a line of its own)."""
    start = time.perf_counter()
    print(f"{what} ...", end="", file=sys.stderr, flush=True)
    try:
        yield
    except BaseException:
        print(" stopped", file=sys.stderr, flush=True)
        raise
    print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
