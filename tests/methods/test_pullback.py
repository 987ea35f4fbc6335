"""The Riemannian pullback baseline (methods/pullback.py) against independent computations:
its edit against the public x-space guidance formula along the aligned singular vectors of
the full Jacobian, its performance boosting against diffusers' DDIM recipe; the steps
before a method's first edit timestep against the unedited run; one decomposition per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from attnedit.backends.base import Control
from attnedit.data.base import Sample
from attnedit.errors import ConfigError
from attnedit.methods.hspace_pca import HSpacePCA
from attnedit.methods.pullback import Pullback
from attnedit.methods.pullback_move import PullbackMove
from jacobian_reference import full_svd, largest_positive, numpy_power_method


def state_before(backend, seed, timestep):
    """x_t of an unedited sample where the step of ``timestep`` starts: diffusers' DDIM loop."""
    scheduler = DDIMScheduler.from_config(backend.scheduler.config)
    scheduler.set_timesteps(backend.num_inference_steps)
    x = torch.randn(backend.image_shape, generator=torch.Generator().manual_seed(seed)).double()[None]
    for t in scheduler.timesteps:
        if int(t) == timestep:
            return x[0]
        x = scheduler.step(backend.unet(x, t).sample, t, x, eta=0.0).prev_sample
    raise AssertionError(timestep)


def pullback(backend, **kw) -> Pullback:
    """A Pullback set up on ``backend``, with few iterations (the CPU is slow at forward-mode
    products): tol 1e-12 is never met."""
    method = Pullback(**{"directions": [0, 1], "alphas": [1.0, -0.5], "t_edit": 0.5, "rank": 3, "min_iters": 0,
                         "max_iters": 2, "tol": 1e-12, "guidance_steps": 3, "sign_reference_seed": 7, **kw})
    method.setup(backend)
    return method


def test_pullback_edit_is_the_public_x_space_guidance_along_aligned_singular_vectors(small_backend):
    method = pullback(small_backend)
    assert (method.timestep, method.boost_timestep) == (500, 250)
    edits = [method.edits()[0], method.edits()[3]]  # (direction 0, alpha 1), (direction 1, alpha -0.5)
    x_t = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with method.control(small_backend, edits) as control:
        assert torch.equal(control.latent_hook(750, x_t), x_t)  # not t_edit: untouched
        out = control.latent_hook(500, x_t)
    unet = small_backend.unet
    j_ref, _, _ = full_svd(unet, state_before(small_backend, 7, 500), 500)
    u_ref = j_ref @ largest_positive(numpy_power_method(j_ref, rank=3, iterations=2)[:2]).T
    for i, (edit, k) in enumerate(zip(edits, (0, 1))):
        j, _, _ = full_svd(unet, x_t[i], 500)
        v = numpy_power_method(j, rank=3, iterations=2)[k]
        v = v * np.sign((j @ v) @ u_ref[:, k])  # the sign agreeing with the reference in h-space
        probe = edit["alpha"] * torch.from_numpy(v).view(1, 3, 8, 8)
        x = x_t[i : i + 1].clone()
        with torch.no_grad():
            for _ in range(3):  # edit.py:766-772 with x_space_guidance at 1716-1734
                x = x + 0.1 * (unet(x + probe, 500).sample - unet(x, 500).sample)
        torch.testing.assert_close(out[i], x[0], atol=1e-8, rtol=0)
        extras = control.row_extras[i]
        assert extras["singular_value"] == pytest.approx(np.linalg.norm(j @ v), rel=1e-8)
        assert extras["x_step_ratio"] == pytest.approx(float((x[0] - x_t[i]).norm() / x_t[i].norm()), rel=1e-6)
        assert extras["guidance_unet_evals"] == 6 and extras["pullback_iterations"] == 2
        cos = (j @ v) @ u_ref[:, k] / np.linalg.norm(j @ v) / np.linalg.norm(u_ref[:, k])
        assert extras["sign_agreement"] == pytest.approx(cos, rel=1e-6)


def test_performance_boosting_is_eta_one_from_the_step_nearest_0_2_T(small_backend):
    method = pullback(small_backend, alphas=[0.0], directions=[0], sign_alignment="none", max_iters=1)
    with method.control(small_backend, method.edits()) as control:
        got = small_backend.generate([Sample(id="s", seed=5)], control)
    assert [control.eta_at(t) for t in (750, 500, 250, 0)] == [0.0, 0.0, 1.0, 1.0]
    scheduler = DDIMScheduler.from_config(small_backend.scheduler.config)
    scheduler.set_timesteps(4)
    # diffusers' DDIMPipeline recipe: one CPU generator per sample draws x_T, then the
    # variance noise of each eta > 0 step in the model's dtype (an eta 0 step draws nothing)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(small_backend.image_shape, generator=generator).double()[None]
    with torch.no_grad():
        for t in scheduler.timesteps:
            eta = 1.0 if int(t) <= 250 else 0.0
            noise = torch.randn((1, *small_backend.image_shape), generator=generator, dtype=torch.float64) if eta else None
            x = scheduler.step(small_backend.unet(x, t).sample, t, x, eta=eta, variance_noise=noise).prev_sample
    torch.testing.assert_close(got, (x.float() / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)
    assert method.edits()[0]["performance_boosting_t"] == 250
    # its own sampler without an edit (the reference the runner scores against): the same recipe
    own = small_backend.generate([Sample(id="s", seed=5)], method.sampler_control(small_backend))
    torch.testing.assert_close(own, (x.float() / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)
    assert method.sampler_control(small_backend).first_edit_timestep == 250
    # so alpha = 0 is no identity of the study's (eta 0) unedited sample; without boosting it is
    assert not method.is_identity(method.edits()[0]) and method.identity_edit()["alpha"] == 0.0
    plain = pullback(small_backend, alphas=[0.0], performance_boosting_t=None, sign_alignment="none", max_iters=1)
    assert plain.is_identity(plain.edits()[0]) and plain.sampler_control(small_backend) is None
    with pytest.raises(ConfigError, match=r"method.reference='eta0' is not one of \('own_sampler', 'unedited'\)"):
        Pullback(reference="eta0")
    # the step nearest 0.2 T is the last one: the public code boosts nothing (edit.py:1650)
    assert pullback(small_backend, performance_boosting_t=0.05, sign_alignment="none", max_iters=1).boost_timestep is None


def test_steps_before_first_edit_timestep_equal_the_unedited_run(small_backend):
    """The promise behind DDPMBackend's stored-state start: x entering every step down to
    first_edit_timestep is the unedited run's, bit for bit."""
    def states(control):
        seen = {}
        inner = getattr(control, "latent_hook", None)

        class Spy(Control):
            eta_at = getattr(control, "eta_at", None)

            def latent_hook(self, t, x):
                seen[t] = x.clone()
                return inner(t, x) if inner else x

        small_backend.generate([Sample(id="s", seed=4)], Spy())
        return seen

    unedited = states(None)
    methods = [pullback(small_backend, directions=[0], alphas=[1.0], max_iters=1),
               PullbackMove(directions=[0], alphas=[0.4], t_edit=0.5, max_iters=1),
               HSpacePCA(directions=[0], alphas=[1.0], num_samples=3, window=[0.2, 0.6], progress=False)]
    methods[1].setup(small_backend), methods[2].setup(small_backend)
    for method in methods:
        with method.control(small_backend, method.edits()[:1]) as control:
            first = control.first_edit_timestep
            edited = states(control)
        assert first == 500, type(method).__name__
        before = [t for t in edited if t >= first]
        assert all(torch.equal(edited[t], unedited[t]) for t in before), type(method).__name__
        assert not torch.equal(edited[0], unedited[0]), type(method).__name__


def test_pullback_reuses_a_samples_decomposition_across_batches(small_backend):
    method = pullback(small_backend, alphas=[0.0, 1.0], directions=[1], max_iters=1)
    s = [Sample(id="s", seed=11)] * 2
    with method.control(small_backend, method.edits()) as first:
        edited = small_backend.generate(s, first)
    assert not any(map(method.is_identity, method.edits()))  # boosting on: even alpha 0 is no identity
    seconds = first.row_extras[0]["discovery_seconds_per_sample"]
    assert seconds > 0 and first.row_extras[0]["discovery_share_seconds"] == pytest.approx(seconds / 2)
    with method.control(small_backend, method.edits()[1:]) as again:  # another batch, same sample
        torch.testing.assert_close(small_backend.generate(s[:1], again), edited[1:], atol=1e-6, rtol=0)
    reused, before = again.row_extras[0], first.row_extras[1]
    assert reused["discovery_share_seconds"] == 0.0, "nothing decomposed again"
    for key in ("discovery_seconds_per_sample", "singular_value", "pullback_iterations", "sign_flipped"):
        assert reused[key] == before[key], key


@pytest.mark.parametrize("cls, bad, match", [
    (PullbackMove, {"alpha_scale": "huge"}, "alpha_scale"), (Pullback, {"t_edit": 0.0}, "t_edit"),
    (PullbackMove, {"directions": [0, 4], "num_vectors": 3}, "num_vectors"), (Pullback, {"max_iters": 0}, "max_iters"),
    (Pullback, {"directions": [0, 4], "rank": 3}, "rank"), (Pullback, {"sign_alignment": "up"}, "sign_alignment"),
    (Pullback, {"performance_boosting_t": 1.5}, "performance_boosting_t"), (Pullback, {"guidance_steps": 0}, "guidance_steps"),
])
def test_pullback_rejects_bad_settings(cls, bad, match):
    with pytest.raises(ConfigError, match=match):
        cls(**bad)
