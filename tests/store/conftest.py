"""Two writers of one config on one run directory, read by the claims' tests and the
store's; one pair per session."""

from __future__ import annotations

import pytest
from harness import run_overrides

from processes import cli, finish


@pytest.fixture(scope="session")
def two_writers(tiny_ddpm_dir, tmp_path_factory):
    """Two attnedit-run processes of the same config, started together: (root, overrides,
    processes, outputs). Tests that change the run work on a copy."""
    root = tmp_path_factory.mktemp("two")
    overrides = run_overrides(root, tiny_ddpm_dir, "dataset.num_samples=4", "batch_size=1", "numerical_floor.samples=0")
    env = {"ATTNEDIT_TEST_BARRIER": f"{root / 'barrier'}:2"}  # start-up differs by seconds: start together
    processes = [cli(*overrides, root=root, env=env) for _ in range(2)]
    outputs = [finish(p) for p in processes]
    return root, overrides, processes, outputs
