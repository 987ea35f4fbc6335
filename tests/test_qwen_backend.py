"""The qwen_image_edit backend on a tiny QwenImageEditPipeline (tests/qwen_tiny.py),
built offline, saved with save_pretrained and loaded back by the backend through
`path`, like the real weights.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnedit.backends.base import check_description
from attnedit.backends.qwen_edit import QwenImageEditBackend
from attnedit.data.base import Sample
from attnedit.errors import DataError, WeightsNotFoundError
from attnedit.methods.bias_delta import bias_delta_guidance
from qwen_tiny import save_tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_qwen_image_edit"))


@pytest.fixture(scope="module")
def backend(model_dir):
    return QwenImageEditBackend(path=str(model_dir), device="cpu", num_inference_steps=1)


def sample(sid: str, seed: int, instruction: str, size=(40, 56)) -> Sample:
    # 8-bit values like a decoded JPEG, non-square
    pixels = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(seed)) / 255.0
    return Sample(id=sid, image=pixels, fields={"editing_instruction": instruction})


A = sample("a", 1, "make the sky blue")
B = sample("b", 2, "add a red hat to the person in the middle")
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
    assert info["dtype"] == "float32" and info["weights_hash_kind"] == "full" and len(info["weights_sha256_16"]) == 16
    check_description(info)


def test_missing_prompt_field(backend):
    with pytest.raises(DataError, match="editing_instruction"):
        backend.generate([Sample(id="x", image=A.image, fields={})])


def test_missing_weights_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "nowhere"
    with pytest.raises(WeightsNotFoundError, match="huggingface-cli download") as err:
        QwenImageEditBackend(path=str(missing), device="cpu")
    assert str(missing) in str(err.value) and "model.path=<dir>" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match="model_index.json"):
        QwenImageEditBackend(path=str(empty), device="cpu")
    with pytest.raises(WeightsNotFoundError, match="attnedit-test/not-cached") as err:
        QwenImageEditBackend(path="attnedit-test/not-cached", device="cpu")
    assert "cache" in str(err.value)
