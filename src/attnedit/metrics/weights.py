"""Shared rules for metric backbones: real pretrained weights by default, a clear error
when they are missing offline, and seeded random weights only when asked for (tests).

Every metric with a learned backbone takes ``weights="pretrained"`` (default) or
``weights="random"`` plus ``seed``; it sets its ``weights`` attribute to
``"pretrained"`` or ``"random(seed=<n>)"`` so the runner can mark rows and tables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.error import URLError

import torch

from attnedit.errors import ConfigError, WeightsNotFoundError

WEIGHT_MODES = ("pretrained", "random")
T = TypeVar("T")


def check_weights_mode(weights: str, metric: str) -> str:
    if weights not in WEIGHT_MODES:
        raise ConfigError(
            f"metric '{metric}': weights={weights!r} is not one of {WEIGHT_MODES}; "
            "use 'pretrained' (default) or 'random' (test-only, marked in every row and table)."
        )
    return weights


def weights_label(weights: str, seed: int) -> str:
    return "pretrained" if weights == "pretrained" else f"random(seed={seed})"


def torch_hub_checkpoints() -> Path:
    """Where torch.hub / torchvision / facenet-pytorch cache downloaded checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def missing_weights(what: str, file: str, looked_in: Path | str, how: str) -> WeightsNotFoundError:
    """The one error a metric raises when its weights cannot be had."""
    return WeightsNotFoundError(
        f"{what}: pretrained weights '{file}' were not found in {looked_in} and could not be "
        f"downloaded (offline or no network). {how} "
        "Tests may pass weights=random instead; rows scored that way are marked as random-backbone."
    )


def imagenet_backbone_url(net: str) -> str:
    """The torchvision ImageNet checkpoint of an LPIPS backbone (``alex``, ``vgg``, ``squeeze``)."""
    from torchvision import models

    enum = {"alex": models.AlexNet_Weights, "vgg": models.VGG16_Weights, "squeeze": models.SqueezeNet1_1_Weights}
    return enum[net].IMAGENET1K_V1.url


def from_torch_hub(build: Callable[[], T], url: str, what: str, folder: Path | None = None) -> T:
    """``build()``, which downloads ``url`` into ``folder`` (torch.hub's checkpoints) the
    first time: offline without the file, or when the download fails, one
    :func:`missing_weights` error naming the file and the fix instead (offline, torch.hub
    would call urlopen with no timeout)."""
    file, folder = Path(url).name, folder or torch_hub_checkpoints()
    missing = missing_weights(what, file, folder, f"Download {url} to {folder / file} (torch.hub's checkpoint "
                              "directory; set TORCH_HOME to move it).")
    if not (folder / file).is_file() and offline():
        raise missing
    try:
        return build()
    except (URLError, OSError) as err:
        if (folder / file).is_file():
            raise
        raise missing from err
