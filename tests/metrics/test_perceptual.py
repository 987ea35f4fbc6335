"""LPIPS (metrics/perceptual.py): the wrapper against the lpips package itself (seeded
random backbones, where pretrained weights are unreachable offline: both sides build the
same backbone by the library's own init, ``torch.manual_seed(seed)`` then the
constructor), the shipped linear heads, and the error when its weights are missing offline."""

from __future__ import annotations

from pathlib import Path

import lpips
import numpy as np
import pytest
import torch

from attnedit.errors import WeightsNotFoundError
from attnedit.metrics.perceptual import LPIPS
from attnedit.metrics.registry import build_metric
from metric_inputs import as_batch, image_pairs, unreachable


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips' torchvision call
def test_lpips_wrapper_equals_lpips_package():
    metric = build_metric("lpips", weights="random", seed=3)
    assert metric.weights == "random(seed=3)"
    gen = torch.Generator().manual_seed(0)
    edited, reference = torch.rand(3, 3, 64, 64, generator=gen), torch.rand(3, 3, 64, 64, generator=gen)
    reference[0] = edited[0]

    direct = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    direct.load_state_dict(metric.model.state_dict())
    with torch.no_grad():  # one image at a time: per-image values must not depend on the batch
        expected = torch.cat([direct(e[None] * 2 - 1, r[None] * 2 - 1).flatten() for e, r in zip(edited, reference)])

    out = metric(edited, reference)["lpips"]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert abs(float(out[0])) < 1e-6  # identical images
    assert (out[1:] > 1e-3).all()


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_lpips_random_means_seeded_backbone_with_shipped_heads():
    metric = LPIPS(net="squeeze", weights="random", seed=5)
    state = metric.model.state_dict()
    heads = torch.load(Path(lpips.__file__).parent / "weights/v0.1/squeeze.pth", map_location="cpu", weights_only=True)
    for key, value in heads.items():
        torch.testing.assert_close(state[key], value)
    torch.manual_seed(5)
    seeded = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False).state_dict()
    backbone = [k for k in state if k.startswith("net.")]
    assert backbone and all(torch.equal(state[k], seeded[k]) for k in backbone)
    other = LPIPS(net="squeeze", weights="random", seed=6).model.state_dict()
    assert not all(torch.equal(state[k], other[k]) for k in backbone)


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips' torchvision call
def test_lpips_equals_the_lpips_package_with_the_same_seeded_backbone():
    reference, edited = image_pairs(2, 2, 64)
    torch.manual_seed(3)  # lpips' README usage, backbone left random (pnet_rand) under the seed
    net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    with torch.no_grad():  # lpips.im2tensor: uint8 -> [-1, 1], one image at a time
        expected = [float(net(lpips.im2tensor(e), lpips.im2tensor(r))) for e, r in zip(edited, reference)]
    got = LPIPS(net="alex", weights="random", seed=3)(as_batch(edited), as_batch(reference))["lpips"]
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=1e-7)
    assert min(expected) > 1e-4


@pytest.mark.parametrize("hub_offline", ["1", "0"])
def test_lpips_weights_missing_offline(tmp_path, monkeypatch, hub_offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
    download = unreachable()
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(WeightsNotFoundError) as err:
        LPIPS(net="alex")
    message = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert len(download.calls) == (0 if hub_offline == "1" else 1)
