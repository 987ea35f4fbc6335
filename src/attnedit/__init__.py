"""attnedit: a reproducible benchmark harness for training-free, attention-based diffusion editing.

The Python API (README: "Using attnedit from Python") is importable from here and loaded
on first use, so that ``import attnedit`` (every CLI's start) stays free of torch:
``load_pipeline``, ``sad_directions``, ``inject_directions``, ``bias_delta_guidance``, ``piebench_metric``,
``piebench_metrics`` (:mod:`attnedit.api`).
"""

__version__ = "0.1.0"

_API = ("load_pipeline", "sad_directions", "inject_directions", "bias_delta_guidance", "piebench_metric", "piebench_metrics")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from attnedit import api

        value = getattr(api, name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'attnedit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
