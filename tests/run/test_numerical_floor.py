"""The numerical floor: the alpha = 0 edit measured through the edit path, hooks active."""

from __future__ import annotations

import math

import pytest


def test_numerical_floor_goes_through_the_edit_path(tiny_ddpm_dir):
    """measure_floor vs numpy float64 PSNR of the same alpha = 0 batch, hooks active."""
    import contextlib

    from attnedit.backends.ddpm import DDPMBackend
    from attnedit.data.base import Sample
    from attnedit.methods.sad import SAD
    from attnedit.run.numerical_floor import measure_floor

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
    samples = [Sample("a", seed=1), Sample("b", seed=2)]
    refs = backend.reference(samples)
    floor = measure_floor(backend, method, samples, batch_size=3, references=refs)
    assert states and all(list(s.applied.values()) == [[600]] for s in states)  # alpha 0, hooks applied
    with method.control(backend, [{**method.edits()[0], "alpha": 0.0}] * 3) as state:
        images = backend.generate([samples[i] for i in (0, 1, 0)], state).double().numpy()
    mse = ((images - refs[[0, 1, 0]].double().numpy()) ** 2).reshape(3, -1).mean(axis=1)
    assert floor["batch_size"] == 3 and floor["edit"]["alpha"] == 0.0
    assert floor["identical"] is bool(mse.max() == 0)
    if mse.max() > 0:
        assert floor["psnr_min"] == pytest.approx(10 * math.log10(1 / mse.max()), abs=1e-3)
