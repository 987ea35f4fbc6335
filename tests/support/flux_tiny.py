"""A tiny FluxKontextPipeline built offline, shared by the FLUX.1 Kontext tests.

Every component is the real class with a tiny config: FluxTransformer2DModel (one
double- and two single-stream blocks), AutoencoderKL, CLIPTextModel with a byte-level
BPE CLIPTokenizer, T5EncoderModel with a character-level T5TokenizerFast. Tests save it
with save_pretrained and load it back through the backend's `path`, like real weights.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

TEXT_DIM, POOLED_DIM = 24, 16
TRANSFORMER = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
    joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM, guidance_embeds=True, axes_dims_rope=(2, 2, 4),
)


def tiny_transformer() -> FluxTransformer2DModel:
    return FluxTransformer2DModel(**TRANSFORMER).eval()


def tiny_pipeline() -> FluxKontextPipeline:
    torch.manual_seed(0)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c: i + 2 for i, c in enumerate(alphabet)}}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(alphabet)})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)  # every byte a token
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=POOLED_DIM, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).eval()
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    tokenizer_2 = T5TokenizerFast(
        vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [(c, -3.0) for c in chars],
        extra_ids=0,
    )  # a character-level Unigram: any lowercase prompt encodes
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, shift_factor=0.0, scaling_factor=1.0,
    ).eval()
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=tiny_transformer(),
    )


def save_tiny_pipeline(path: Path) -> Path:
    """Build the tiny pipeline and save it in diffusers layout under ``path``."""
    tiny_pipeline().save_pretrained(path)
    return path
