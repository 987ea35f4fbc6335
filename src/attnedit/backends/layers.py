"""The self-attention layers of a diffusers UNet, by module name: what SAD decomposes and
where the injection methods edit."""

from __future__ import annotations

from torch import nn

from attnedit.errors import ConfigError


def self_attention_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """Every self-attention layer of a diffusers UNet by its module name."""
    from diffusers.models.attention_processor import Attention

    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention) and not m.is_cross_attention}


def select_layers(available: dict[str, nn.Module], layers: list[str] | str) -> dict[str, nn.Module]:
    """``"all"`` or a list of diffusers module names, validated against the model."""
    if layers == "all" or layers == ["all"]:
        return dict(available)
    if isinstance(layers, str):
        layers = [layers]
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise ConfigError(
            f"unknown self-attention layer(s) {unknown}; this model has: {', '.join(available)} (or use 'all')"
        )
    return {name: available[name] for name in layers}
