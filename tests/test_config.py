"""Config composition: the quickstart is the default, and the real experiments compose."""

from __future__ import annotations

from attnedit.config import compose


def test_quickstart_is_the_default_and_real_experiments_compose():
    cfg = compose("config", [])
    assert cfg.name == "quickstart" and cfg.model.name == "shapes_ddpm" and not cfg.model.random_weights
    assert cfg.model.path.endswith("assets/shapes_ddpm") and "factors" in cfg.metrics
    assert cfg.method.directions == 4 and len(cfg.method.alphas) == 5 and 0.0 in cfg.method.alphas
    cfg = compose("config", ["experiment=celebahq_sad"])
    assert (cfg.model.path, cfg.model.num_inference_steps) == ("google/ddpm-ema-celebahq-256", 50)
    assert (cfg.method.directions, cfg.dataset.num_samples) == (15, 100)
    for lsun in ("church", "bedroom", "cat"):
        cfg = compose("config", ["experiment=celebahq_sad", f"model=ddpm_{lsun}"])
        assert cfg.model.path == f"google/ddpm-ema-{lsun}-256"
