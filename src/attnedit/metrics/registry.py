"""The one metric factory: metrics by name (``metrics=[names]`` of attnedit-evaluate, the
Python API) and from config nodes (attnedit-run's ``metrics`` group, attnedit-rescore).

The built-in names are the table below; a metric of one's own joins with
:func:`register_metric` from its own module, or needs no name at all (a config node's
``_target_`` is its class).
"""

from __future__ import annotations

import functools
from typing import Callable

from attnedit.errors import AttneditError, ConfigError
from attnedit.metrics import clip, factors, fidelity, identity, magicbrush, perceptual, piebench
from attnedit.metrics.base import MetricInfo, PairMetric

_REGISTRY: dict[str, Callable[..., PairMetric]] = {
    "ssim": fidelity.SSIM,
    "psnr": fidelity.PSNR,
    "mse": fidelity.MSE,
    "lpips": perceptual.LPIPS,
    "id_sim": identity.IdentitySimilarity,
    "directional_clip": clip.DirectionalCLIP,
    "factors": factors.FactorChange,
    "clip_i": magicbrush.CLIPImageSimilarity,
    "clip_t": magicbrush.CLIPTextSimilarity,
    "dino": magicbrush.DINOSimilarity,
    **piebench.PIEBENCH_METRICS,
}


def register_metric(name: str):
    """Decorator: ``@register_metric("my_metric")`` on a PairMetric class or factory."""

    def wrap(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"metric name '{name}' registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_metrics() -> list[str]:
    return sorted(_REGISTRY)


def metric_info(name: str) -> MetricInfo:
    """How the column ``name`` of a registered metric is shown (its class's declaration,
    without building the metric); a column of no registered metric is shown raw."""
    factory = _REGISTRY.get(name)
    if factory is None:
        return MetricInfo(name, name)
    cls, options = (factory.func, factory.keywords) if isinstance(factory, functools.partial) else (factory, {})
    return cls.column_info(name, **options)


def build_metric(name: str, **kwargs) -> PairMetric:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown metric '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def build_metrics(nodes) -> list[PairMetric]:
    """Metric objects from config nodes (``{column: {_target_: ..., **kwargs}}``), in
    order, column names unique: the one factory of attnedit-run's ``metrics`` group,
    attnedit-rescore, and attnedit-evaluate's ``metrics=[names]`` (nodes whose target is
    :func:`build_metric`)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        metrics = [instantiate(node) for node in (nodes or {}).values()]
    except InstantiationException as err:  # the metric's own error, not Hydra's wrapper
        if isinstance(err.__cause__, AttneditError):
            raise err.__cause__ from None
        raise
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ConfigError(f"two metrics share a column name: {names}")
    return metrics
