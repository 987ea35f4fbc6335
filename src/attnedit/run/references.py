"""Which unedited image an edit is scored against, where the method samples otherwise than
the backend's reference does.

A backend whose reference is its unedited sample (DDPM) makes it with the study's sampler.
A method may edit under another one (:meth:`~attnedit.methods.base.EditMethod.sampler_control`:
pullback's eta 1 below 0.2T); then even a null edit differs from that reference (on the
shipped shapes DDPM, 20 steps, seeds 0-1: PSNR 32.2 dB / SSIM 0.855, crop, 8-bit, as the
runs score; experiments/celebahq_compare/baseline_options.json ``boosting``), and the loss
would be charged to the edit.
:class:`ReferenceChoice` then also makes each sample's unedited image under the method's
sampler, from the same noise (the backend's per-sample generators: an eta-0 step draws
nothing, so both draw the same eta-1 noise), and scores every edit against both: the
metric columns against the method's ``reference_kind`` (``own_sampler`` by default), the
other as ``<metric>_vs_<kind>``; rows say which in ``reference_kind``. Methods that sample
as the backend does get neither column (their only reference is ``unedited``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from attnedit.columns import OWN_SAMPLER, REFERENCE_KIND, UNEDITED
from attnedit.data.base import Sample
from attnedit.metrics.settings import quantize

OWN_REFERENCE_FILE = "reference_own_sampler.png"  # beside reference.png
#: The file each kind of reference is saved as, in the sample's image folder.
REFERENCE_FILES = {UNEDITED: "reference.png", OWN_SAMPLER: OWN_REFERENCE_FILE}


def other_kinds(kind: str) -> list[str]:
    """The references a row scored against ``kind`` also holds ``<metric>_vs_<other>`` columns for."""
    return [other for other in REFERENCE_FILES if other != kind]


def with_other_settings(settings: dict[str, Any], kinds: Iterable[str]) -> dict[str, Any]:
    """``settings`` ({column: settings or hash}) with each column's entry also as
    ``<column>_vs_<kind>``: the same metric scores both, and a row records both, so tables
    refuse a ``_vs_`` column whose rows were scored under different settings."""
    kinds = list(kinds)
    return {**settings, **{f"{column}_vs_{kind}": value for kind in kinds for column, value in settings.items()}}


class ReferenceChoice:
    """The references of one run: the backend's unedited one, and the method's own-sampler
    one where it has a sampler of its own (module docstring)."""

    def __init__(self, backend, method, save: Callable[[str, Tensor], None] | None = None) -> None:
        self.backend, self.save = backend, save
        own = getattr(method, "sampler_control", None)
        self.sampler = own(backend) if own and getattr(backend, "reference_is_unedited", False) else None
        self.kind = str(getattr(method, "reference_kind", OWN_SAMPLER)) if self.sampler is not None else UNEDITED
        self.own: dict[str, Tensor] = {}

    def make(self, samples: Iterable[Sample]) -> None:
        """The own-sampler unedited image of each sample not held yet, one at a time (as the
        runner's references: the same bits whichever samples come together)."""
        if self.sampler is None:
            return
        for sample in samples:
            if sample.id not in self.own:
                self.own[sample.id] = image = self.backend.generate([sample], self.sampler)[0]
                if self.save is not None:
                    self.save(sample.id, image)

    def forget(self, sample_id: str) -> None:
        self.own.pop(sample_id, None)

    def batch(self, samples: list[Sample], unedited: Tensor) -> dict[str, Tensor]:
        """Per kind, the references of ``samples`` in order (``unedited``: the backend's)."""
        if self.sampler is None:
            return {UNEDITED: unedited}
        self.make(samples)
        return {UNEDITED: unedited, OWN_SAMPLER: torch.stack([self.own[s.id] for s in samples])}

    def file_name(self) -> str:
        return REFERENCE_FILES.get(self.kind, "reference.png")

    def settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The metric settings the rows record: also for the ``_vs_`` columns, if any."""
        return settings if self.sampler is None else with_other_settings(settings, other_kinds(self.kind))

    def row(self) -> dict[str, Any]:
        return {} if self.sampler is None else {REFERENCE_KIND: self.kind}

    def other_scores(self, metrics, scored: Tensor, references: dict[str, Tensor],
                     context: Callable[[Any], dict[str, Any]]) -> dict[str, Tensor]:
        """Every metric of ``scored`` against the references the rows are not scored against,
        as ``<column>_vs_<kind>`` (images rounded to 8 bits, as the metric columns); the
        settings columns a metric adds (text) are the main column's and stay single."""
        out: dict[str, Tensor] = {}
        for kind, refs in references.items():
            if kind == self.kind:
                continue
            rounded = quantize(refs)
            for metric in metrics:
                values = metric(scored, rounded, **context(metric))
                out.update({f"{k}_vs_{kind}": v for k, v in values.items() if torch.is_tensor(v)})
        return out
