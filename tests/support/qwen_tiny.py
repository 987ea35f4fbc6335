"""A tiny QwenImageEditPipeline built offline, shared by the Qwen-Image-Edit tests.

Every component is the real class with a tiny config: QwenImageTransformer2DModel,
AutoencoderKLQwenImage, Qwen2_5_VLForConditionalGeneration, a byte-level BPE
Qwen2Tokenizer holding the chat and vision special tokens of the prompt template, and a
Qwen2VLProcessor. Tests save it with save_pretrained and load it back through the
backend's `path`, like the real weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPipeline,
    QwenImageTransformer2DModel,
)
from tokenizers import AddedToken, pre_tokenizers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
TEXT_DIM = 24


def tiny_transformer() -> QwenImageTransformer2DModel:
    return QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 6, 6),
    ).eval()


def tiny_pipeline() -> QwenImageEditPipeline:
    torch.manual_seed(0)
    # Byte-level BPE without merges: every byte is a token, so any prompt encodes.
    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_tokens([AddedToken(t, special=True) for t in SPECIAL])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    pixels = {"min_pixels": 28 * 28, "max_pixels": 56 * 56}  # the prompt image becomes at most 4x4 patches
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         bos_token_id=None, eos_token_id=0,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 2]}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=TEXT_DIM,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )).eval()
    transformer = tiny_transformer()
    # Five levels (16x downsampling) keep the ~1 MP working size of the pipeline cheap on a CPU.
    vae = AutoencoderKLQwenImage(base_dim=2, z_dim=4, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=0,
                                 temperal_downsample=[False] * 4, latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, max_image_seq_len=8192, base_shift=math.log(3), max_shift=math.log(3),
        time_shift_type="exponential", use_dynamic_shifting=True,
    )
    return QwenImageEditPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                 processor=processor, transformer=transformer)


def save_tiny_pipeline(path: Path) -> Path:
    """Build the tiny pipeline and save it in diffusers layout under ``path``."""
    tiny_pipeline().save_pretrained(path)
    return path
