"""The backend interface: what the runner, methods and reports may rely on.

Every backend (one model family each) satisfies :class:`Backend`. Its ``describe()``
returns one fixed schema (:data:`DESCRIBE_KEYS`), checked by :func:`check_description`
when a run writes its manifest, so reports read one key for one fact (the weight hash
used to be written as ``weight_sha256_16`` by one backend and ``weights_sha256_16`` by
another). Backend-specific settings go under ``settings``.
"""

from __future__ import annotations

import platform
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from attnedit.data.base import Sample

# Keys every describe() returns (values may be None where a fact does not apply).
DESCRIBE_KEYS = (
    "name",               # config name (model.name)
    "path",               # hub id or local directory as configured
    "resolved_dir",       # the local directory the weights were read from
    "weights_sha256_16",  # fingerprint of the weights the numbers depend on
    "weights_hash_kind",  # "full" | "names+sizes+safetensors headers" | ...
    "random_weights",     # True for test-only random models (marked in rows and tables)
    "dtype",
    "device",
    "device_name",        # GPU model or CPU name
    "settings",           # dict: sampler / pipeline arguments that change results
)


@runtime_checkable
class Backend(Protocol):
    name: str
    path: str
    random_weights: bool

    def generate(self, samples: list[Sample], control: Any = None) -> Tensor:
        """One edited output per sample, (B, 3, H, W) float32 CPU in [0, 1]; ``control``
        is what the method's context manager yielded."""

    def reference(self, samples: list[Sample]) -> Tensor:
        """What each edit is compared with (the unedited sample, or the source image)."""

    def describe(self) -> dict[str, Any]:
        """Provenance with exactly :data:`DESCRIBE_KEYS`."""


def check_description(info: dict[str, Any], who: str = "backend") -> dict[str, Any]:
    """``info`` unchanged if it has exactly the schema's keys; else a TypeError naming them."""
    missing = [k for k in DESCRIBE_KEYS if k not in info]
    extra = [k for k in info if k not in DESCRIBE_KEYS]
    if missing or extra or not isinstance(info.get("settings"), dict):
        raise TypeError(f"{who}.describe() breaks the backend schema (attnedit.backends.base.DESCRIBE_KEYS): "
                        f"missing {missing}, unexpected {extra} (put backend-specific facts under 'settings')")
    return info


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or "cpu"
