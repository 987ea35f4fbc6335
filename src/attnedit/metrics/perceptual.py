"""LPIPS perceptual distance (lpips package), one value per image pair.

Inputs in [0, 1] are mapped to [-1, 1] here, explicitly, and lpips is called with
``normalize=False``, so no library default decides the input range.

Weights. LPIPS has two parts: the calibrated linear heads, which ship inside the lpips
package (always loaded), and an ImageNet backbone (alex / vgg / squeeze) that
torchvision downloads into torch.hub's checkpoint directory. ``weights="pretrained"``
needs that backbone file and stops with a WeightsNotFoundError when it is absent
offline. ``weights="random"`` builds the backbone with torchvision's own
initialization under ``torch.manual_seed(seed)`` and keeps the shipped heads: the
"random" in ``random(seed=n)`` means the backbone, the only part that is downloaded.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from attnedit.errors import ConfigError, DataError
from attnedit.metrics.base import PairMetric
from attnedit.metrics.weights import check_weights_mode, from_torch_hub, imagenet_backbone_url, weights_label

NETS = ("alex", "vgg", "squeeze")


def load_lpips(net: str = "alex", weights: str = "pretrained", seed: int = 0, version: str = "0.1") -> nn.Module:
    """lpips.LPIPS in eval mode with the shipped heads and a pretrained or seeded backbone."""
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # inits draw from the global RNG
        # lpips calls torchvision with the deprecated `pretrained=` argument; not the user's concern.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision.models._utils")
        if weights == "random":
            torch.manual_seed(seed)
            model = lpips.LPIPS(net=net, version=version, pnet_rand=True, verbose=False)
            return model.eval().requires_grad_(False)
        model = from_torch_hub(lambda: lpips.LPIPS(net=net, version=version, pnet_rand=False, verbose=False),
                               imagenet_backbone_url(net), f"metric 'lpips' (lpips net={net!r} backbone)")
    return model.eval().requires_grad_(False)


class LPIPS(PairMetric):
    """LPIPS distance (lower is more similar), per image pair.

    ``net``: "alex" (default), "vgg" or "squeeze"; ``version``: lpips' head version;
    ``weights="random"``: seeded random backbone with the shipped heads (tests).
    """

    name = "lpips"
    higher_is_better = False
    display_name, unit, scale = "LPIPS", "x10^3", 1e3

    def __init__(
        self,
        net: str = "alex",
        weights: str = "pretrained",
        seed: int = 0,
        version: str = "0.1",
        name: str = "lpips",
    ) -> None:
        super().__init__()
        if net not in NETS:
            raise ConfigError(f"metric '{name}': net={net!r} is not one of {NETS}.")
        self.name, self.net = name, net
        self.weights = weights_label(check_weights_mode(weights, name), seed)
        self.model = load_lpips(net, weights, seed, version)

    @torch.no_grad()
    def score(self, edited: Tensor, reference: Tensor) -> dict[str, Tensor]:
        if edited.shape[1] != 3:
            raise DataError(f"metric '{self.name}' needs RGB images, got {edited.shape[1]} channels.")
        self.model.to(edited.device)
        values = self.model(edited.float() * 2 - 1, reference.float() * 2 - 1, normalize=False)
        return {self.name: values.flatten()}
