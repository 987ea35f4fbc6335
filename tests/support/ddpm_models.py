"""DDPM parts the method and backend tests share: a small float64 UNet (a Jacobian cheap
enough for torch.func.jacrev), a self-attention layer as the UNets have them, a layer of
the tiny DDPM, and a SAD method set up on a backend."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention

from attnedit.backends.tiny import TINY_UNET
from attnedit.methods.sad import SAD

TINY_LAYER = "down_blocks.4.attentions.0"  # 4x4 tokens of 64 channels in the tiny model


def small_unet() -> UNet2DModel:
    """8x8 input, mid block at 2x2x16: J is 64 x 192, cheap for jacrev; float64."""
    torch.manual_seed(0)
    config = dict(TINY_UNET, sample_size=8, block_out_channels=(8, 16, 16), norm_num_groups=4,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    return UNet2DModel(**config).double().eval().requires_grad_(False)


def sad_method(backend, **kw):
    """A SAD edit method set up on ``backend``: 2 directions, alpha 0.4 unless ``kw`` says otherwise."""
    method = SAD(**{"directions": 2, "alphas": [0.4], **kw})
    method.setup(backend)
    return method


def make_attention(dim: int = 32, seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(dim, heads=1, dim_head=dim, norm_num_groups=8, residual_connection=True, bias=True)
