"""A tiny random Qwen2.5-VL judge model saved offline, for the local judge's tests.

Every part is the real class: Qwen2_5_VLForConditionalGeneration with a tiny config, a
Qwen2_5_VLProcessor holding the PIL-backend Qwen2-VL image processor (``merge_size`` and
``patch_size`` matching the vision tower), a byte-level BPE Qwen2Tokenizer with the Qwen
chat and vision special tokens, and a chat template written here in the same message
layout as Qwen's (im_start / role / content / im_end; an image is vision_start,
image_pad, vision_end). Saved with save_pretrained, it loads through the judge's own
loading code like a downloaded model. Random weights reply with nonsense.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken, pre_tokenizers
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    Qwen2VLVideoProcessor,
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
           "<|image_pad|>", "<|video_pad|>"]
PATCH, MERGE = 14, 2
#: Small pixel bounds: an image becomes 2x2 to 4x4 merged tokens, so a CPU test stays fast.
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 16

# Written for these tests: a system turn unless the conversation brings one, then each turn
# as <|im_start|>role\n ... <|im_end|>\n; list contents in their order (text or image).
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou judge images.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE without merges (every byte is a token, so any text encodes) plus the
    Qwen special tokens; eos <|im_end|>, pad <|endoftext|>."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               unk_token=None, bos_token=None)
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True) for t in SPECIAL]})
    return tokenizer


def tiny_processor(tokenizer: Qwen2Tokenizer | None = None, min_pixels: int = MIN_PIXELS,
                   max_pixels: int = MAX_PIXELS) -> Qwen2_5_VLProcessor:
    tokenizer = tokenizer or tiny_tokenizer()
    pixels = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2, **pixels),
        tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=CHAT_TEMPLATE,
    )


def token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    """The special-token ids the model config must agree with."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}


def tiny_config(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLConfig:
    ids = token_ids(tokenizer)
    return Qwen2_5_VLConfig(
        # A wide initialiser: the random model's next token then depends strongly on the whole
        # context, so a padding or position bug changes the generated ids.
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         initializer_range=0.3, bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1], initializer_range=0.3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    """Shaped like the released Qwen2.5-VL instruct models': two end tokens, a pad token and a
    repetition penalty (which counts every input id, pads included)."""
    ids = token_ids(tokenizer)
    return GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"],
                            repetition_penalty=1.05, do_sample=False)


def save_processor(path: Path, **pixels: int) -> Path:
    """Only the tokenizer, image processor and chat template (the GPU check pairs them with a
    real-size config)."""
    tiny_processor(**pixels).save_pretrained(path)
    return path


def tiny_qwen_vl_dir(tmp_root: Path, seed: int = 0) -> Path:
    """Build the tiny model, processor and generation config and save them under
    ``tmp_root/tiny_qwen_vl`` (reused when already there)."""
    path = Path(tmp_root) / "tiny_qwen_vl"
    if (path / "model.safetensors").is_file():
        return path
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer)).eval()
    model.generation_config = generation_config(tokenizer)
    model.save_pretrained(path)
    tiny_processor(tokenizer).save_pretrained(path)
    return path
