"""A tiny DDPM of the same classes and block types as google/ddpm-ema-celebahq-256,
built from config with seeded random weights and saved with save_pretrained, so the
default job and the tests run offline through the same loading code as hub models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

# google/ddpm-ema-celebahq-256's architecture (models.md), scaled down in width and size.
CELEBAHQ_UNET = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    attention_head_dim=None,  # one head over all channels; the diffusers default (8) is wrong here
    norm_num_groups=32,
    norm_eps=1e-6,
    time_embedding_type="positional",
    freq_shift=1,
    flip_sin_to_cos=False,
)
TINY_UNET = dict(CELEBAHQ_UNET, sample_size=64, layers_per_block=1,
                 block_out_channels=(16, 16, 32, 32, 64, 64), norm_num_groups=8)
# google/ddpm-cifar10-32's layout (attention at 16x16 and in the mid block), narrower and
# one resnet per level: the shapes DDPM trained by experiments/shapes_ddpm/train_ddpm.py.
CIFAR10_UNET = dict(
    CELEBAHQ_UNET,
    sample_size=32,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)
SHAPES_UNET = dict(CIFAR10_UNET, layers_per_block=1, block_out_channels=(32, 64, 64, 64), norm_num_groups=16)
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=True)


def build_tiny_ddpm(out_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Write a seeded random tiny DDPM (unet + scheduler) to ``out_dir`` if absent."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    torch.manual_seed(seed)
    unet = UNet2DModel(**{**TINY_UNET, **overrides})
    tmp = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")
    unet.save_pretrained(tmp)
    DDPMScheduler(**SCHEDULER).save_pretrained(tmp)
    try:  # atomic: a half-written model never looks complete, even with parallel jobs
        tmp.rename(out_dir)
    except OSError:
        if not (out_dir / "config.json").exists():
            raise
        shutil.rmtree(tmp)
    return out_dir
