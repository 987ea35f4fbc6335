"""The numerical floor: the alpha = 0 edit measured through the edit path, hooks active.

Expected values are numpy float64 recomputations of the same alpha = 0 batch: PSNR per
image 10 log10(1 / MSE) (data range 1), its minimum and mean, the largest absolute
difference."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch


def floor_setup(tiny_ddpm_dir):
    """(backend, method, samples, states): the tiny DDPM, a one-direction SAD whose control
    records its states."""
    from attnedit.backends.ddpm import DDPMBackend
    from attnedit.data.base import Sample
    from attnedit.methods.sad import SAD

    backend = DDPMBackend(str(tiny_ddpm_dir), device="cpu", num_inference_steps=5)
    method = SAD(directions=1, alphas=[0.4])
    method.setup(backend)
    states, control = [], method.control

    @contextlib.contextmanager
    def recording(backend, edits):
        with control(backend, edits) as state:
            states.append(state)
            yield state

    method.control = recording
    return backend, method, [Sample("a", seed=1), Sample("b", seed=2)], states


def alpha_zero_batch(backend, method, samples, order) -> np.ndarray:
    """The alpha = 0 edit of ``samples[i] for i in order`` in one batch, float64."""
    with method.control(backend, [{**method.edits()[0], "alpha": 0.0}] * len(order)) as state:
        return backend.generate([samples[i] for i in order], state).double().numpy()


def psnr_per_image(images: np.ndarray, references: np.ndarray) -> np.ndarray:
    """10 log10(1 / MSE) per image, data range 1 (inf for identical images)."""
    mse = ((images - references) ** 2).reshape(len(images), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / mse)


def test_numerical_floor_goes_through_the_edit_path(tiny_ddpm_dir):
    """measure_floor vs numpy float64 of the same alpha = 0 batch, hooks active; identical
    images (no finite PSNR) and different ones are both checked, whichever this device gives."""
    from attnedit.run.numerical_floor import measure_floor

    backend, method, samples, states = floor_setup(tiny_ddpm_dir)
    refs = backend.reference(samples)
    floor = measure_floor(backend, method, samples, batch_size=3, references=refs)
    assert states and all(list(s.applied.values()) == [[600]] for s in states)  # alpha 0, hooks applied
    images = alpha_zero_batch(backend, method, samples, [0, 1, 0])
    expected = refs[[0, 1, 0]].double().numpy()
    psnr = psnr_per_image(images, expected)
    assert floor["batch_size"] == 3 and floor["edit"]["alpha"] == 0.0 and floor["sample_ids"] == ["a", "b"]
    assert floor["max_abs_diff"] == pytest.approx(np.abs(images - expected).max(), abs=1e-12)
    assert floor["identical"] is bool(np.isinf(psnr).all())
    if np.isinf(psnr).all():  # identical images: no finite PSNR to report
        assert floor["psnr_min"] is None and floor["psnr_mean"] is None
    else:
        assert floor["psnr_min"] == pytest.approx(psnr.min(), abs=1e-3)
        assert floor["psnr_mean"] == pytest.approx(psnr[np.isfinite(psnr)].mean(), abs=1e-3)


def test_numerical_floor_psnr_is_the_worst_image_of_the_batch(tiny_ddpm_dir):
    """Against references moved toward grey by a known share per sample (1%, 10%; staying in
    [0, 1]), so that every image differs, by a different amount: the PSNR path is taken on
    every device, and the minimum (the worst image) and the mean are told apart."""
    from attnedit.run.numerical_floor import measure_floor

    backend, method, samples, _ = floor_setup(tiny_ddpm_dir)
    refs = backend.reference(samples)
    shifted = refs + torch.tensor([0.01, 0.1]).view(2, 1, 1, 1) * (0.5 - refs)
    floor = measure_floor(backend, method, samples, batch_size=3, references=shifted)
    images = alpha_zero_batch(backend, method, samples, [0, 1, 0])
    expected = shifted[[0, 1, 0]].double().numpy()
    psnr = psnr_per_image(images, expected)
    # the shifts dominate the edit path's own error: sample b's PSNR is 20 dB below sample a's
    assert np.isfinite(psnr).all() and psnr[1] < psnr[0] - 5
    assert floor["identical"] is False and floor["batch_size"] == 3
    assert floor["max_abs_diff"] == pytest.approx(np.abs(images - expected).max(), abs=1e-6)
    assert floor["psnr_min"] == pytest.approx(psnr.min(), abs=1e-3)
    assert floor["psnr_mean"] == pytest.approx(psnr.mean(), abs=1e-3)
