"""Add alpha * n to the input features of self-attention layers inside a timestep window.

Shared by every direction-based method (SAD, h-space PCA, random directions), so that
methods differ only in *which* directions they inject. Installed with module hooks by a
context manager that always removes them.

Where Z is (``position``):
- ``after_norm``: the normalized features that feed to_q/to_k/to_v (the output of the
  layer's GroupNorm); the residual branch is untouched.
- ``before_norm``: the layer's input hidden states (so the residual carries n too).
How alpha is scaled (``alpha_scale``):
- ``unit``: delta = alpha * n.
- ``token_norm``: delta = alpha * mean_l ||Z_l|| * n, the mean token norm of Z at that step
  and for that sample, so alpha is a fraction of the typical feature size.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor, nn

from attnedit.backends.base import Control
from attnedit.errors import ConfigError

POSITIONS = ("after_norm", "before_norm")
ALPHA_SCALES = ("unit", "token_norm")
# The paper's "0.5T < t < 0.8T" read with strict bounds; recorded in every row, since an
# inclusive reading edits more steps where a bound is on the schedule (50 DDIM steps: 2 more).
WINDOW_BOUNDS = "strict"


def check_injection_options(position: str, alpha_scale: str, window) -> None:
    if position not in POSITIONS:
        raise ConfigError(f"position={position!r} is not one of {POSITIONS}")
    if alpha_scale not in ALPHA_SCALES:
        raise ConfigError(f"alpha_scale={alpha_scale!r} is not one of {ALPHA_SCALES}")
    lo, hi = window
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"window={list(window)} must satisfy 0 <= lo < hi <= 1 (fractions of T)")


@dataclass
class InjectionState(Control):
    """What the hooks saw: the current timestep and, per layer, the timesteps edited.

    ``first_edit_timestep``: the largest sampler timestep inside the window, where the
    edit first changes the computation (None: unknown, or no step inside the window);
    a backend may start the edit there from the unedited trajectory's state.
    """

    timestep: int | None = None
    applied: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    first_edit_timestep: int | None = None


def first_in_window(timesteps, window: tuple[float, float], num_train_timesteps: int) -> int | None:
    """The largest of ``timesteps`` with window[0] * T < t < window[1] * T (the hooks'
    strict bounds), or None."""
    lo, hi = window[0] * num_train_timesteps, window[1] * num_train_timesteps
    inside = [int(t) for t in timesteps if lo < int(t) < hi]
    return max(inside) if inside else None


def _delta(z: Tensor, directions: Tensor, alphas: Tensor, alpha_scale: str) -> Tensor:
    """(B, C) offsets for features z of shape (B, C, ...)."""
    scale = alphas.to(z.device, torch.float32)
    if alpha_scale == "token_norm":
        scale = scale * z.float().flatten(2).norm(dim=1).mean(dim=1)
    return (scale[:, None] * directions.to(z.device, torch.float32)).to(z.dtype)


@contextlib.contextmanager
def inject_directions(
    unet: nn.Module,
    layers: dict[str, nn.Module],
    directions: dict[str, Tensor],
    alphas: Tensor,
    *,
    num_train_timesteps: int,
    window: tuple[float, float] = (0.5, 0.8),
    position: str = "after_norm",
    alpha_scale: str = "token_norm",
    timesteps: list[int] | None = None,
) -> Iterator[InjectionState]:
    """Edit element i of every batch with ``alphas[i] * directions[layer][i]``.

    ``directions[layer]`` has shape (B, C_layer) with unit rows (B = 1: the same edit for
    every batch element); the edit applies only
    while ``window[0] * T < t < window[1] * T``. ``timesteps``: the sampler's schedule,
    which sets the yielded state's ``first_edit_timestep``.
    """
    check_injection_options(position, alpha_scale, window)
    lo, hi = window[0] * num_train_timesteps, window[1] * num_train_timesteps
    first = first_in_window(timesteps, window, num_train_timesteps) if timesteps is not None else None
    state = InjectionState(first_edit_timestep=first)

    def record_timestep(module, args, kwargs):
        state.timestep = timestep_of_call(args, kwargs)

    def active() -> bool:
        return state.timestep is not None and lo < state.timestep < hi

    def check_batch(name: str, z: Tensor) -> None:
        if len(alphas) != 1 and z.shape[0] != len(alphas):  # one edit (B = 1) applies to every element
            raise ConfigError(f"layer {name}: batch of {z.shape[0]} features but {len(alphas)} edits")

    def after_norm_hook(name):
        def hook(module, inputs, output):
            if not active():
                return output
            check_batch(name, output)
            state.applied[name].append(state.timestep)
            delta = _delta(output, directions[name], alphas, alpha_scale)
            return output + delta.view(*delta.shape, *([1] * (output.ndim - 2)))

        return hook

    def before_norm_hook(name):
        def hook(module, args, kwargs):
            if not active():
                return None
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            check_batch(name, hidden)
            state.applied[name].append(state.timestep)
            delta = _delta(hidden, directions[name], alphas, alpha_scale)
            hidden = hidden + delta.view(*delta.shape, *([1] * (hidden.ndim - 2)))
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": hidden}
            return (hidden, *args[1:]), kwargs

        return hook

    with attention_input_hooks(unet, layers, position, record_timestep, after_norm_hook, before_norm_hook):
        yield state


def timestep_of_call(args, kwargs) -> int:
    """The timestep of a ``unet(x, t)`` / ``unet(sample=x, timestep=t)`` call."""
    t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    return int(t.flatten()[0]) if torch.is_tensor(t) else int(t)


@contextlib.contextmanager
def attention_input_hooks(unet, layers, position, on_unet_call, after_norm_hook, before_norm_hook):
    """Install a UNet forward pre-hook (``on_unet_call``) and, per layer, a hook where Z
    is: ``after_norm_hook(name)`` on its GroupNorm output or ``before_norm_hook(name)`` as
    a pre-hook (with kwargs) on the attention module. All removed on exit."""
    handles = []
    try:
        handles.append(unet.register_forward_pre_hook(on_unet_call, with_kwargs=True))
        for name, attn in layers.items():
            if position == "after_norm":
                if getattr(attn, "group_norm", None) is None:
                    raise ConfigError(f"layer {name} has no GroupNorm; use method.position=before_norm")
                handles.append(attn.group_norm.register_forward_hook(after_norm_hook(name)))
            else:
                handles.append(attn.register_forward_pre_hook(before_norm_hook(name), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
