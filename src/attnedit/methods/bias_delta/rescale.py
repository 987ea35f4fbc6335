"""The rescale of the condition tokens, both arithmetics (package docstring): the fused
pass and the official scripts' expression, and the per-call state that applies them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnedit.methods.bias_delta.kernel import rescale_
from attnedit.methods.bias_delta.params import OFFICIAL_TEXT_TOKENS


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
class Call:
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
