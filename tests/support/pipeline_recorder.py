"""Record what a diffusers pipeline's modules receive (text encoders, VAE encoder,
transformer) during one run, and optionally end the run at a module's first call: a
comparison of two ways of calling a pipeline needs only what reaches the transformer."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


class Stop(Exception):
    """Raised by the recording hook of the ``stop_at`` module, before that module runs."""


def _copy(value: Any) -> Any:
    return value.detach().clone() if torch.is_tensor(value) else value


@contextlib.contextmanager
def recording(modules: dict[str, torch.nn.Module], stop_at: str | None = None) -> Iterator[dict[str, list]]:
    """``{name: [call, ...]}``, each call a dict of the keyword arguments plus ``args``
    (positional ones), copied; hooks are removed on exit."""
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in modules}
    handles = []

    def hook_for(name):
        def hook(module, args, kwargs):
            seen[name].append({"args": [_copy(a) for a in args], **{k: _copy(v) for k, v in kwargs.items()}})
            if name == stop_at:
                raise Stop(name)
        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(hook_for(name), with_kwargs=True))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def equal(a: Any, b: Any) -> bool:
    """Bitwise equality of tensors, recursively through lists and tuples."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_calls(got: list[dict], want: list[dict], keys: tuple[str, ...]) -> None:
    """Every recorded call has bitwise the same values under ``keys``."""
    assert len(got) == len(want), f"{len(got)} calls, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        for key in keys:
            assert equal(g.get(key), w.get(key)), f"call {i}: '{key}' differs"
