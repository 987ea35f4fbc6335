"""The learned networks behind the PIE-Bench metrics, loaded under the weights rules of
metrics/weights.py, and shared: the three region variants of LPIPS (or the three CLIP
scores) use one network, not three.

- LPIPS: torchmetrics' copy of LPIPS (``_NoTrainLpips``), the module the official
  script's ``LearnedPerceptualImagePatchSimilarity`` wraps. Its linear heads ship in
  torchmetrics; its backbone (squeeze by default) is torchvision's ImageNet download.
- CLIP: transformers ``CLIPModel`` + ``CLIPProcessor``, "openai/clip-vit-large-patch14"
  by default (what torchmetrics' CLIPScore loads).
- DINO ViT-B/8: timm ``vit_base_patch8_224.dino`` (the same architecture and weights as
  torch.hub's ``facebookresearch/dino`` ``dino_vitb8``: fused qkv, LayerNorm eps 1e-6).

``weights="random"`` builds the same classes from the same configs, seeded, without
any download; small ``overrides`` of the config are accepted only then (tests).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from attnedit.backends.loading import download_command
from attnedit.errors import ConfigError
from attnedit.metrics.weights import (
    check_weights_mode,
    from_torch_hub,
    hf_hub_cache,
    imagenet_backbone_url,
    missing_weights,
)

_CACHE: dict[str, Any] = {}

CLIP_MODEL = "openai/clip-vit-large-patch14"
DINO_MODEL = "vit_base_patch8_224.dino"
LPIPS_NETS = ("squeeze", "alex", "vgg")


def _shared(key: tuple, build: Callable[[], Any]) -> Any:
    """One instance per distinct (loader, arguments)."""
    name = json.dumps(key, sort_keys=True, default=str)
    if name not in _CACHE:
        _CACHE[name] = build()
    return _CACHE[name]


def _check_overrides(overrides: dict | None, weights: str, what: str) -> dict:
    if overrides and weights != "random":
        raise ConfigError(
            f"{what}: config overrides {sorted(overrides)} only apply to weights=random; "
            "pretrained weights fix the architecture."
        )
    return dict(overrides or {})


# LPIPS --------------------------------------------------------------------------------
def load_lpips(net: str = "squeeze", weights: str = "pretrained", seed: int = 0) -> nn.Module:
    """torchmetrics' LPIPS module (eval, no grad) with a pretrained or a seeded random backbone."""
    check_weights_mode(weights, "lpips")
    if net not in LPIPS_NETS:
        raise ConfigError(f"LPIPS net_type={net!r} is not one of {LPIPS_NETS}; PIE-Bench uses 'squeeze'.")
    return _shared(("lpips", net, weights, seed), lambda: _build_lpips(net, weights, seed))


def _build_lpips(net: str, weights: str, seed: int) -> nn.Module:
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    with torch.random.fork_rng(devices=[]):  # torchvision's layer init draws from the global RNG
        if weights == "random":
            torch.manual_seed(seed)
            return _NoTrainLpips(net=net, pnet_rand=True).eval().requires_grad_(False)
        model = from_torch_hub(lambda: _NoTrainLpips(net=net), imagenet_backbone_url(net),
                               f"LPIPS (torchmetrics, net_type={net!r}) backbone")
    return model.eval().requires_grad_(False)


# CLIP ---------------------------------------------------------------------------------
def clip_vit_l14_config(overrides: dict | None = None):
    """The CLIPConfig of openai/clip-vit-large-patch14, written out so no download is needed."""
    from transformers import CLIPConfig

    text = dict(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )  # fmt: skip
    vision = dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, hidden_act="quick_gelu", projection_dim=768,
    )  # fmt: skip
    overrides = dict(overrides or {})
    text.update(overrides.pop("text_config", {}))
    vision.update(overrides.pop("vision_config", {}))
    top = {"projection_dim": 768, "logit_scale_init_value": 2.6592, **overrides}
    return CLIPConfig(text_config=text, vision_config=vision, **top)


def openai_clip_tokenizer():
    """OpenAI's CLIP BPE tokenizer built from the vocabulary file open_clip ships (no download)."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = [tuple(line.split()) for line in gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges)


def load_clip(
    model: str = CLIP_MODEL, weights: str = "pretrained", seed: int = 0, overrides: dict | None = None
) -> tuple[nn.Module, Any]:
    """(CLIPModel, CLIPProcessor): from a hub id / local folder, or seeded random of the ViT-L/14 config."""
    check_weights_mode(weights, "clip")
    overrides = _check_overrides(overrides, weights, "CLIP")
    return _shared(("clip", model, weights, seed, overrides), lambda: _build_clip(model, weights, seed, overrides))


def _build_clip(model: str, weights: str, seed: int, overrides: dict):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    if weights == "random":
        if model != CLIP_MODEL:
            raise ConfigError(f"CLIP weights=random builds {CLIP_MODEL}'s architecture; got model={model!r}.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = CLIPModel(clip_vit_l14_config(overrides))
        # CLIPImageProcessor's defaults are the openai preprocessing (224 bicubic, center crop, CLIP mean/std).
        return network.eval().requires_grad_(False), CLIPProcessor(CLIPImageProcessor(), openai_clip_tokenizer())
    try:
        network = CLIPModel.from_pretrained(model)
        processor = CLIPProcessor.from_pretrained(model)
    except OSError as err:
        raise missing_weights(
            f"CLIP score ({model})",
            model,
            hf_hub_cache(),
            f"Run `{download_command(model, None)}` where there is network (it fills HF_HUB_CACHE), "
            "or set clip_model=<local folder holding config.json, the weights and the processor files>.",
        ) from err
    return network.eval().requires_grad_(False), processor


# DINO ---------------------------------------------------------------------------------
def load_dino(
    model: str = DINO_MODEL, weights: str = "pretrained", seed: int = 0, overrides: dict | None = None
) -> nn.Module:
    """A timm VisionTransformer (DINO ViT-B/8 by default) whose last block's qkv is hooked by the metric."""
    check_weights_mode(weights, "structure_distance")
    overrides = _check_overrides(overrides, weights, "DINO")
    return _shared(("dino", model, weights, seed, overrides), lambda: _build_dino(model, weights, seed, overrides))


def _build_dino(model: str, weights: str, seed: int, overrides: dict) -> nn.Module:
    import timm

    # dynamic_img_size: Resize(224, max_size=480) gives non-square inputs for non-square images.
    kwargs = {"num_classes": 0, "dynamic_img_size": True, **overrides}
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = timm.create_model(model, pretrained=False, **kwargs)
        return network.eval().requires_grad_(False)
    try:
        network = timm.create_model(model, pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        repo = f"timm/{model}"
        raise missing_weights(
            f"structure distance (DINO {model})",
            f"{repo} (model.safetensors)",
            hf_hub_cache(),
            f"Run `{download_command(repo, None)}` where there is network (it fills HF_HUB_CACHE).",
        ) from err
    return network.eval().requires_grad_(False)
