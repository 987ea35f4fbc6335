"""The qwen_image_edit backend (backends/qwen_edit.py) on a tiny QwenImageEditPipeline
(tests/support/qwen_tiny.py), built offline, saved with save_pretrained and loaded back by
the backend through `path`, like the real weights. What its encoders and transformer
receive is compared with diffusers' stock pipeline called as the official GRAG / DCAG
scripts call it.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnedit.backends.base import check_description
from attnedit.backends.qwen_edit import QwenImageEditBackend
from attnedit.data.base import Sample
from attnedit.errors import DataError, WeightsNotFoundError
from attnedit.methods.bias_delta.guidance import bias_delta_guidance
from edit_backends import backend_call, pil, source_sample, until_transformer
from pipeline_recorder import Stop, assert_same_calls, equal, recording

ARCH = "qwen"
SIZE = (40, 56)  # non-square
A = source_sample(1, "make the sky blue", SIZE, "a")
B = source_sample(2, "add a red hat to the person in the middle", SIZE, "b")
_cache: dict[str, torch.Tensor] = {}


def single(backend, s: Sample) -> torch.Tensor:
    if s.id not in _cache:
        _cache[s.id] = backend.generate([s])
    return _cache[s.id]


def test_generate_source_size_range_and_determinism(backend):
    first = single(backend, A)
    assert first.shape == (1, 3, 40, 56) and first.dtype == torch.float32 and first.device.type == "cpu"
    assert 0.0 <= first.min() and first.max() <= 1.0 and first.std() > 0
    assert torch.equal(backend.generate([A]), first)
    assert torch.equal(backend.reference([A]), A.image[None])


def test_batch_equals_single_runs(backend):
    batch = backend.generate([A, B])
    # padded prompts and batched kernels leave ~1e-6; the tiny random model's two edits differ by ~4e-3
    torch.testing.assert_close(batch[0:1], single(backend, A), rtol=0, atol=2e-5)
    torch.testing.assert_close(batch[1:2], single(backend, B), rtol=0, atol=2e-5)
    assert (batch[0] - batch[1]).abs().max() > 1e-3


def pipeline_condition_tokens(height: int, width: int) -> int:
    """QwenImageEditPipeline works at ~1 MP (sides rounded to 32); tokens = 2x2 patches of the 16x latent."""
    w = math.sqrt(1024 * 1024 * width / height)
    h = w * height / width
    return (round(h / 32) * 32 // 32) * (round(w / 32) * 32 // 32)


def test_guidance_reaches_both_cfg_passes(backend):
    with bias_delta_guidance(backend.transformer, dk=1.5, dv=1.5) as guidance:
        guided = backend.generate([A])
    assert [(e["branch"], e["guided"]) for e in guidance.log] == [("cond", True), ("uncond", True)]
    assert {e["condition_tokens"] for e in guidance.log} == {pipeline_condition_tokens(40, 56)}
    assert (guided - single(backend, A)).abs().max() > 1e-4


def test_describe_records_settings_and_weights(backend, model_dir):
    info = backend.describe()
    assert info["name"] == "qwen_image_edit" and info["path"] == str(model_dir)
    settings = info["settings"]
    assert settings["num_inference_steps"] == 1 and settings["true_cfg_scale"] == 4.0 and settings["seed"] == 42
    assert settings["cache_conditions"] is True and settings["pipeline"] == "QwenImageEditPipeline"
    assert info["dtype"] == "float32" and info["weights_hash_kind"] == "full" and len(info["weights_sha256_16"]) == 16
    check_description(info)


def test_missing_prompt_field(backend):
    with pytest.raises(DataError, match="editing_instruction"):
        backend.generate([Sample(id="x", image=A.image, fields={})])


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "nowhere"
    with pytest.raises(WeightsNotFoundError, match="hf download") as err:
        QwenImageEditBackend(path=str(missing), device="cpu")
    # A folder that does not exist is where the published weights are to go.
    assert f"`hf download Qwen/Qwen-Image-Edit --local-dir {missing}`" in str(err.value)
    assert f"model.path={missing}" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match="model_index.json"):
        QwenImageEditBackend(path=str(empty), device="cpu")
    with pytest.raises(WeightsNotFoundError, match="attnedit-test/not-cached") as err:
        QwenImageEditBackend(path="attnedit-test/not-cached", device="cpu")
    assert "cache" in str(err.value)


# -- the official call ------------------------------------------------------------------------
def official_call(pipe, s: Sample, **overrides) -> dict:
    """GRAG Qwen-Edit-GRAG/test.py L80-89 and DCAG test.py L68-77, up to the first transformer call."""
    call = dict(image=pil(s), prompt=s.fields["editing_instruction"], generator=torch.manual_seed(42),
                true_cfg_scale=4.0, negative_prompt=" ", num_inference_steps=24)
    return until_transformer(pipe, lambda: pipe(**{**call, **overrides}))


TEXT_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")


def test_conditioning_is_the_official_scripts_call(backend, stock_pipeline, monkeypatch):
    monkeypatch.setattr(backend, "cache_conditions", False)  # every call runs its encoders: compare their inputs
    want_a, want_b = official_call(stock_pipeline, A), official_call(stock_pipeline, B)
    # the pipeline does not resize a per-sample list for the text encoder as it resizes one image:
    # the backend hands it one image for a grid over one image, and resizes a list itself
    as_list = official_call(stock_pipeline, A, image=[pil(A)], prompt=[A.fields["editing_instruction"]],
                            negative_prompt=[" "], generator=[torch.Generator().manual_seed(42)])
    assert not equal(as_list["text"][0]["pixel_values"], want_a["text"][0]["pixel_values"])

    grid = backend_call(backend, [A, A])  # two grid points of one image: one PIL image, as the scripts
    mixed = backend_call(backend, [B, A])  # two images: the per-sample list, resized like one image
    assert_same_calls(grid["text"], want_a["text"], TEXT_INPUTS)  # instruction, then negative prompt
    assert_same_calls(mixed["text"], want_b["text"] + want_a["text"], TEXT_INPUTS)
    assert_same_calls(grid["vae"], want_a["vae"], ("args",))
    assert_same_calls(mixed["vae"], want_b["vae"] + want_a["vae"], ("args",))

    first, ref_a = grid["transformer"][0], want_a["transformer"][0]
    assert first["img_shapes"] == ref_a["img_shapes"] * 2 and torch.equal(first["timestep"], ref_a["timestep"].expand(2))
    assert first["encoder_hidden_states_mask"] is None and ref_a["encoder_hidden_states_mask"] is None
    for i in range(2):  # the same noise (seed 42), condition latents and prompt embeddings as the official call
        assert torch.equal(first["hidden_states"][i], ref_a["hidden_states"][0])
        assert torch.equal(first["encoder_hidden_states"][i], ref_a["encoder_hidden_states"][0])
    both = mixed["transformer"][0]
    for i, ref in enumerate((want_b["transformer"][0], ref_a)):  # padded to the longer prompt, masked
        n = ref["encoder_hidden_states"].shape[1]
        assert torch.equal(both["hidden_states"][i], ref["hidden_states"][0])
        assert torch.equal(both["encoder_hidden_states"][i, :n], ref["encoder_hidden_states"][0])
        assert int(both["encoder_hidden_states_mask"][i].sum()) == n and not both["encoder_hidden_states"][i, n:].any()


def test_grid_of_one_image_encodes_it_once(backend, monkeypatch):
    """A 5-point (dk, dv) grid over one image in the runner's batches of 2: the text encoder
    (instruction and negative prompt) and the VAE encoder run once for the image with
    cache_conditions, in every pipeline call without; the denoised latents (what the VAE
    decodes; the decoding itself is cut to save time) are the same."""
    c = source_sample(7, "turn the cat into a tiger", SIZE, "c")
    points = [(1.0, 1.0), (1.1, 1.0), (1.1, 1.15), (1.15, 1.15), (1.2, 1.05)]
    batches = [points[0:2], points[2:4], points[4:]]

    def run_grid():
        watched = {"text": backend.pipe.text_encoder, "vae": backend.pipe.vae.encoder,
                   "decode": backend.pipe.vae.post_quant_conv}
        with recording(watched, stop_at="decode") as seen:
            for batch in batches:
                with bias_delta_guidance(backend.transformer, dk=[p[0] for p in batch], dv=[p[1] for p in batch]), \
                        pytest.raises(Stop):
                    backend.generate([c] * len(batch))
        return seen

    cached = run_grid()
    assert len(cached["text"]) == 2 and len(cached["vae"]) == 1
    assert len(backend._conditions) == 1 and len(backend.pipe._condition_memo) == 1  # one image held
    monkeypatch.setattr(backend, "cache_conditions", False)
    uncached = run_grid()
    assert len(uncached["text"]) == 2 * len(batches) and len(uncached["vae"]) == len(batches)
    for got, want in zip(cached["decode"], uncached["decode"]):
        torch.testing.assert_close(got["args"][0], want["args"][0], rtol=0, atol=1e-6)
    assert not torch.allclose(cached["decode"][0]["args"][0][0], cached["decode"][0]["args"][0][1])  # (1, 1) vs 1.1
