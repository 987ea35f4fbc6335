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

A method whose edits run under another sampler than the backend's (pullback's eta-1
"performance boosting") says so in :meth:`sampler_control`; the runner then also makes
the unedited sample under that sampler, with the same noise, and scores the edit against
the reference its ``reference_kind`` names (:data:`REFERENCE_KINDS`).
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any, Iterator

from attnedit.backends.base import Control
from attnedit.columns import OWN_SAMPLER, UNEDITED

#: What a method's edits are scored against, where its sampler differs from the backend's:
#: ``own_sampler``, the unedited sample under the method's own sampler (same noise);
#: ``unedited``, the backend's unedited sample, every other method's reference.
REFERENCE_KINDS = (OWN_SAMPLER, UNEDITED)


class EditMethod(abc.ABC):
    name: str = "method"
    reference_kind: str = OWN_SAMPLER  # one of REFERENCE_KINDS; read only where sampler_control() is not None

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
        """True if ``edit`` gives the backend's unedited reference itself (e.g. alpha = 0); a
        method with a sampler of its own: False where that sampler alone changes the image.
        Default: False."""
        return False

    def sampler_control(self, backend) -> Control | None:
        """The sampler this method's edits run under, as a Control that edits nothing (its
        ``eta_at``; ``first_edit_timestep``: where it starts to differ from the backend's);
        None: the backend's own sampler, whose unedited sample is the reference."""
        return None

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
