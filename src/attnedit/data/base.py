"""What a dataset hands the runner: samples with ids and whatever fields methods and
metrics may need (an image, texts, a mask, a category)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from attnedit.errors import ConfigError

#: How a benchmark's edits are saved (attnedit.run.saved_edits): at the model's own size,
#: resized when scored (what the official scripts do) | resized to the source's size first.
SAVED_SIZES = ("output", "source")


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


class DecodedImages(Dataset):
    """A dataset of real images decoded as uint8 (:meth:`load_uint8`: what a decoding
    thread hands over); :meth:`load` gives them as float 3xHxW in [0, 1]."""

    @abc.abstractmethod
    def load_uint8(self, sample_id: str) -> Sample:
        """The sample with ``image`` as uint8 3xHxW."""

    def load(self, sample_id: str) -> Sample:
        sample = self.load_uint8(sample_id)
        sample.image = sample.image.float().div_(255)
        return sample


def check_saved_size(dataset: str, saved_size: str, output: str) -> str:
    """``saved_size`` of ``dataset`` (its name in messages), or one line naming the choices;
    ``output`` says what the default means for this benchmark."""
    if saved_size not in SAVED_SIZES:
        raise ConfigError(f"{dataset}: saved_size={saved_size!r} is not one of {SAVED_SIZES} (output: {output}; "
                          "source: resized first).")
    return saved_size


def check_first_n(dataset: str, first_n) -> int | None:
    """``first_n`` as an int (None: all), or one line."""
    if first_n is not None and int(first_n) < 0:
        raise ConfigError(f"{dataset}: first_n={first_n} must be >= 0 or null.")
    return None if first_n is None else int(first_n)
