"""The editing-method interface.

A method (1) may discover something once per model in :meth:`setup` (SAD's
eigenvectors), (2) enumerates its edit settings with :meth:`edits` (one dict of
parameters per case, every key becoming a column of the results), and (3) installs
itself for one batch with :meth:`control`, a context manager that must restore the
model exactly on exit. The i-th edit dict applies to the i-th batch element, so one
batch can hold several settings. A method never knows which dataset it runs on.

What :meth:`control` yields is an :class:`attnedit.backends.base.Control`: what the
sampler and the runner read from the installed edit (its first edited timestep, a latent
hook, an eta schedule, per-case facts for the rows). :meth:`is_identity` lets the runner
skip an edit that changes nothing (where the reference is the unedited generation, the
reference is its image).
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any, Iterator

from attnedit.backends.base import Control


class EditMethod(abc.ABC):
    name: str = "method"

    def setup(self, backend, cache_dir: str | None = None) -> None:
        """Once per run, before any case: direction discovery, caching."""

    @abc.abstractmethod
    def edits(self) -> list[dict[str, Any]]:
        """Edit parameter dicts, in a deterministic order; keys are result columns."""

    @abc.abstractmethod
    def control(self, backend, edits: list[dict[str, Any]]) -> contextlib.AbstractContextManager[Control]:
        """Install the edit for a batch whose element i uses ``edits[i]``, yield its
        :class:`~attnedit.backends.base.Control`; restore the model on exit."""

    def is_identity(self, edit: dict[str, Any]) -> bool:
        """True if ``edit`` cannot change the output (e.g. alpha = 0); default: False."""
        return False

    def forget_samples(self) -> None:
        """Drop what was worked out per sample so far (a per-sample decomposition cache):
        the numerical floor's edits must not hand their cost to the run's cases."""

    def identity_edit(self) -> dict[str, Any] | None:
        """An edit of this method that changes nothing, run through the edit path (hooks
        installed) to measure a run's numerical floor: the first edit with its ``alpha``
        set to 0, if :meth:`is_identity` says that changes nothing; else None."""
        for edit in self.edits():
            if "alpha" in edit:
                candidate = {**edit, "alpha": 0.0}
                return candidate if self.is_identity(candidate) else None
        return None

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

    def is_identity(self, edit: dict[str, Any]) -> bool:
        return True

    @contextlib.contextmanager
    def control(self, backend, edits) -> Iterator[Control]:
        yield Control()


def as_index_list(directions) -> list[int]:
    """A method's ``directions``: ``3`` -> [0, 1, 2] (the top 3); a list stays a list."""
    if isinstance(directions, int):
        return list(range(directions))
    return [int(d) for d in directions]
