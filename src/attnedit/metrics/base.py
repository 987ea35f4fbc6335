"""The metric interface every scorer plugs into.

A metric compares a batch of edited images with a batch of reference images (float
NCHW in [0, 1]) and returns *per-image* values; the runner stores them one row per
case and tables aggregate later. The torchmetrics-style ``update``/``compute`` pair is
offered on top for users who want a running mean.

Metrics may need more than the two images (a mask, a text pair): the runner passes a
``context`` dict of per-batch fields and each metric takes what it declares in
``needs``. A metric may return several columns (e.g. a value and a per-row flag).

How reports show a column is declared on the class, torchmetrics style:
``higher_is_better``, ``display_name``, ``unit`` with the ``scale`` a report multiplies
values by (PIE-Bench's customary x10^3 for LPIPS), and the ``region`` scored
(:data:`REGIONS`); :meth:`PairMetric.column_info` reads them without building the metric
(``attnedit.metrics.registry.metric_info`` by column name).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnedit.errors import DataError

PRETRAINED = "pretrained"


@dataclass(frozen=True)
class Region:
    word: str  # in headers: "LPIPS background [x10^3]"
    text: str  # in titles


#: The parts of an image a metric scores (PIE-Bench's mask: 1 in the edit region).
REGIONS = {
    "whole": Region("whole", "whole image"),
    "unedit_part": Region("background", "background (unedit_part: both images multiplied by (1 - mask), scored on "
                                        "the full frame)"),
    "edit_part": Region("edit", "edit region (edit_part: both images multiplied by the mask, scored on the full frame)"),
}


@dataclass(frozen=True)
class MetricInfo:
    """How a metric column is shown: values x ``scale`` in ``unit``."""

    name: str
    display_name: str
    unit: str = "raw"
    scale: float = 1.0
    region: str = "whole"
    higher_is_better: bool | None = None

    @property
    def header(self) -> str:
        """'LPIPS background [x10^3]': the name, the region, the unit of the scaled values."""
        return f"{self.display_name} {REGIONS[self.region].word} [{self.unit}]"


class PairMetric(abc.ABC):
    """Per-image comparison of edited vs reference images.

    Subclasses set ``name`` (the main column), ``higher_is_better`` and implement
    :meth:`score`. ``weights`` says which backbone weights produced the numbers:
    ``"pretrained"`` or a string starting with ``"random"`` (test-only backbones).
    """

    name: str = ""
    higher_is_better: ClassVar[bool | None] = None
    display_name: ClassVar[str] = ""  # "" : the column name
    unit: ClassVar[str] = "raw"  # the unit of value x scale
    scale: ClassVar[float] = 1.0
    region: str = "whole"
    needs: ClassVar[tuple[str, ...]] = ()
    weights: str = "none"  # metrics without learned weights (ssim, psnr, mse)

    def __init__(self) -> None:
        self._values: list[Tensor] = []

    @abc.abstractmethod
    def score(self, edited: Tensor, reference: Tensor, **context) -> dict[str, Tensor]:
        """Return ``{column: tensor of shape [N]}``; ``self.name`` must be one column."""

    def score_each(self, editeds: Sequence[Tensor], reference: Tensor, **context) -> list[dict[str, Tensor]]:
        """:meth:`score` of several methods' edited batches against one reference batch.

        Metrics with a reference-only part (LPIPS features of the source, SSIM's source
        statistics) override this to compute that part once for all methods."""
        return [self.score(edited, reference, **context) for edited in editeds]

    @classmethod
    def column_info(cls, name: str, **options) -> MetricInfo:
        """How column ``name`` of this class, built with ``options``, is shown."""
        return MetricInfo(name, cls.display_name or name, cls.unit, cls.scale, options.get("region", cls.region),
                          cls.higher_is_better)

    def info(self) -> MetricInfo:
        return type(self).column_info(self.name, region=self.region)

    def columns(self) -> list[str]:
        """The value columns this metric writes, ``name`` among them (tables list them all)."""
        return [self.name]

    @property
    def uses_random_weights(self) -> bool:
        return self.weights.startswith("random")

    def __call__(self, edited: Tensor, reference: Tensor, **context) -> dict[str, Tensor]:
        check_image_pair(edited, reference, self.name)
        missing = [k for k in self.needs if context.get(k) is None]
        if missing:
            raise DataError(
                f"metric '{self.name}' needs {missing} for every case, but the dataset/method "
                f"did not provide them; choose a dataset that supplies them or drop the metric."
            )
        out = self.score(edited, reference, **{k: context[k] for k in self.needs})
        if self.name not in out:
            raise RuntimeError(f"metric '{self.name}' returned columns {list(out)} without its own name")
        return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in out.items()}

    # torchmetrics-style running aggregate -------------------------------------------
    def update(self, edited: Tensor, reference: Tensor, **context) -> None:
        self._values.append(self(edited, reference, **context)[self.name].double())

    def compute(self) -> Tensor:
        if not self._values:
            raise RuntimeError(f"metric '{self.name}': compute() called before update()")
        values = torch.cat(self._values)
        return values[~values.isnan()].mean()

    def reset(self) -> None:
        self._values = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, weights={self.weights!r})"


def check_image_pair(edited: Tensor, reference: Tensor, metric: str) -> None:
    """Shapes must agree and values must be finite images in [0, 1]."""
    check_image_shapes(edited, reference, metric)
    check_image_range(edited, "edited", metric)
    check_image_range(reference, "reference", metric)


def check_image_shapes(edited: Tensor, reference: Tensor, metric: str) -> None:
    if edited.ndim != 4 or edited.shape != reference.shape:
        raise DataError(
            f"metric '{metric}': edited {tuple(edited.shape)} and reference {tuple(reference.shape)} "
            "must both be NCHW of the same shape; resize the edited images to the source size first."
        )


def check_image_range(images: Tensor, label: str, metric: str) -> None:
    """Finite floats in [0, 1], checked in one pass: NaN propagates through aminmax, inf ends up there."""
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise DataError(f"metric '{metric}': the {label} images contain NaN or inf values.")
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise DataError(
            f"metric '{metric}': {label} images must be floats in [0, 1], got range [{lo:.3f}, {hi:.3f}]."
        )
