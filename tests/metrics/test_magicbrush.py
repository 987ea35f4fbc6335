"""MagicBrush's CLIP-I, CLIP-T and DINO (metrics/magicbrush.py) against the reference
computation written out here: MagicBrush's transforms on 8-bit PIL images (openai/CLIP's
``_transform`` and image_eval.py's DINO Compose, constants copied from them), the
backbone called directly, and scipy's cosine distance as image_eval.py takes it."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from scipy.spatial import distance
from torchvision import transforms as T

from attnedit.errors import ConfigError, DataError, WeightsNotFoundError
from attnedit.metrics.registry import build_metric, metric_info
from attnedit.metrics.settings import metric_settings
from metric_inputs import as_batch, image_pairs
from piebench_fixture import TINY_DINO
from piebench_fixture import one_thread  # noqa: F401 (an autouse fixture: one torch thread)

SMALL_CLIP = "ViT-S-32-alt"  # ViT-B-32's tokenizer, preprocessing and code path, less compute
BICUBIC = T.InterpolationMode.BICUBIC
CLIP_TRANSFORM = T.Compose([
    T.Resize(224, interpolation=BICUBIC), T.CenterCrop(224), T.ToTensor(),
    T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
])
DINO_TRANSFORM = T.Compose([
    T.Resize(256, interpolation=BICUBIC), T.CenterCrop(224), T.ToTensor(),
    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
CONFIG = Path(__file__).resolve().parents[2] / "conf" / "metrics" / "magicbrush.yaml"


@pytest.fixture(scope="module")
def metrics():
    return {"clip_i": build_metric("clip_i", model=SMALL_CLIP, weights="random", seed=0),
            "clip_t": build_metric("clip_t", model=SMALL_CLIP, weights="random", seed=0),
            "dino": build_metric("dino", weights="random", seed=0, config_overrides=TINY_DINO)}


@pytest.fixture(scope="module")
def pairs():
    """Source and edited 8-bit images, not square: both the resize and the crop act."""
    source, edited = image_pairs(3, 2, 192)
    return source[:, :152], edited[:, :152]


def _inputs(transform, images: np.ndarray) -> torch.Tensor:
    return torch.stack([transform(Image.fromarray(image)) for image in images])


def _scipy_cosine(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """image_eval.py's ``1 - spatial.distance.cosine`` of each pair of embeddings."""
    return [1 - distance.cosine(x, y) for x, y in zip(a.double().numpy(), b.double().numpy())]


@pytest.mark.parametrize("name", ["clip_i", "dino"])
def test_image_similarity_equals_magicbrush_computation(metrics, pairs, name):
    metric, (source, edited) = metrics[name], pairs
    if name == "clip_i":
        transform, embed = CLIP_TRANSFORM, metric.model.encode_image
    else:  # DINO's output: the CLS token after the final LayerNorm
        transform, embed = DINO_TRANSFORM, lambda x: metric.model.forward_features(x)[:, 0]
    with torch.no_grad():
        expected = _scipy_cosine(embed(_inputs(transform, edited)), embed(_inputs(transform, source)))
    got = metric(as_batch(edited), as_batch(source))[name].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert max(expected) < 1 - 1e-4  # the pairs differ for the backbone
    # Identical images give 1; several methods at once give each method's own values.
    same = metric.score_each([as_batch(source), as_batch(edited)], as_batch(source))
    np.testing.assert_allclose(same[0][name].numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(same[1][name].numpy(), expected, atol=1e-6, rtol=0)


def test_clip_t_compares_with_the_chosen_text_field(metrics, pairs):
    edited = pairs[1]
    texts = ["a red apple on a wooden table", "a dog running on the beach"]
    tokens = open_clip.get_tokenizer(SMALL_CLIP)(texts)
    model = metrics["clip_t"].model
    assert model is metrics["clip_i"].model  # one backbone for both
    with torch.no_grad():
        expected = _scipy_cosine(model.encode_image(_inputs(CLIP_TRANSFORM, edited)), model.encode_text(tokens))
    default = metrics["clip_t"]
    assert default.needs == ("editing_prompt",)
    np.testing.assert_allclose(default(as_batch(edited), as_batch(pairs[0]), editing_prompt=texts)["clip_t"].numpy(),
                               expected, atol=1e-6, rtol=0)
    chosen = build_metric("clip_t", text_field="instruction", model=SMALL_CLIP, weights="random", seed=0)
    assert chosen.needs == ("instruction",) and metric_settings(chosen, {})["convention"] == "text_field=instruction"
    with pytest.raises(DataError, match=r"needs \['instruction'\]"):
        chosen(as_batch(edited), as_batch(edited), editing_prompt=texts)
    with pytest.raises(DataError, match="list of 2 strings"):
        chosen(as_batch(edited), as_batch(edited), instruction=texts[:1])


def test_weights_rules_and_marks(metrics, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=r"metric 'dino'.*timm/vit_small_patch16_224\.dino"):
        build_metric("dino", cache_dir=str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"metric 'clip_i'.*timm/vit_base_patch32_clip_224\.openai"):
        build_metric("clip_i", cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="only apply to weights=random"):
        build_metric("dino", config_overrides=TINY_DINO)
    for name, metric in metrics.items():
        assert metric.weights == "random(seed=0)" and metric.uses_random_weights, name


def test_config_group_and_display(metrics):
    """conf/metrics/magicbrush.yaml: the three registered classes with keys they take; the
    columns and settings of CLIP-I and DINO say their reference is the source."""
    group = OmegaConf.to_container(OmegaConf.load(CONFIG))
    assert list(group) == ["clip_i", "clip_t", "dino"]
    for name, node in group.items():
        cls = type(metrics[name])
        assert node.pop("_target_") == f"{cls.__module__}.{cls.__qualname__}"
        inspect.signature(cls).bind(**node)
    for name in ("clip_i", "dino"):
        assert metric_info(name).header == f"{metric_info(name).display_name} whole [cosine]"
        assert "vs source" in metric_info(name).display_name
        assert "reference=source" in metric_settings(metrics[name], {})["convention"]
