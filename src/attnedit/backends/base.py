"""The backend interface, and what a backend reads from a method's edit.

Every backend (one model family each) satisfies :class:`Backend`. Its ``describe()``
returns one fixed schema (:data:`DESCRIBE_KEYS`), checked by :func:`check_description`
when a run writes its manifest, so reports read one key for one fact. Backend-specific
settings go under ``settings``.

A method's ``control()`` yields a :class:`Control`: the members a backend's ``generate``
and the runner read, each with a default that means "nothing of the kind".
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from attnedit.data.base import Sample
from attnedit.errors import ConfigError

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


class Control:
    """What an installed edit tells the sampler and the runner (subclass it; NoEdit yields
    a plain one):

    - ``first_edit_timestep``: the largest sampler timestep at which the edit can change
      the computation; the backend may start it there from the unedited trajectory
      (None: from x_T);
    - ``latent_hook(t, x_t) -> x_t``: called at every sampler step (edits of x_t itself,
      pullback-style); None: no hook;
    - ``eta_at(t) -> eta``: the step's eta; None: the sampler's own;
    - ``row_extras``: after ``generate``, one dict per batch element of facts the edit
      measured, added to its row; None: nothing.
    """

    first_edit_timestep: int | None = None
    latent_hook: Callable[[int, Tensor], Tensor] | None = None
    eta_at: Callable[[int], float] | None = None
    row_extras: list[dict[str, Any]] | None = None


def check_control(control: Any, method: Any) -> Control:
    """What ``method.control()`` yielded, as a :class:`Control` (None: a plain one); any
    other object is an error naming the method's class."""
    if control is None:
        return Control()
    if not isinstance(control, Control):
        where = f"{type(method).__module__}.{type(method).__qualname__}"
        raise ConfigError(f"method '{getattr(method, 'name', where)}' ({where}): control() yielded "
                          f"{type(control).__name__}, not an attnedit.backends.base.Control; subclass Control "
                          "for what the edit tells the sampler, or yield None for nothing")
    return control


def row_columns(backend: Any) -> dict[str, Any]:
    """Sampler settings a backend records in every row (its optional ``row_columns()``,
    e.g. the DDPM backend's ``clip_sample``); {} for a backend without any."""
    columns = getattr(backend, "row_columns", None)
    return dict(columns()) if callable(columns) else {}


@runtime_checkable
class Backend(Protocol):
    name: str
    path: str
    random_weights: bool

    def generate(self, samples: list[Sample], control: Control | None = None) -> Tensor:
        """One edited output per sample, (B, 3, H, W) float32 CPU in [0, 1]; ``control``
        is what the method's context manager yielded (None: the unedited sampler)."""

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
