"""Selecting self-attention layers by name (backends/layers.py)."""

from __future__ import annotations

import pytest

from attnedit.backends.layers import select_layers
from attnedit.errors import ConfigError
from ddpm_models import make_attention


def test_unknown_layer_names_are_listed():
    layers = {"mid_block.attentions.0": make_attention()}
    with pytest.raises(ConfigError, match="unknown self-attention layer.*mid_blok.*mid_block.attentions.0"):
        select_layers(layers, ["mid_blok"])
