"""Qwen-Image-Edit's MM-DiT (QwenImageTransformer2DModel): the guided double-stream
processor and the condition tokens of a call (the image stream is the noisy latent, then
the condition image, as ``img_shapes`` says)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from diffusers import QwenImageTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_qwenimage import (
    QwenDoubleStreamAttnProcessor2_0,
    apply_rotary_emb_qwen,
)

from attnedit.errors import ConfigError
from attnedit.methods.bias_delta.architectures import Architecture, Guided, register


class BiasDeltaAttnProcessor(Guided, QwenDoubleStreamAttnProcessor2_0):
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


def _is_shape(value: Any) -> bool:
    return isinstance(value, Sequence) and len(value) == 3 and all(isinstance(v, numbers.Integral) for v in value)


register(QwenImageTransformer2DModel, Architecture(
    QwenDoubleStreamAttnProcessor2_0, BiasDeltaAttnProcessor, ("transformer_blocks",),
    lambda bound, seq_len: condition_span(bound.get("img_shapes"), seq_len)[1], official=True,
))
