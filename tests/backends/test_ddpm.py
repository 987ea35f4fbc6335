"""The DDPM backend (backends/ddpm.py): loading by model.path (a local save_pretrained
folder or a hub id), sampling, inversion, self-attention layers, the unedited prefix the
edits of a sample share, per-sample noise, TF32."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from attnedit.backends.base import DESCRIBE_KEYS, Backend, check_description
from attnedit.backends.ddpm import DDPMBackend
from attnedit.backends.layers import select_layers
from attnedit.backends.tiny import CELEBAHQ_UNET, SCHEDULER, TINY_UNET
from attnedit.data.base import Sample
from attnedit.errors import WeightsNotFoundError
from attnedit.methods.directions import compute_directions
from ddpm_models import sad_method


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
    assert "hf download google/ddpm-ema-celebahq-256" in message and "model.path=" in message


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


def test_real_celebahq_architecture_has_six_self_attention_layers():
    torch.manual_seed(0)
    unet = UNet2DModel(**CELEBAHQ_UNET)
    layers = DDPMBackend.self_attention_layers(type("B", (), {"unet": unet})())
    assert sorted(layers) == sorted([
        "down_blocks.4.attentions.0", "down_blocks.4.attentions.1", "mid_block.attentions.0",
        "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
    ])
    assert all(attn.heads == 1 for attn in layers.values()), "attention_head_dim=None means one head"
    found = compute_directions(select_layers(layers, "all"))
    assert set(found) == set(layers)
    for d in found.values():
        assert d.eigenvectors.shape == (512, 512) and d.eigenvalues.shape == (512,)


# -- shared trajectory prefix, per-sample noise, TF32 ----------------------------------------
STEPS = 5  # DDIM 800, 600, ..., 0: one step (600) inside SAD's window (500, 800), four from it on


def _count_evaluations(backend) -> list[int]:
    """Sample-evaluations of the UNet (a batch of n counts n), appended per call."""
    calls: list[int] = []
    backend.unet.register_forward_pre_hook(lambda module, args: calls.append(int(args[0].shape[0])))
    return calls


def _steps_from_window(window=(0.5, 0.8)) -> tuple[int, int]:
    """(T, steps from the first one strictly inside the window on), from diffusers' schedule."""
    schedule = DDIMScheduler(**SCHEDULER)
    schedule.set_timesteps(STEPS)
    ts = [int(t) for t in schedule.timesteps]
    first = max(t for t in ts if window[0] * 1000 < t < window[1] * 1000)
    return len(ts), sum(t <= first for t in ts)


@pytest.fixture()
def fresh(tiny_ddpm_dir):
    """A backend of its own (the prefix store and counters are per instance)."""
    return lambda **kw: DDPMBackend(str(tiny_ddpm_dir), device="cpu", **{"num_inference_steps": STEPS, **kw})


def test_edits_of_a_sample_share_its_unedited_prefix(fresh):
    cached, naive = fresh(), fresh(share_prefix=False)
    counts = {"cached": _count_evaluations(cached), "naive": _count_evaluations(naive)}
    s = Sample("a", seed=5)
    T, after = _steps_from_window()
    outputs = {}
    for name, backend in (("cached", cached), ("naive", naive)):
        method = sad_method(backend, alphas=[0.4])  # hooks on this backend's layers
        edits = method.edits()
        backend.reference([s])
        outputs[name] = []
        for edit in edits:  # one edit per call: the same batch composition on both paths
            with method.control(backend, [edit]) as control:
                outputs[name].append(backend.generate([s], control))
    E = len(edits)
    assert after < T and sum(counts["cached"]) == T + E * after and sum(counts["naive"]) == T * (1 + E)
    for a, b in zip(outputs["cached"], outputs["naive"]):
        assert torch.equal(a, b)  # bitwise on the CPU for the same batch composition


def test_mixed_batches_start_each_edit_from_its_own_sample(fresh):
    cached, naive = fresh(), fresh(share_prefix=False)
    a, b = Sample("a", seed=1), Sample("b", seed=2)
    T, after = _steps_from_window()
    calls = _count_evaluations(cached)
    refs = cached.reference([a, b])
    outputs = []
    for backend in (cached, naive):
        method = sad_method(backend, alphas=[0.0, 0.4], directions=1)
        edits = [method.edits()[1], method.edits()[0], method.edits()[1]]  # alpha 0.4, 0, 0.4
        with method.control(backend, edits) as control:
            outputs.append(backend.generate([a, b, b], control))
    out, full = outputs
    assert sum(calls) == 2 * T + 3 * after
    torch.testing.assert_close(out, full, atol=2e-3, rtol=0)  # prefix batch [a, b] vs [a, b, b]: rounding only
    torch.testing.assert_close(out[1], refs[1], atol=2e-3, rtol=0)  # alpha 0 reproduces b's reference
    assert (out[2] - refs[1]).abs().max() > 0.05 and (out[0] - refs[0]).abs().max() > 0.05  # a real edit


def test_real_images_share_the_prefix_of_their_reconstruction(fresh):
    cached, naive = fresh(), fresh(share_prefix=False)
    image = Sample("img", image=torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)))
    T, after = _steps_from_window()
    outputs = []
    for backend in (cached, naive):
        method = sad_method(backend, alphas=[0.4], directions=1)
        calls = _count_evaluations(backend)
        backend.reference([image])
        with method.control(backend, method.edits()) as control:
            outputs.append(backend.generate([image], control))
        assert sum(calls) == T + T + (after if backend is cached else T)  # inversion, reconstruction, edit
    assert torch.equal(*outputs)


def test_eta_above_zero_gives_an_edit_the_noise_of_its_reference(fresh):
    backends = {"cached": fresh(eta=0.5), "naive": fresh(eta=0.5, share_prefix=False)}
    a, b = Sample("a", seed=3), Sample("b", seed=4)
    for name, backend in backends.items():
        method = sad_method(backend, alphas=[0.0], directions=1)
        torch.manual_seed(123)  # the global RNG must not matter
        refs = backend.reference([a, b])
        with method.control(backend, method.edits() * 2) as control:
            torch.manual_seed(456)
            same = backend.generate([a, b], control)
        assert torch.equal(same, refs), name  # alpha 0 through the edit path, same batch: bit for bit
        with method.control(backend, method.edits() * 3) as control:
            twice = backend.generate([b, a, b], control)  # two edits of one sample: a generator each
        torch.testing.assert_close(twice, refs[[1, 0, 1]], atol=1e-3, rtol=0)
    single = backends["naive"].generate([b])  # a batch equals single runs
    torch.testing.assert_close(single[0], refs[1], atol=1e-3, rtol=0)
    assert (fresh().reference([b]) - single).abs().max() > 0.05  # eta = 0 differs: the noise is there


def test_tf32_is_off_inside_the_unet_and_restored_after(fresh):
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    for allowed, expected in ((False, "ieee"), (True, "tf32")):
        backend = fresh(allow_tf32=allowed, num_inference_steps=1)
        seen = []
        backend.unet.register_forward_pre_hook(lambda *_: seen.append((matmul.fp32_precision, conv.fp32_precision)))
        backend.reference([Sample("a", seed=0)])
        backend.invert(torch.rand(1, 3, 64, 64))
        assert set(seen) == {(expected, expected)}
        assert (matmul.fp32_precision, conv.fp32_precision) == before
        assert backend.describe()["settings"]["allow_tf32"] is allowed
    assert matmul.allow_tf32 is False  # the legacy flags still read (no mixed-API error)


def _ddim_pipeline_images(model_dir, seed: int, steps: int, **scheduler_kwargs) -> torch.Tensor:
    """diffusers' own DDIMPipeline on the saved checkpoint (its scheduler built from the saved
    config, with ``scheduler_kwargs`` overriding it), one CPU generator: (1, 3, H, W)."""
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline(unet=UNet2DModel.from_pretrained(model_dir).eval(),
                        scheduler=DDIMScheduler.from_pretrained(model_dir, **scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=1, generator=torch.Generator().manual_seed(seed), eta=0.0, num_inference_steps=steps,
               output_type="np").images
    return torch.from_numpy(out).permute(0, 3, 1, 2).float()


def test_clip_sample_null_samples_as_ddim_pipeline_and_a_forced_value_as_that_scheduler(tiny_ddpm_dir):
    """model.clip_sample: null = the checkpoint's scheduler config (clip_sample true), as
    DDIMPipeline; false = DDIMPipeline with an unclipped scheduler; each run as diffusers does."""
    from attnedit.errors import ConfigError

    sample = [Sample("s", seed=11)]
    default = DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=4)
    unclipped = DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=4, clip_sample=False)
    forced_true = DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=4, clip_sample=True)
    assert (default.clip_sample, default.clip_sample_pipeline) == (True, True)
    assert (unclipped.clip_sample, unclipped.clip_sample_pipeline) == (False, True)
    assert unclipped.row_columns() == {"clip_sample": False, "clip_sample_pipeline": True}
    # the sampler text (a cache key) changes only where the clipping is not the checkpoint's
    assert default.describe()["settings"]["sampler"] == forced_true.describe()["settings"]["sampler"] == "DDIM eta=0.0 steps=4"
    assert "clip_sample=False" in unclipped.describe()["settings"]["sampler"]
    clipped_ref = _ddim_pipeline_images(tiny_ddpm_dir, 11, 4)
    unclipped_ref = _ddim_pipeline_images(tiny_ddpm_dir, 11, 4, clip_sample=False)
    torch.testing.assert_close(default.generate(sample), clipped_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(forced_true.generate(sample), clipped_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(unclipped.generate(sample), unclipped_ref, atol=1e-5, rtol=0)
    assert (clipped_ref - unclipped_ref).abs().max() > 1e-2  # the random tiny model's x0 leaves [-1, 1]
    # inversion follows the sampler's clipping
    from diffusers import DDIMInverseScheduler

    assert DDIMInverseScheduler.from_config(unclipped.scheduler.config).config.clip_sample is False
    with pytest.raises(ConfigError, match="model.clip_sample must be null"):
        DDPMBackend(str(tiny_ddpm_dir), device="cpu", clip_sample="no")
