"""The backbones of the learned PIE-Bench metrics (metrics/piebench_backbones.py): the
rules for their weights, and the OpenAI CLIP tokenizer."""

from __future__ import annotations

import open_clip
import pytest
import torch

from attnedit.errors import ConfigError, WeightsNotFoundError
from attnedit.metrics.piebench_backbones import openai_clip_tokenizer
from attnedit.metrics.registry import build_metric
from piebench_fixture import TINY_DINO
from piebench_fixture import one_thread  # noqa: F401 (an autouse fixture: one torch thread)


def test_learned_backbone_weights_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    with pytest.raises(WeightsNotFoundError, match="squeezenet1_1-b8a52dc0.pth.*checkpoints"):
        build_metric("lpips_whole", seed=123)
    with pytest.raises(ConfigError, match="only apply to weights=random"):
        build_metric("structure_distance", config_overrides=TINY_DINO)
    a = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seeded = [build_metric("lpips_whole", weights="random", seed=s) for s in (1, 1, 2)]
    assert seeded[0].weights == "random(seed=1)" and seeded[0].uses_random_weights
    values = [float(m(a, a.flip(-1))["lpips_whole"]) for m in seeded]
    assert values[0] == values[1] != values[2]


def test_clip_tokenizer_is_openai_bpe():
    ours = openai_clip_tokenizer()
    reference = open_clip.get_tokenizer("ViT-L-14")
    for text in ["a dog sitting on a mat", "Photo of a red, shiny bicycle!"]:
        ids = ours(text)["input_ids"]
        assert ids == reference([text])[0][: len(ids)].tolist()
