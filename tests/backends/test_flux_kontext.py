"""The FLUX.1 Kontext backend (backends/flux_kontext.py) on a tiny FluxKontextPipeline
(tests/support/flux_tiny.py) loaded from disk: edits, bias-delta guidance through it, its
errors, the model card's call, and the work shared by the cases of one image.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

from attnedit.backends.base import check_description
from attnedit.backends.flux_kontext import FluxKontextBackend
from attnedit.data.base import Sample
from attnedit.errors import ConfigError, WeightsNotFoundError
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from attnedit.methods.bias_delta.method import BiasDelta
from edit_backends import FLUX_SMALL, backend_call, parts, pil, source_sample, until_transformer
from guided_transformers import attentions
from pipeline_recorder import assert_same_calls, recording

ARCH = "flux"


def samples(n=2):
    gen = torch.Generator().manual_seed(3)
    image = (torch.rand(3, 24, 40, generator=gen) * 255).round() / 255  # non-square, 8-bit values
    return [Sample(id=f"s{i}", image=image, fields={"editing_instruction": f"make it red {i}"}) for i in range(n)]


def test_backend_edits_through_the_pipeline(backend):
    batch = samples(2)
    edited = backend.generate(batch)
    assert edited.shape == (2, 3, 24, 40) and edited.dtype == torch.float32
    assert 0 <= float(edited.min()) and float(edited.max()) <= 1
    # each sample its own seeded generator: a batch equals single runs (up to batched-GEMM rounding)
    torch.testing.assert_close(backend.generate(batch[:1])[0], edited[0], rtol=0, atol=1e-5)
    assert not torch.allclose(edited[0], edited[1])  # different instructions
    info = backend.describe()
    assert info["settings"]["pipeline"] == "FluxKontextPipeline" and info["settings"]["guidance_scale"] == 2.5
    assert info["settings"]["cache_conditions"] is True and info["settings"]["output_aspect"] == "source"
    assert info["weights_hash_kind"] == "full" and len(info["weights_sha256_16"]) == 16
    check_description(info)


def test_backend_with_grag_and_dcag(backend):
    batch = samples(1) * 2  # one image, two grid points in one pipeline call
    plain = backend.generate(batch)
    method = BiasDelta("dcag", grid={"dk": [1.0, 1.3], "dv": [1.0, 1.2]}, blocks=None)
    edits = [e for e in method.edits() if (e["dk"], e["dv"]) in ((1.0, 1.0), (1.3, 1.2))]
    with method.control(backend, edits) as guidance:
        guided = backend.generate(batch)
    assert all(entry["guided"] for entry in guidance.log) and len(guidance.log) == 2  # 2 steps, one call each
    assert guidance.log[0]["condition_tokens"] == 60  # the 24x40 source: 12x20 latents, 2x2 patches
    assert torch.equal(guided[0], plain[0])  # (1, 1) is the stock pipeline, bit for bit
    assert torch.equal(plain[0], plain[1])
    assert (guided[1] - plain[0]).abs().max() > 1e-3
    assert all(type(a.processor) is FluxAttnProcessor for a in attentions(backend.transformer))


def test_backend_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="FLUX.1 Kontext weights .*black-forest-labs/FLUX.1-Kontext-dev"):
        FluxKontextBackend(str(tmp_path / "absent"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="no model_index.json"):
        FluxKontextBackend(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ConfigError, match="true_cfg_scale > 1 needs model.negative_prompt"):
        FluxKontextBackend(str(tmp_path / "empty"), device="cpu", true_cfg_scale=2.0)
    with pytest.raises(ConfigError, match="output_aspect='wide' is not one of"):
        FluxKontextBackend(str(tmp_path / "empty"), device="cpu", output_aspect="wide")


# -- the documented call, and the work shared by the cases of one image ----------------------
TRANSFORMER_INPUTS = ("hidden_states", "encoder_hidden_states", "pooled_projections", "img_ids", "txt_ids",
                      "guidance", "timestep")


def documented_call(pipe, s: Sample) -> dict:
    """The model card's call (diffusers pipeline_flux_kontext.py L56-79) at the tests' working
    size, up to the first transformer call."""
    return until_transformer(pipe, lambda: pipe(
        image=pil(s), prompt=s.fields["editing_instruction"], guidance_scale=2.5,
        generator=torch.Generator().manual_seed(42), max_area=FLUX_SMALL["max_area"],
        _auto_resize=FLUX_SMALL["auto_resize"], max_sequence_length=FLUX_SMALL["max_sequence_length"]))


def test_backend_makes_the_documented_call(backend, stock_pipeline, monkeypatch):
    monkeypatch.setattr(backend, "cache_conditions", False)
    square, wide = source_sample(1), source_sample(2, size=(24, 40))
    want = documented_call(stock_pipeline, square)
    got = backend_call(backend, [square, square])  # two grid points of one image
    for encoder in ("clip", "t5", "vae"):
        assert_same_calls(got[encoder], want[encoder], ("args",))
    first, ref = got["transformer"][0], want["transformer"][0]
    for key in TRANSFORMER_INPUTS:
        value, expected = first[key], ref[key]
        assert torch.equal(value, expected if value.shape == expected.shape else torch.cat([expected] * 2)), key

    # non-square: the same conditioning; the output keeps the source's aspect ratio unless
    # output_aspect="square", which is the model card's call exactly
    want = documented_call(stock_pipeline, wide)
    got = backend_call(backend, [wide])
    for encoder in ("clip", "t5", "vae"):
        assert_same_calls(got[encoder], want[encoder], ("args",))
    length = int((want["transformer"][0]["img_ids"][:, 0] == 1).sum())
    assert torch.equal(got["transformer"][0]["hidden_states"][:, -length:], want["transformer"][0]["hidden_states"][:, -length:])
    assert got["transformer"][0]["hidden_states"].shape[1] - length == 6 * 10  # 24 x 40 at ~32 x 32: 12 x 20 latents
    assert want["transformer"][0]["hidden_states"].shape[1] - length == 8 * 8  # the pipeline's square default
    monkeypatch.setattr(backend, "output_aspect", "square")
    assert_same_calls(backend_call(backend, [wide])["transformer"][:1], want["transformer"], TRANSFORMER_INPUTS)


def test_grid_of_one_image_encodes_it_once(backend, monkeypatch):
    """A 5-point (dk, dv) grid over one image in the runner's batches of 2: CLIP, T5 and the
    VAE encoder run once for the image with cache_conditions, in every pipeline call without;
    the edited images are the same."""
    monkeypatch.setattr(backend, "num_inference_steps", 1)
    image = source_sample(3, size=(24, 40), instruction="paint the sky green")
    points = [(1.0, 1.0), (1.1, 1.0), (1.1, 1.15), (1.15, 1.15), (1.2, 1.05)]
    batches = [points[0:2], points[2:4], points[4:]]

    def run_grid():
        watched = {k: v for k, v in parts(backend.pipe).items() if k != "transformer"}
        with recording(watched) as seen:
            edited = []
            for batch in batches:
                with bias_delta_guidance(backend.transformer, dk=[p[0] for p in batch], dv=[p[1] for p in batch]):
                    edited.append(backend.generate([image] * len(batch)))
        return seen, torch.cat(edited)

    cached, cached_images = run_grid()
    assert [len(cached[k]) for k in ("clip", "t5", "vae")] == [1, 1, 1]
    monkeypatch.setattr(backend, "cache_conditions", False)
    uncached, uncached_images = run_grid()
    assert [len(uncached[k]) for k in ("clip", "t5", "vae")] == [len(batches)] * 3
    torch.testing.assert_close(cached_images, uncached_images, rtol=0, atol=1e-6)
    assert (cached_images[0] - cached_images[4]).abs().max() > 1e-4  # the grid points differ (tiny random model)
