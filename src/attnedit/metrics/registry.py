"""Registry of named metrics, so a metric list can be given by names on the command line."""

from __future__ import annotations

import functools
from typing import Callable

from attnedit.errors import ConfigError
from attnedit.metrics.base import MetricInfo, PairMetric

_REGISTRY: dict[str, Callable[..., PairMetric]] = {}


def register_metric(name: str):
    """Decorator: ``@register_metric("psnr")`` on a PairMetric class or factory."""

    def wrap(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"metric name '{name}' registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_metrics() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def metric_info(name: str) -> MetricInfo:
    """How the column ``name`` of a registered metric is shown (its class's declaration,
    without building the metric); a column of no registered metric is shown raw."""
    _import_builtin()
    factory = _REGISTRY.get(name)
    if factory is None:
        return MetricInfo(name, name)
    cls, options = (factory.func, factory.keywords) if isinstance(factory, functools.partial) else (factory, {})
    return cls.column_info(name, **options)


def build_metric(name: str, **kwargs) -> PairMetric:
    _import_builtin()
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

    from attnedit.errors import AttneditError

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


def _import_builtin() -> None:
    # Importing the modules runs their @register_metric decorators.
    import importlib

    for module in ("fidelity", "perceptual", "identity", "clip", "piebench", "factors"):
        importlib.import_module(f"attnedit.metrics.{module}")
