"""``bias_delta_guidance``: the guidance installed on a transformer for the calls made
inside the block, with the per-call state its processors read."""

from __future__ import annotations

import contextlib
import inspect
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor

from attnedit.backends.base import Control
from attnedit.errors import ConfigError
from attnedit.methods.bias_delta import flux, qwen  # noqa: F401 - each registers its architecture
from attnedit.methods.bias_delta.architectures import architecture_of
from attnedit.methods.bias_delta.params import ARITHMETIC, BRANCHES, CHANNELS, QKV
from attnedit.methods.bias_delta.rescale import Call


def _scales(name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, numbers.Real):
        value = [value]
    values = torch.as_tensor([float(v) for v in value], dtype=torch.float32).reshape(-1)
    if values.numel() == 0 or not torch.isfinite(values).all():
        raise ConfigError(f"bias-delta guidance: {name}={list(value)} must be finite numbers (one or one per sample)")
    return values


@dataclass
class BiasDeltaGuidance(Control):
    """The installed guidance: scales, where and when it acts, and a log of the
    transformer calls it saw (``log``: dicts with branch, step, guided)."""

    transformer: Any = field(repr=False)
    scales: dict[str, Tensor]
    blocks: list[int]
    steps: Any = None
    branches: str = "both"
    num_steps: int | None = None
    arithmetic: str = "fused"
    call: Call | None = None
    branch: str | None = None  # set while the pipeline runs a cache_context("cond"/"uncond")
    step: int = -1
    log: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _last_t: float | None = None
    _undo: list[Any] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._architecture = architecture_of(self.transformer)
        # Channels whose scales are identity for every sample are skipped outright; the
        # others' factors are built once here and moved once per device, so a transformer
        # call costs the same Python work however many blocks it guides.
        factors = []
        for channel, (d, b) in CHANNELS.items():
            delta, bias = self.scales[d], self.scales[b]
            if not (bool((delta == 1).all()) and bool((bias == 1).all())):
                factors.append((QKV.index(channel), delta.view(-1, 1, 1, 1), (bias - delta).view(-1, 1, 1, 1)))
        self._factors = tuple(factors)
        self._factors_on: dict[torch.device, tuple] = {}
        self._per_sample = {v.numel() for v in self.scales.values()} - {1}
        self._signature = inspect.signature(type(self.transformer).forward)
        if self.arithmetic not in ARITHMETIC:
            raise ConfigError(f"bias-delta guidance: arithmetic={self.arithmetic!r} is not one of {ARITHMETIC}")
        if self.arithmetic == "official":
            if not self._architecture.official:
                raise ConfigError("bias-delta guidance: arithmetic='official' follows the official scripts, which "
                                  "exist for Qwen-Image-Edit only; use arithmetic=fused with "
                                  f"{type(self.transformer).__name__}")
            if any(bool((self.scales[p] != 1).any()) for p in ("dq", "bq")):
                raise ConfigError("bias-delta guidance: the official scripts have no Query rescale; "
                                  "dq and bq need arithmetic=fused")

    # -- per call -------------------------------------------------------------------
    def _pre_forward(self, module, args, kwargs) -> None:
        bound = self._signature.bind_partial(module, *args, **kwargs).arguments
        hidden = bound["hidden_states"]
        length = self._architecture.condition_tokens(bound)
        if self.steps is not None:
            self._advance_step(bound["timestep"])
        guided = length > 0 and self._branch_selected() and self._step_selected()
        self.log.append({"branch": self.branch, "step": self.step if self.steps is not None else None,
                         "guided": guided, "condition_tokens": length})
        self.call = None
        official = self.arithmetic == "official"  # guides every selected call, identity scales included
        if guided and (self._factors or official):
            batch = hidden.shape[0]
            if self._per_sample and self._per_sample != {batch}:
                raise ConfigError(f"bias-delta guidance: scales for {sorted(self._per_sample)} samples but the "
                                  f"transformer batch holds {batch}")
            if official:
                per_sample = [self.scales[p].expand(batch).tolist() for p in ("bk", "dk", "bv", "dv")]
                self.call = Call(length, (), tuple(zip(*per_sample)))
                return
            device = hidden.device
            if device not in self._factors_on:
                self._factors_on[device] = tuple((i, d.to(device), o.to(device)) for i, d, o in self._factors)
            self.call = Call(length, self._factors_on[device])

    def _post_forward(self, module, args, output) -> None:
        self.call = None

    def _branch_selected(self) -> bool:
        if self.branches == "both":
            return True
        if self.branch is None:
            raise ConfigError(f"bias-delta guidance: branches={self.branches!r} needs the transformer to be called "
                              "inside transformer.cache_context('cond'/'uncond'), as QwenImageEditPipeline does "
                              "(FluxKontextPipeline does not: use branches=both there)")
        return self.branch == self.branches

    def _advance_step(self, timestep: Tensor) -> None:
        # Within one sampling run the flow-matching timestep strictly decreases; the cond
        # and uncond calls of a step share it; a rise means a new run started.
        t = float(timestep.reshape(-1)[0])
        if self._last_t is None or t > self._last_t:
            self.step = 0
        elif t < self._last_t:
            self.step += 1
        self._last_t = t

    def _step_selected(self) -> bool:
        if self.steps is None:
            return True
        if isinstance(self.steps, Mapping):
            return self.steps["start"] <= self.step / self.num_steps < self.steps["end"]
        return self.step in self.steps

    # -- install / remove --------------------------------------------------------------
    def install(self) -> None:
        try:
            self._install()
        except BaseException:
            self.remove()
            raise

    def _install(self) -> None:
        transformer, architecture = self.transformer, self._architecture
        attentions = architecture.attentions(transformer)
        for i in self.blocks:
            attn = attentions[i]
            stock = attn.processor
            if isinstance(stock, architecture.guided):
                raise ConfigError(f"bias-delta guidance is already installed on block {i}; nesting is not supported")
            if type(stock) is not architecture.stock:
                raise ConfigError(f"block {i} uses {type(stock).__name__}; bias-delta guidance wraps only the stock "
                                  f"{architecture.stock.__name__}")
            attn.set_processor(architecture.guided(self, stock))
            self._undo.append(lambda attn=attn, stock=stock: attn.set_processor(stock))
        self._undo.append(transformer.register_forward_pre_hook(self._pre_forward, with_kwargs=True).remove)
        self._undo.append(transformer.register_forward_hook(self._post_forward).remove)
        self._label_branches(transformer)

    def _label_branches(self, transformer) -> None:
        # QwenImageEditPipeline wraps its two CFG calls in transformer.cache_context("cond")
        # and ("uncond"); an instance-level wrapper records the name and delegates.
        original = transformer.cache_context
        had_instance_attr = "cache_context" in vars(transformer)

        @contextlib.contextmanager
        def labelled(name, *args, **kwargs):
            previous, self.branch = self.branch, name
            try:
                with original(name, *args, **kwargs):
                    yield
            finally:
                self.branch = previous

        transformer.cache_context = labelled

        def restore():
            if had_instance_attr:
                transformer.cache_context = original
            else:
                del transformer.cache_context

        self._undo.append(restore)

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()
        self.call = None


def _blocks(blocks: Any, count: int) -> list[int]:
    if blocks is None:
        return list(range(count))
    if isinstance(blocks, int):
        blocks = [blocks]
    chosen = []
    for b in blocks:
        if not -count <= int(b) < count:
            raise ConfigError(f"bias-delta guidance: block {b} out of range for a transformer with {count} blocks")
        chosen.append(int(b) % count)
    return sorted(set(chosen))


def _steps(steps: Any, num_steps: int | None) -> Any:
    if steps is None:
        return None
    if isinstance(steps, Mapping):
        window = {"start": float(steps.get("start", 0.0)), "end": float(steps.get("end", 1.0))}
        if not 0.0 <= window["start"] < window["end"] <= 1.0:
            raise ConfigError(f"bias-delta guidance: steps window {dict(steps)} needs 0 <= start < end <= 1")
        if not num_steps:
            raise ConfigError("bias-delta guidance: a fractional steps window needs num_steps (the sampler's steps)")
        return window
    if isinstance(steps, int):
        steps = [steps]
    indices = {int(s) for s in steps}
    if any(s < 0 for s in indices):
        raise ConfigError(f"bias-delta guidance: step indices must be >= 0, got {sorted(indices)}")
    return indices


@contextlib.contextmanager
def bias_delta_guidance(
    transformer,
    dk: float | Sequence[float] = 1.0,
    dv: float | Sequence[float] = 1.0,
    bk: float | Sequence[float] = 1.0,
    bv: float | Sequence[float] = 1.0,
    dq: float | Sequence[float] = 1.0,
    bq: float | Sequence[float] = 1.0,
    blocks: Sequence[int] | None = None,
    steps: Sequence[int] | Mapping[str, float] | None = None,
    branches: str = "both",
    num_steps: int | None = None,
    arithmetic: str = "fused",
) -> Iterator[BiasDeltaGuidance]:
    """Guide every call of a QwenImageTransformer2DModel or FluxTransformer2DModel (FLUX.1
    Kontext) made inside the block.

    In each guided block, the L condition-image tokens (the last L of the attention
    sequence, read from each call) get, per sample, head and channel,
    ``K' = bk * mean_K + dk * (K - mean_K)`` (K after QK-norm and RoPE),
    ``V' = bv * mean_V + dv * (V - mean_V)`` and likewise Q with ``bq``, ``dq``; text and
    noisy-latent tokens are untouched. GRAG: ``dk`` (``dv = 1``); DCAG: ``dk`` and ``dv``;
    all scales 1 compute the stock processor's result exactly.
    Each scale is a float or one value per batch element. ``blocks``: block indices
    (negative counts from the end; Flux: double-stream blocks first, then single-stream)
    or None for all. ``steps``: step indices, a window
    ``{"start": f0, "end": f1}`` of the fraction step/num_steps (needs ``num_steps``),
    or None for all; steps are counted from the timesteps the transformer sees.
    ``branches``: "both", "cond" or "uncond" CFG passes. ``arithmetic``: "fused" or
    "official" (module docstring). On exit, also after an exception, the original
    processors are back and every hook is removed.
    """
    if branches not in BRANCHES:
        raise ConfigError(f"bias-delta guidance: branches={branches!r} is not one of {BRANCHES}")
    values = {"dk": dk, "dv": dv, "bk": bk, "bv": bv, "dq": dq, "bq": bq}
    scales = {name: _scales(name, value) for name, value in values.items()}
    sizes = {v.numel() for v in scales.values()} - {1}
    if len(sizes) > 1:
        raise ConfigError(f"bias-delta guidance: per-sample scales of different lengths {sorted(sizes)}")
    guidance = BiasDeltaGuidance(
        transformer=transformer,
        scales=scales,
        blocks=_blocks(blocks, len(architecture_of(transformer).attentions(transformer))),
        steps=_steps(steps, num_steps),
        branches=branches,
        num_steps=num_steps,
        arithmetic=arithmetic,
    )
    guidance.install()
    try:
        yield guidance
    finally:
        guidance.remove()
