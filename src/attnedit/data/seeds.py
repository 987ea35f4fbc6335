"""Generated samples: sample i starts from the noise of seed ``first_seed + i``."""

from __future__ import annotations

from attnedit.data.base import Dataset, Sample
from attnedit.errors import ConfigError


class SeedDataset(Dataset):
    name = "seeds"

    def __init__(self, num_samples: int = 4, first_seed: int = 0, name: str = "seeds") -> None:
        if num_samples < 1:
            raise ConfigError(f"dataset.num_samples must be >= 1, got {num_samples}")
        self.name = name
        self.seeds = list(range(first_seed, first_seed + num_samples))

    def sample_ids(self) -> list[str]:
        return [f"seed{s:06d}" for s in self.seeds]

    def load(self, sample_id: str) -> Sample:
        if not sample_id.startswith("seed"):
            raise KeyError(f"'{sample_id}' is not a seed sample id")
        return Sample(id=sample_id, seed=int(sample_id[4:]))

    def describe(self):
        return {"name": self.name, "seeds": [self.seeds[0], self.seeds[-1]], "num_samples": len(self.seeds)}
