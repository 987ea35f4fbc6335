"""SAD directions (methods/directions.py) against an independent numpy float64 computation,
their cache, and the directions file written by attnedit-directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention
from safetensors.numpy import load_file

from attnedit.backends.ddpm import DDPMBackend
from attnedit.methods import directions as D
from ddpm_models import make_attention
from harness import directions


def numpy_reference(attn: Attention):
    """C from the weights in float64 via numpy, eigen-decomposed with the general solver."""
    ws = [getattr(attn, n).weight.detach().double().numpy() for n in ("to_q", "to_k", "to_v")]
    c = np.zeros((ws[0].shape[1],) * 2)
    for w in ws:
        c += np.einsum("oi,oj->ij", w, w)
    values, vectors = np.linalg.eig(c)
    order = np.argsort(values.real)[::-1]
    return values.real[order], vectors.real[:, order].T, ws


def test_eigenvalues_and_vectors_match_numpy_float64():
    attn = make_attention()
    got = D.sad_directions(attn)
    values, vectors, _ = numpy_reference(attn)
    assert got.eigenvalues.dtype == np.float64 and got.eigenvectors.dtype == np.float64
    np.testing.assert_allclose(got.eigenvalues, values, rtol=1e-10, atol=1e-10)
    assert np.all(np.diff(got.eigenvalues) <= 0), "eigenvalues must be descending"
    # eigenvectors agree up to sign
    dots = np.abs(np.sum(got.eigenvectors * vectors, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-8)
    np.testing.assert_allclose(got.eigenvectors @ got.eigenvectors.T, np.eye(32), atol=1e-10)


def test_canonical_sign_is_largest_magnitude_entry_positive():
    got = D.sad_directions(make_attention(seed=3))
    biggest = got.eigenvectors[np.arange(32), np.abs(got.eigenvectors).argmax(axis=1)]
    assert np.all(biggest > 0)
    flipped = D.canonical_signs(-got.eigenvectors)
    np.testing.assert_array_equal(flipped, got.eigenvectors)


def test_top_direction_beats_random_unit_directions():
    attn = make_attention(seed=1)
    _, _, ws = numpy_reference(attn)
    energy = lambda n: sum(float(np.sum((w @ n) ** 2)) for w in ws)  # noqa: E731
    top = D.sad_directions(attn).eigenvectors[0]
    rng = np.random.default_rng(0)
    random = rng.standard_normal((2000, 32))
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    assert energy(top) > max(energy(n) for n in random)
    assert energy(top) == pytest.approx(D.sad_directions(attn).eigenvalues[0], rel=1e-9)


def test_cache_is_keyed_by_layer_weights(tmp_path, monkeypatch):
    attn = make_attention()
    first = D.compute_directions({"a": attn}, tmp_path)
    assert len(list(tmp_path.glob("sad-*.safetensors"))) == 1
    monkeypatch.setattr(D, "sad_directions", lambda _: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = D.compute_directions({"a": attn}, tmp_path)
    np.testing.assert_array_equal(again["a"].eigenvectors, first["a"].eigenvectors)
    with torch.no_grad():
        attn.to_q.weight.add_(1.0)  # other weights -> other key -> recompute
    with pytest.raises(AssertionError, match="recomputed"):
        D.compute_directions({"a": attn}, tmp_path)


def test_directions_cli_writes_safetensors(tiny_ddpm_dir, tmp_path, capsys):
    out = tmp_path / "dirs.safetensors"
    directions(["model=tiny_ddpm", f"model.path={tiny_ddpm_dir}", "layers=all", f"out={out}", f"paths.root_dir={tmp_path}"])
    tensors = load_file(str(out))
    names = {k.rsplit(".", 1)[0] for k in tensors}
    assert names == {"down_blocks.4.attentions.0", "mid_block.attentions.0",
                     "up_blocks.1.attentions.0", "up_blocks.1.attentions.1"}
    layers = DDPMBackend(str(tiny_ddpm_dir), device="cpu").self_attention_layers()
    for name in names:
        values, vectors, _ = numpy_reference(layers[name])
        np.testing.assert_allclose(tensors[f"{name}.eigenvalues"], values, rtol=1e-10, atol=1e-10)
        assert tensors[f"{name}.eigenvectors"].dtype == np.float64
    printed = capsys.readouterr().out
    assert "mid_block.attentions.0: dim 64" in printed and "share of trace" in printed


def test_directions_cli_requires_out(tiny_ddpm_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        directions(["model=tiny_ddpm", f"model.path={tiny_ddpm_dir}", f"paths.root_dir={tmp_path}"])
    assert "out=<path>" in capsys.readouterr().err
