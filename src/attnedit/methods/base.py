"""The editing-method interface.

A method (1) may discover something once per model in :meth:`setup` (SAD's
eigenvectors), (2) enumerates its edit settings with :meth:`edits` (one dict of
parameters per case, every key becoming a column of the results), and (3) installs
itself for one batch with :meth:`control`, a context manager that must restore the
model exactly on exit. The i-th edit dict applies to the i-th batch element, so one
batch can hold several settings. A method never knows which dataset it runs on.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any, Iterator


class EditMethod(abc.ABC):
    name: str = "method"

    def setup(self, backend, cache_dir: str | None = None) -> None:
        """Once per run, before any case: direction discovery, caching."""

    @abc.abstractmethod
    def edits(self) -> list[dict[str, Any]]:
        """Edit parameter dicts, in a deterministic order; keys are result columns."""

    @abc.abstractmethod
    def control(self, backend, edits: list[dict[str, Any]]) -> contextlib.AbstractContextManager:
        """Install the edit for a batch whose element i uses ``edits[i]``; restore on exit."""

    def describe(self) -> dict[str, Any]:
        """Method-level facts for the manifest (labels, layers, discovery time...)."""
        return {"name": self.name}


class NoEdit(EditMethod):
    """The unedited sample: the reference every edit is compared with."""

    name = "none"

    def __init__(self, name: str = "none") -> None:
        self.name = name

    def edits(self) -> list[dict[str, Any]]:
        return [{}]

    @contextlib.contextmanager
    def control(self, backend, edits) -> Iterator[None]:
        yield None
