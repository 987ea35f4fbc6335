"""Loading by model.path (local save_pretrained dir or hub id), sampling, inversion."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from attnedit.backends.base import DESCRIBE_KEYS, Backend, check_description
from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.tiny import SCHEDULER, TINY_UNET
from attnedit.data.base import Sample
from attnedit.errors import WeightsNotFoundError


def test_save_pretrained_round_trip_through_model_path(tmp_path):
    torch.manual_seed(7)
    unet = UNet2DModel(**TINY_UNET)
    unet.save_pretrained(tmp_path / "flat")
    DDPMScheduler(**SCHEDULER).save_pretrained(tmp_path / "flat")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER)).save_pretrained(tmp_path / "pipeline")
    for layout in ("flat", "pipeline"):  # google's hub repos are flat; pipelines use subfolders
        backend = DDPMBackend(str(tmp_path / layout), device="cpu")
        loaded = backend.unet.state_dict()
        for key, value in unet.state_dict().items():
            assert torch.equal(loaded[key], value), key
        assert backend.scheduler.config.beta_end == SCHEDULER["beta_end"]
        assert backend.scheduler.config.clip_sample is True
        assert len(backend.describe()["weights_sha256_16"]) == 16
        assert isinstance(backend, Backend) and tuple(check_description(backend.describe())) == DESCRIBE_KEYS


def test_describe_schema_rejects_a_second_name_for_a_fact():
    good = {key: None for key in DESCRIBE_KEYS} | {"settings": {}}
    assert check_description(good) is good
    with pytest.raises(TypeError, match="weight_sha256_16"):  # the old, second spelling of the weight hash
        check_description(good | {"weight_sha256_16": "abc"})
    with pytest.raises(TypeError, match="settings"):
        check_description({k: v for k, v in good.items() if k != "settings"})


def test_missing_hub_weights_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotFoundError) as err:
        DDPMBackend("google/ddpm-ema-celebahq-256", device="cpu")
    message = str(err.value)
    assert "google/ddpm-ema-celebahq-256" in message
    assert "huggingface-cli download google/ddpm-ema-celebahq-256" in message and "model.path=" in message


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="not an existing directory"):
        DDPMBackend(str(tmp_path / "nowhere" / "model"), device="cpu")


def test_sampling_is_deterministic_and_batch_consistent(tiny_backend):
    a = tiny_backend.generate([Sample("a", seed=3), Sample("b", seed=4)])
    b = tiny_backend.generate([Sample("b", seed=4)])
    assert a.shape == (2, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a[1:], b, atol=2e-3, rtol=0)
    assert torch.equal(tiny_backend.generate([Sample("b", seed=4)]), b)
    assert not torch.allclose(a[0], a[1])


def test_ddim_inversion_is_exact_when_eps_is_constant(tiny_ddpm_dir):
    """With eps independent of x (zeroed output conv), DDIM is exactly invertible."""
    backend = DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=5, dtype="float32")
    torch.nn.init.zeros_(backend.unet.conv_out.weight)
    torch.nn.init.zeros_(backend.unet.conv_out.bias)
    image = torch.rand(1, 3, 64, 64) * 0.8 + 0.1
    x_t = backend.invert(image)
    # eps = 0 -> each inverse step rescales by sqrt(abar_next / abar_prev): x_T = sqrt(abar_800) x_0
    abar = backend.scheduler.alphas_cumprod[800].double()
    torch.testing.assert_close(x_t.double(), abar.sqrt() * (2 * image.double() - 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(backend.denoise(x_t), image, atol=1e-4, rtol=0)


def test_real_images_are_inverted_once_per_sample(tiny_backend, monkeypatch):
    calls = []
    real = tiny_backend.invert
    monkeypatch.setattr(tiny_backend, "invert", lambda x: calls.append(len(x)) or real(x))
    image = torch.rand(3, 64, 64)
    s = Sample("img", image=image)
    first = tiny_backend.noise_for([s, s, s])
    second = tiny_backend.noise_for([s])
    assert calls == [1] and torch.equal(first[0], second[0])
