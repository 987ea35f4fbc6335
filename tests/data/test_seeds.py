"""Samples generated from seeds (data/seeds.py): deterministic ids and seeds."""

from __future__ import annotations

import pytest

from attnedit.data.seeds import SeedDataset
from attnedit.errors import ConfigError


def test_seed_dataset_ids_and_seeds():
    ds = SeedDataset(num_samples=3, first_seed=10)
    assert ds.sample_ids() == ["seed000010", "seed000011", "seed000012"]
    assert ds.load("seed000011").seed == 11
    with pytest.raises(ConfigError):
        SeedDataset(num_samples=0)
