"""What a dataset hands the runner: samples with ids and whatever fields methods and
metrics may need (an image, texts, a mask, a category)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class Sample:
    """One input of a study. ``id`` is stable across runs (it keys resume)."""

    id: str
    seed: int | None = None  # generated samples: the seed of their initial noise
    image: Tensor | None = None  # real images: float 3xHxW in [0, 1]
    path: str | None = None
    category: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # texts, masks, instructions ...


class Dataset(abc.ABC):
    """An ordered, deterministic list of samples, optionally sharded."""

    name: str = "dataset"

    @abc.abstractmethod
    def sample_ids(self) -> list[str]:
        """All ids in their canonical order (cheap: no image is read)."""

    @abc.abstractmethod
    def load(self, sample_id: str) -> Sample:
        """Materialize one sample; errors name the sample and the file."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
