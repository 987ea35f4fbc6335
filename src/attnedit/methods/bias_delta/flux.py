"""FLUX.1 Kontext's MM-DiT (FluxTransformer2DModel): the guided processor of its double-
and single-stream blocks and the condition tokens of a call (marked in ``img_ids``)."""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, _get_qkv_projections
from torch import Tensor

from attnedit.errors import ConfigError
from attnedit.methods.bias_delta.architectures import Architecture, Guided, register


class FluxBiasDeltaAttnProcessor(Guided, FluxAttnProcessor):
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


# Block indices count the double-stream blocks first, then the single-stream ones.
register(FluxTransformer2DModel, Architecture(
    FluxAttnProcessor, FluxBiasDeltaAttnProcessor, ("transformer_blocks", "single_transformer_blocks"),
    lambda bound, seq_len: kontext_condition_tokens(bound.get("img_ids"), seq_len),
))
