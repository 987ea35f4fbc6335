"""A finished tiny SAD run that tests of the runner, the plots and the study tables read
(a plugin of the root conftest: one run per session)."""

from __future__ import annotations

import pytest

from harness import run_overrides


@pytest.fixture(scope="session")
def finished_run(tiny_ddpm_dir, tmp_path_factory):
    """(config, runner, run dir): 2 samples x 2 directions x 3 alphas (one of them 0) in
    batches of 4: batches mix samples."""
    from attnedit.config import compose
    from attnedit.run.runner import Runner

    root = tmp_path_factory.mktemp("run")
    cfg = compose("config", run_overrides(root, tiny_ddpm_dir, "method.alphas=[-0.4,0.0,0.4]", "batch_size=4"))
    runner = Runner(cfg)
    return cfg, runner, runner.run()
