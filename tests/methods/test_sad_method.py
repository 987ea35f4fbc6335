"""The SAD edit (methods/sad.py): only chosen layers, only inside the timestep window,
restored on exit, alpha 0 is the unedited sample bit for bit, small edits are linear in
alpha; a directions file from other weights is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnedit.backends.ddpm import DDPMBackend
from attnedit.data.base import Sample
from attnedit.errors import ConfigError
from attnedit.methods.sad import SAD
from ddpm_models import sad_method
from harness import directions


def seeded(n=1):
    """``n`` samples generated from the seeds 0, 1, ..."""
    return [Sample(id=f"s{i}", seed=i) for i in range(n)]


def test_edit_runs_only_in_chosen_layers_and_window(tiny_backend):
    method = sad_method(tiny_backend, layers=["mid_block.attentions.0", "up_blocks.1.attentions.1"])
    steps = tiny_backend.timesteps()  # 10 steps: 900, 800, ..., 0
    with method.control(tiny_backend, method.edits()[:1]) as state:
        tiny_backend.generate(seeded())
    inside = [t for t in steps if 500 < t < 800]
    assert inside == [700, 600]
    assert dict(state.applied) == {"mid_block.attentions.0": inside, "up_blocks.1.attentions.1": inside}


def test_window_is_configurable(tiny_backend):
    method = sad_method(tiny_backend, window=[0.0, 1.0])
    with method.control(tiny_backend, method.edits()[:1]) as state:
        tiny_backend.generate(seeded())
    assert state.applied["mid_block.attentions.0"] == tiny_backend.timesteps()[:-1]  # 0 < t excludes t=0


def test_hooks_are_removed_even_after_an_error(tiny_backend):
    method = sad_method(tiny_backend)
    reference = tiny_backend.generate(seeded())
    with pytest.raises(RuntimeError, match="boom"):
        with method.control(tiny_backend, method.edits()[:1]):
            raise RuntimeError("boom")
    for module in tiny_backend.unet.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert torch.equal(tiny_backend.generate(seeded()), reference)


def test_alpha_zero_reproduces_unedited_bit_for_bit(tiny_backend):
    for position in ("after_norm", "before_norm"):
        method = sad_method(tiny_backend, alphas=[0.0], position=position, alpha_scale="unit")
        reference = tiny_backend.generate(seeded(2))
        with method.control(tiny_backend, [method.edits()[0]] * 2):
            edited = tiny_backend.generate(seeded(2))
        assert torch.equal(edited, reference)


def test_nonzero_alpha_changes_output_and_positions_differ(tiny_backend):
    reference = tiny_backend.generate(seeded())
    outputs = {}
    for position in ("after_norm", "before_norm"):
        method = sad_method(tiny_backend, position=position)
        with method.control(tiny_backend, method.edits()[:1]):
            outputs[position] = tiny_backend.generate(seeded())
        assert (outputs[position] - reference).abs().max() > 1e-3
    assert not torch.allclose(outputs["after_norm"], outputs["before_norm"])


def test_small_edits_are_linear_in_alpha(tiny_backend):
    """x(alpha) - x(0) ~ alpha * J n: doubling alpha doubles the change, flipping it negates it."""
    method = sad_method(tiny_backend, alphas=[1e-4, 2e-4, -1e-4], alpha_scale="unit", directions=[0])
    unet = tiny_backend.unet.double()
    try:
        tiny_backend.dtype = torch.float64
        reference = tiny_backend.generate(seeded())
        changes = []
        for edit in method.edits():
            with method.control(tiny_backend, [edit]):
                changes.append(tiny_backend.denoise(tiny_backend.initial_noise([0]).double()) - reference)
    finally:
        unet.float()
        tiny_backend.dtype = torch.float32
    d1, d2, dm = (c.double() for c in changes)
    assert d1.abs().max() > 0
    ratio = (d2.norm() / d1.norm()).item()
    assert ratio == pytest.approx(2.0, rel=0.01)
    assert ((d1 + dm).norm() / d1.norm()).item() < 0.01


def test_batch_elements_get_their_own_edits(tiny_backend):
    method = sad_method(tiny_backend, alphas=[0.4, -0.4])
    edits = method.edits()  # (dir0, +), (dir0, -), (dir1, +), (dir1, -)
    with method.control(tiny_backend, edits):
        batch = tiny_backend.generate(seeded(1) * 4)
    for i, edit in enumerate(edits):
        with method.control(tiny_backend, [edit]):
            single = tiny_backend.generate(seeded(1))
        torch.testing.assert_close(batch[i : i + 1], single, atol=2e-3, rtol=0)  # batch-size rounding, amplified by 10 steps


def test_edit_of_captured_features_is_alpha_times_scale_along_n(tiny_backend):
    """From features captured before and after the injection hook in one UNet call, in
    float64 numpy: every token moves by the same vector, alpha * s * n, where s = 1 (unit)
    or the mean over tokens of ||Z_l|| of that sample (token_norm)."""
    layer = "mid_block.attentions.0"
    group_norm = tiny_backend.self_attention_layers()[layer].group_norm
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for scale in ("unit", "token_norm"):
        method = sad_method(tiny_backend, directions=[0, 1], alphas=[0.5, -1.5], alpha_scale=scale)
        edits = [method.edits()[0], method.edits()[3]]  # (direction 0, +0.5), (direction 1, -1.5)
        seen = []
        capture = lambda _, __, out: seen.append(out.detach().double().numpy().copy())
        before = group_norm.register_forward_hook(capture)  # runs before the injection hook
        try:
            with method.control(tiny_backend, edits), torch.no_grad():
                after = group_norm.register_forward_hook(capture)  # runs after it
                tiny_backend.unet(x, 700)  # 500 < 700 < 800: inside the window
                after.remove()
        finally:
            before.remove()
        z, z_edited = seen
        tokens = z.reshape(2, z.shape[1], -1)  # (B, C, L)
        delta = (z_edited - z).reshape(2, z.shape[1], -1)
        np.testing.assert_allclose(delta, delta[:, :, :1].repeat(delta.shape[2], axis=2), atol=1e-5)
        n = method.directions[layer].eigenvectors[[0, 1]]
        s = np.linalg.norm(tokens, axis=1).mean(axis=1) if scale == "token_norm" else np.ones(2)
        np.testing.assert_allclose(delta[:, :, 0], np.array([0.5, -1.5])[:, None] * s[:, None] * n,
                                   rtol=1e-5, atol=1e-5)
        if scale == "token_norm":
            assert (s > 2).all(), "a token-norm edit is larger than a unit one here"


@pytest.mark.parametrize("bad", [{"position": "middle"}, {"alpha_scale": "huge"}, {"window": [0.8, 0.5]}])
def test_bad_options_are_rejected(bad):
    with pytest.raises(ConfigError):
        SAD(**bad)


def test_out_of_range_direction_index(tiny_backend):
    with pytest.raises(ConfigError, match="out of range"):
        sad_method(tiny_backend, directions=[0, 64])


def test_directions_file_from_other_weights_is_refused(tiny_ddpm_dir, tmp_path):
    out = tmp_path / "d.safetensors"
    directions(["model=tiny_ddpm", f"model.path={tiny_ddpm_dir}", f"out={out}", f"paths.root_dir={tmp_path}"])
    backend = DDPMBackend(str(tiny_ddpm_dir), device="cpu")
    with torch.no_grad():
        backend.unet.mid_block.attentions[0].to_k.weight.mul_(2)
    with pytest.raises(ConfigError, match="other weights"):
        SAD(directions_file=str(out)).setup(backend)
