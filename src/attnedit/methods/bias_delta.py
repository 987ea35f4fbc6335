"""Bias-delta attention guidance (GRAG, DCAG) for the MM-DiTs of Qwen-Image-Edit and
FLUX.1 Kontext.

In every guided block the attention sequence ends with the L condition-image tokens
(Qwen: the image stream of a double-stream block is the noisy latent, then the
condition image; Kontext: text, noisy latent, then condition image, in double- and
single-stream blocks alike). For those L tokens, per sample, head and channel::

    K' = bk * mean_K + dk * (K - mean_K)     K after QK RMSNorm and RoPE
    V' = bv * mean_V + dv * (V - mean_V)     V the raw projection
    Q' = bq * mean_Q + dq * (Q - mean_Q)     optional (the DCAG paper's future work)

Text tokens and noisy-latent tokens are untouched. GRAG is dv = bv = 1; (1, 1)
reproduces the stock processor bit for bit.

``arithmetic`` says how the rescale is computed. "fused" (the default): one pass in
float32, rounded once to the tokens' dtype, identity scales skipped (bitwise stock at
(1, 1)), at ~1% of a Qwen-Image-Edit call. "official": the official scripts' expression
op by op in the tokens' dtype (bfloat16 in their pipelines), Qwen-Image-Edit only:
leeguandong/DCAG dcag/models.py lines 331-350 and little-misfit/GRAG-Image-Editing
Qwen-Edit-GRAG/hacked_models/models.py lines 330-341: in every guided block the first 512
text-stream keys get ``1.0 * mean + (K - mean) * 1.0`` (identity up to rounding), the
condition keys ``bk * mean + (K - mean) * dk`` even at (1, 1), the condition values the
same only where (bv, dv) != (1, 1); each of ``-``, ``*``, ``+`` rounds to bfloat16. The
two differ by bfloat16 rounding only; rows record ``guidance_arithmetic`` and tables built
from "fused" rows say so in their titles. L is read from each transformer call (never
a constant): Qwen's ``img_shapes``, Kontext's ``img_ids`` (condition tokens carry
first coordinate 1), so non-square and multi-sample batches work, and each batch
element may carry its own scales.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections
from diffusers.models.transformers.transformer_qwenimage import (
    QwenDoubleStreamAttnProcessor2_0,
    apply_rotary_emb_qwen,
)
from torch import Tensor

from attnedit.errors import ConfigError
from attnedit.methods.bias_delta_kernel import rescale_
from attnedit.methods.base import EditMethod

PARAMS = ("dk", "dv", "bk", "bv", "dq", "bq")
ARITHMETIC = ("fused", "official")
#: The official scripts' text span: grag_scale's txt_len (leeguandong/DCAG inference.py line 50).
OFFICIAL_TEXT_TOKENS = 512
CHANNELS = {"key": ("dk", "bk"), "value": ("dv", "bv"), "query": ("dq", "bq")}
QKV = ("query", "key", "value")  # the order the processors hand them over
BRANCHES = ("both", "cond", "uncond")


def bias_delta_(x: Tensor, length: int, delta: Tensor, offset: Tensor) -> Tensor:
    """In place: the last ``length`` tokens of ``x`` ([B, S, heads, head_dim]) become
    ``bias * mean + delta * (x - mean)``; returns ``x``.

    ``delta`` and ``offset = bias - delta`` are float32 [B, 1, 1, 1] (or [1, 1, 1, 1])
    on ``x``'s device. The mean is per sample, head and channel over those tokens,
    accumulated in float32 without a float32 copy of them. The rescale is one fused pass,
    ``delta * x + offset * mean`` (computed in float32, rounded once to ``x``'s dtype),
    written over the tokens without a clone or a concatenation: the guided processor
    costs two reads and one write of the condition tokens per channel and block. At
    delta = bias = 1 it is exactly ``x`` (``1 * x + 0``), whatever the dtype.
    """
    cond = x[:, x.shape[1] - length:]
    shift = cond.mean(dim=1, keepdim=True, dtype=torch.float32) * offset
    if not rescale_(cond, delta, shift):  # the Triton kernel on CUDA; elsewhere the same pass in PyTorch
        torch.addcmul(shift, cond, delta, out=cond)
    return x


def official_rescale_(x: Tensor, start: int, stop: int, bias: float, delta: float) -> None:
    """Tokens start:stop of the one-sample ``x`` ([1, S, heads, head_dim]) in place, as the
    official scripts write it (leeguandong/DCAG dcag/models.py lines 337-350): each
    operation in x's dtype, the scales Python floats."""
    mean = x[:, start:stop, :, :].mean(dim=1)
    x[:, start:stop, :, :] = bias * mean + (x[:, start:stop, :, :] - mean) * delta


@dataclass
class _Call:
    """What the processors need to know about the transformer call in progress."""

    length: int  # L: the condition tokens are the last L of every guided sequence
    # (index into (query, key, value), delta, bias - delta) per channel that is not identity
    factors: tuple[tuple[int, Tensor, Tensor], ...]
    # arithmetic="official": per sample (bk, dk, bv, dv) as Python floats; None: fused
    official: tuple[tuple[float, float, float, float], ...] | None = None

    def guide(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Q, K, V of [B, S, heads, head_dim] sequences whose last L tokens are the condition
        image; the guided channels are rescaled in place."""
        if self.official is not None:
            stop = key.shape[1]
            for b, (bk, dk, bv, dv) in enumerate(self.official):  # the official code runs one sample per call
                official_rescale_(key[b : b + 1], stop - self.length, stop, bk, dk)
                if bv != 1.0 or dv != 1.0:
                    official_rescale_(value[b : b + 1], stop - self.length, stop, bv, dv)
            return query, key, value
        qkv = (query, key, value)
        for index, delta, offset in self.factors:
            bias_delta_(qkv[index], self.length, delta, offset)
        return qkv

    def guide_text(self, key: Tensor) -> Tensor:
        """Text-stream keys: untouched, except under the official arithmetic, whose identity
        rescale of the first 512 tokens rounds them (dcag/models.py lines 337, 340)."""
        if self.official is not None:
            for b in range(key.shape[0]):
                official_rescale_(key[b : b + 1], 0, OFFICIAL_TEXT_TOKENS, 1.0, 1.0)
        return key


class _Guided:
    """What a guided processor adds to the stock one it replaces: the controller whose
    per-call state it reads, and the stock one's attention backend / parallel config."""

    def __init__(self, controller: "BiasDeltaGuidance", stock: Any = None):
        super().__init__()
        self.controller = controller
        if stock is not None:
            self._attention_backend = stock._attention_backend
            self._parallel_config = stock._parallel_config


class BiasDeltaAttnProcessor(_Guided, QwenDoubleStreamAttnProcessor2_0):
    """The stock Qwen double-stream processor with one insertion: after QK-norm and
    RoPE, before the joint attention, the condition tokens' Q/K/V get the bias-delta.

    The per-call state (where the condition tokens start, the scales, whether this call
    is guided at all) comes from ``controller.call``, set by a forward pre-hook on the
    transformer; with no state the processor computes exactly the stock result.
    """

    # The body follows QwenDoubleStreamAttnProcessor2_0.__call__ (diffusers 0.42) line for
    # line, so that guidance off is bitwise stock; the test suite checks that it is.
    def __call__(
        self,
        attn,
        hidden_states: torch.FloatTensor,
        encoder_hidden_states: torch.FloatTensor = None,
        encoder_hidden_states_mask: torch.FloatTensor = None,
        attention_mask: torch.FloatTensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.FloatTensor:
        if encoder_hidden_states is None:
            raise ValueError("BiasDeltaAttnProcessor requires encoder_hidden_states (text stream)")
        if attention_mask is not None:
            raise ValueError("BiasDeltaAttnProcessor builds the joint mask from encoder_hidden_states_mask")

        if encoder_hidden_states_mask is not None:
            image_mask = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            attention_mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)[:, None, None, :]

        seq_txt = encoder_hidden_states.shape[1]
        head_dim = attn.inner_dim // attn.heads
        img_query = attn.to_q(hidden_states).unflatten(-1, (-1, head_dim))
        img_key = attn.to_k(hidden_states).unflatten(-1, (-1, head_dim))
        img_value = attn.to_v(hidden_states).unflatten(-1, (-1, head_dim))
        txt_query = attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        txt_key = attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))
        txt_value = attn.add_v_proj(encoder_hidden_states).unflatten(-1, (-1, head_dim))

        if attn.norm_q is not None:
            img_query = attn.norm_q(img_query)
        if attn.norm_k is not None:
            img_key = attn.norm_k(img_key)
        if attn.norm_added_q is not None:
            txt_query = attn.norm_added_q(txt_query)
        if attn.norm_added_k is not None:
            txt_key = attn.norm_added_k(txt_key)

        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            img_query = apply_rotary_emb_qwen(img_query, img_freqs, use_real=False)
            img_key = apply_rotary_emb_qwen(img_key, img_freqs, use_real=False)
            txt_query = apply_rotary_emb_qwen(txt_query, txt_freqs, use_real=False)
            txt_key = apply_rotary_emb_qwen(txt_key, txt_freqs, use_real=False)

        call = self.controller.call
        if call is not None:  # the one change to the stock computation
            img_query, img_key, img_value = call.guide(img_query, img_key, img_value)
            txt_key = call.guide_text(txt_key)

        joint_query = torch.cat([txt_query, img_query], dim=1)
        joint_key = torch.cat([txt_key, img_key], dim=1)
        joint_value = torch.cat([txt_value, img_value], dim=1)
        joint_hidden_states = dispatch_attention_fn(
            joint_query,
            joint_key,
            joint_value,
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        joint_hidden_states = joint_hidden_states.flatten(2, 3).to(joint_query.dtype)

        txt_attn_output = joint_hidden_states[:, :seq_txt, :]
        img_attn_output = attn.to_out[0](joint_hidden_states[:, seq_txt:, :].contiguous())
        if len(attn.to_out) > 1:
            img_attn_output = attn.to_out[1](img_attn_output)
        txt_attn_output = attn.to_add_out(txt_attn_output.contiguous())
        return img_attn_output, txt_attn_output


class FluxBiasDeltaAttnProcessor(_Guided, FluxAttnProcessor):
    """The stock Flux processor (double- and single-stream blocks) with one insertion:
    after QK-norm, the text/image concatenation and RoPE, before the attention, the
    condition tokens (the sequence's last L) get the bias-delta. State as in
    :class:`BiasDeltaAttnProcessor`."""

    # The body follows FluxAttnProcessor.__call__ (diffusers 0.42) line for line, so that
    # guidance off is bitwise stock; the test suite checks that it is.
    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        query, key, value, encoder_query, encoder_key, encoder_value = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = query.unflatten(-1, (-1, attn.head_dim))
        key = key.unflatten(-1, (-1, attn.head_dim))
        value = value.unflatten(-1, (-1, attn.head_dim))
        query = attn.norm_q(query)
        key = attn.norm_k(key)

        if attn.added_kv_proj_dim is not None:
            encoder_query = encoder_query.unflatten(-1, (-1, attn.head_dim))
            encoder_key = encoder_key.unflatten(-1, (-1, attn.head_dim))
            encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))
            encoder_query = attn.norm_added_q(encoder_query)
            encoder_key = attn.norm_added_k(encoder_key)
            query = torch.cat([encoder_query, query], dim=1)
            key = torch.cat([encoder_key, key], dim=1)
            value = torch.cat([encoder_value, value], dim=1)

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        call = self.controller.call
        if call is not None:  # the one change to the stock computation
            query, key, value = call.guide(query, key, value)

        hidden_states = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1
            )
            hidden_states = attn.to_out[0](hidden_states.contiguous())
            hidden_states = attn.to_out[1](hidden_states)
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
            return hidden_states, encoder_hidden_states
        return hidden_states


def condition_span(img_shapes: Any, seq_len: int) -> tuple[int, int]:
    """(first condition token, number L of condition tokens) of an image stream of
    ``seq_len`` tokens, from the transformer's ``img_shapes``: per sample a list of
    (frames, h, w), the noisy latent first, then the condition image(s)."""
    if img_shapes is None:
        raise ConfigError("bias-delta guidance: the transformer was called without img_shapes; "
                          "the condition tokens cannot be located")
    samples = [img_shapes] if _is_shape(img_shapes) else list(img_shapes)
    spans = set()
    for shapes in samples:
        shapes = [shapes] if _is_shape(shapes) else list(shapes)
        noisy = math.prod(shapes[0])
        spans.add((noisy, sum(math.prod(s) for s in shapes[1:])))
    if len(spans) != 1:
        raise ConfigError(f"bias-delta guidance: samples of one batch have different image shapes {img_shapes}; "
                          "the Qwen transformer's RoPE uses the first sample's shapes for all, so batch equal sizes")
    noisy, cond = spans.pop()
    if noisy + cond != seq_len:
        raise ConfigError(f"bias-delta guidance: img_shapes {img_shapes} give {noisy} + {cond} image tokens "
                          f"but the image stream has {seq_len}")
    return noisy, cond


def kontext_condition_tokens(img_ids: Tensor | None, seq_len: int) -> int:
    """L of a FluxTransformer2DModel call from its ``img_ids`` ([S, 3]; [B, S, 3] in old
    callers): FluxKontextPipeline appends the condition image's tokens after the noisy
    latent and marks them with first coordinate 1 (the latent's is 0)."""
    if img_ids is None:
        raise ConfigError("bias-delta guidance: the Flux transformer was called without img_ids; "
                          "the condition tokens cannot be located")
    ids = img_ids[0] if img_ids.ndim == 3 else img_ids
    if ids.shape[0] != seq_len:
        raise ConfigError(f"bias-delta guidance: img_ids hold {ids.shape[0]} positions but the image stream has "
                          f"{seq_len} tokens")
    is_condition = ids[:, 0] != 0
    length = int(is_condition.sum())
    if not bool(is_condition[seq_len - length:].all()):
        raise ConfigError("bias-delta guidance: the condition-image tokens (img_ids[:, 0] != 0) are not the last "
                          "tokens of the image stream, as FluxKontextPipeline lays them out")
    return length


@dataclass(frozen=True)
class _Architecture:
    """Where a transformer class keeps its attention modules and its condition tokens."""

    stock: type  # the processor class that is wrapped
    guided: type  # its guided subclass
    block_lists: tuple[str, ...]  # transformer attributes holding the blocks, in index order
    locate: Callable[[dict[str, Any], int], int]  # (forward arguments, image tokens) -> L

    def attentions(self, transformer) -> list[Any]:
        return [block.attn for name in self.block_lists for block in getattr(transformer, name)]

    def condition_tokens(self, bound: dict[str, Any]) -> int:
        return self.locate(bound, bound["hidden_states"].shape[1])


ARCHITECTURES = {
    QwenImageTransformer2DModel: _Architecture(
        QwenDoubleStreamAttnProcessor2_0, BiasDeltaAttnProcessor, ("transformer_blocks",),
        lambda bound, seq_len: condition_span(bound.get("img_shapes"), seq_len)[1],
    ),
    # Block indices count the double-stream blocks first, then the single-stream ones.
    FluxTransformer2DModel: _Architecture(
        FluxAttnProcessor, FluxBiasDeltaAttnProcessor, ("transformer_blocks", "single_transformer_blocks"),
        lambda bound, seq_len: kontext_condition_tokens(bound.get("img_ids"), seq_len),
    ),
}


def _architecture(transformer) -> _Architecture:
    for cls, architecture in ARCHITECTURES.items():
        if isinstance(transformer, cls):
            return architecture
    names = ", ".join(cls.__name__ for cls in ARCHITECTURES)
    raise ConfigError(f"bias-delta guidance supports {names}, not {type(transformer).__name__}")


def _is_shape(value: Any) -> bool:
    return isinstance(value, Sequence) and len(value) == 3 and all(isinstance(v, numbers.Integral) for v in value)


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
class BiasDeltaGuidance:
    """The installed guidance: scales, where and when it acts, and a log of the
    transformer calls it saw (``log``: dicts with branch, step, guided)."""

    transformer: Any = field(repr=False)
    scales: dict[str, Tensor]
    blocks: list[int]
    steps: Any = None
    branches: str = "both"
    num_steps: int | None = None
    arithmetic: str = "fused"
    call: _Call | None = None
    branch: str | None = None  # set while the pipeline runs a cache_context("cond"/"uncond")
    step: int = -1
    log: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _last_t: float | None = None
    _undo: list[Any] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._architecture = _architecture(self.transformer)
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
            if self._architecture.guided is not BiasDeltaAttnProcessor:
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
                self.call = _Call(length, (), tuple(zip(*per_sample)))
                return
            device = hidden.device
            if device not in self._factors_on:
                self._factors_on[device] = tuple((i, d.to(device), o.to(device)) for i, d, o in self._factors)
            self.call = _Call(length, self._factors_on[device])

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
        blocks=_blocks(blocks, len(_architecture(transformer).attentions(transformer))),
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


class BiasDelta(EditMethod):
    """GRAG / DCAG as an edit method: a grid of scales, one case per grid point.

    ``grid`` maps any of dk, dv, bk, bv, dq, bq to a value or a list of values (absent
    keys are 1); :meth:`edits` is their cartesian product in that key order. ``blocks``,
    ``steps`` and ``branches`` are as in :func:`bias_delta_guidance`. A method named
    "grag" must keep the Value channel at identity (dv = bv = 1).
    """

    def __init__(
        self,
        name: str = "dcag",
        grid: Mapping[str, Any] | None = None,
        blocks: Sequence[int] | None = None,
        steps: Sequence[int] | Mapping[str, float] | None = None,
        branches: str = "both",
        arithmetic: str = "fused",
    ) -> None:
        self.name = name
        grid = dict(grid or {})
        unknown = sorted(set(grid) - set(PARAMS))
        if unknown:
            raise ConfigError(f"method '{name}': unknown grid keys {unknown}; use {list(PARAMS)}")
        self.grid = {p: [float(v) for v in _as_list(grid.get(p, 1.0))] for p in PARAMS}
        for p, values in self.grid.items():
            if not values or not all(math.isfinite(v) for v in values):
                raise ConfigError(f"method '{name}': grid.{p}={values} must be a non-empty list of finite numbers")
        if name == "grag" and any(v != 1.0 for v in self.grid["dv"] + self.grid["bv"]):
            raise ConfigError("method 'grag' is key-only guidance: grid.dv and grid.bv must be 1 (use dcag for dv)")
        if branches not in BRANCHES:
            raise ConfigError(f"method '{name}': branches={branches!r} is not one of {BRANCHES}")
        self.blocks = None if blocks is None else [int(b) for b in _as_list(blocks)]
        self.steps = None if steps is None else (dict(steps) if isinstance(steps, Mapping)
                                                 else [int(s) for s in _as_list(steps)])
        self.branches = branches
        if arithmetic not in ARITHMETIC:
            raise ConfigError(f"method '{name}': arithmetic={arithmetic!r} is not one of {ARITHMETIC}")
        if arithmetic == "official" and any(v != 1.0 for v in self.grid["dq"] + self.grid["bq"]):
            raise ConfigError(f"method '{name}': the official scripts have no Query rescale; "
                              "grid.dq and grid.bq need arithmetic=fused")
        self.arithmetic = arithmetic

    def edits(self) -> list[dict[str, Any]]:
        return [{**dict(zip(PARAMS, combo)), "guidance_arithmetic": self.arithmetic}
                for combo in itertools.product(*(self.grid[p] for p in PARAMS))]

    def control(self, backend, edits: list[dict[str, Any]]) -> contextlib.AbstractContextManager:
        per_sample = {p: [float(e.get(p, 1.0)) for e in edits] for p in PARAMS}
        return bias_delta_guidance(
            backend.transformer,
            **per_sample,
            blocks=self.blocks,
            steps=self.steps,
            branches=self.branches,
            num_steps=getattr(backend, "num_inference_steps", None),
            arithmetic=self.arithmetic,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "grid": self.grid, "blocks": self.blocks, "steps": self.steps,
                "branches": self.branches, "arithmetic": self.arithmetic}


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)
