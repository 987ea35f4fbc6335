"""Learned metrics (id_sim, directional_clip, lpips): their parts, settings and errors
(whole-metric comparisons with the libraries themselves: test_metric_references.py).

Offline: seeded random backbones, HF_HUB_OFFLINE=1; every download function a metric
could reach is replaced by one that fails like an offline machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path
from urllib.error import URLError

import lpips
import numpy as np
import open_clip
import pytest
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models import inception_resnet_v1
from PIL import Image
from skimage import data

from attnedit.errors import ConfigError, DataError, WeightsNotFoundError
from attnedit.metrics.clip import DirectionalCLIP, preprocess
from attnedit.metrics.identity import FACE_SIZE, IdentitySimilarity
from attnedit.metrics.perceptual import LPIPS
from attnedit.metrics.registry import available_metrics, build_metric

SMALL_CLIP = "ViT-S-32-alt"  # same BPE tokenizer and code path as ViT-B-32, a quarter of the compute


def _quantized(x: torch.Tensor) -> torch.Tensor:
    """Images whose values are exact multiples of 1/255, like decoded PNGs."""
    return x.mul(255).round().div(255)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    image = torch.nn.functional.interpolate(image, size=(160, 160), mode="bilinear", antialias=True)
    return _quantized(image.clamp(0, 1))


@pytest.fixture(scope="module")
def id_metric() -> IdentitySimilarity:
    return IdentitySimilarity(weights="random", seed=0)


@pytest.fixture(scope="module")
def unaligned() -> IdentitySimilarity:
    """align="none": the crop is the centred square; tests swap in a known embedder."""
    return IdentitySimilarity(weights="random", align="none")


@pytest.fixture(scope="module")
def clip_metric() -> DirectionalCLIP:
    templates = ("a photo of {}.", "a portrait of {}.", "a cropped photo of {}.")
    return DirectionalCLIP(model=SMALL_CLIP, weights="random", seed=0, templates=templates)


class FixedLinearEmbedder(torch.nn.Module):
    """A known embedding: a fixed random linear map of the flattened crop."""

    def __init__(self, matrix: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.from_numpy(matrix).float())

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return faces.flatten(1) @ self.matrix.T


# --- identity ---------------------------------------------------------------------------


def test_id_sim_is_cosine_of_known_embeddings(unaligned, monkeypatch):
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((16, 3 * FACE_SIZE * FACE_SIZE)).astype(np.float32)
    metric = unaligned
    monkeypatch.setattr(metric, "embedder", FixedLinearEmbedder(matrix))
    edited = rng.integers(0, 256, (3, 3, FACE_SIZE, FACE_SIZE)) / 255.0
    reference = edited.copy()
    reference[1] = rng.integers(0, 256, (3, FACE_SIZE, FACE_SIZE)) / 255.0
    reference[2, :, :80] = 1 - reference[2, :, :80]

    out = metric(torch.from_numpy(edited).float(), torch.from_numpy(reference).float())

    def embed(x):  # (round(255 x) - 127.5) / 128, then the map, in float64
        faces = (np.round(x * 255) - 127.5) / 128
        e = faces.reshape(len(x), -1) @ matrix.astype(np.float64).T
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    expected = (embed(edited) * embed(reference)).sum(axis=1)
    np.testing.assert_allclose(out["id_sim"].numpy(), expected, atol=1e-5)
    assert abs(expected[0] - 1) < 1e-12 and expected[1] < 0.9  # the pairs really differ
    assert out["id_face_fallback"].tolist() == [True, True, True]  # align="none": never a detected face


def test_fallback_crop_is_centered_square_resized(unaligned):
    image = _quantized(torch.rand(1, 3, 200, 240))
    faces, fallback = unaligned.align_faces(image)
    # Independently: the middle 200x200 columns, resized to 160, on the 0..255 scale.
    square = image[..., :, 20:220] * 255
    expected = torch.nn.functional.interpolate(square, size=(160, 160), mode="bilinear", antialias=True)
    torch.testing.assert_close(faces, (expected - 127.5) / 128, atol=1e-4, rtol=0)
    assert fallback.tolist() == [True]


def test_id_sim_identical_pair_is_one_and_no_face_is_flagged(id_metric, astronaut):
    gray = torch.full_like(astronaut, 0.5)
    out = id_metric(torch.cat([astronaut, gray, astronaut]), torch.cat([astronaut, astronaut, gray]))
    assert abs(float(out["id_sim"][0]) - 1) < 1e-6
    assert out["id_face_fallback"].dtype == torch.bool
    assert out["id_face_fallback"].tolist() == [False, True, True]


def test_identical_images_give_one_with_a_sensitive_embedding(unaligned, astronaut, monkeypatch):
    known = unaligned
    matrix = np.random.default_rng(1).standard_normal((8, 3 * FACE_SIZE * FACE_SIZE)).astype(np.float32)
    monkeypatch.setattr(known, "embedder", FixedLinearEmbedder(matrix))
    images = torch.cat([astronaut, _quantized(astronaut.roll(7, dims=-1))])
    same, different = known(images, images)["id_sim"], known(images, images.flip(0))["id_sim"]
    np.testing.assert_allclose(same.numpy(), 1.0, atol=1e-6)
    assert (different < 0.999).all()


def test_mtcnn_crop_equals_facenet_single_image_pipeline(id_metric, astronaut):
    gray = torch.full_like(astronaut, 0.5)
    faces, fallback = id_metric.align_faces(torch.cat([astronaut, gray]))
    assert fallback.tolist() == [False, True]
    pixels = astronaut[0].mul(255).round().to(torch.uint8).permute(1, 2, 0)
    reference_face = MTCNN(image_size=160)(Image.fromarray(pixels.numpy()))  # facenet-pytorch's README input
    assert reference_face is not None
    torch.testing.assert_close(faces[0], reference_face, atol=1e-6, rtol=0)


def test_id_sim_weights_are_marked_and_validated(id_metric):
    assert {"id_sim", "directional_clip", "lpips"} <= set(available_metrics())
    assert id_metric.weights == "random(seed=0)" and id_metric.uses_random_weights
    with pytest.raises(ConfigError):
        IdentitySimilarity(weights="imagenet")
    with pytest.raises(ConfigError):
        IdentitySimilarity(weights="random", align="dlib")


# --- LPIPS ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # lpips' torchvision call
def test_lpips_wrapper_equals_lpips_package():
    metric = build_metric("lpips", weights="random", seed=3)
    assert metric.weights == "random(seed=3)"
    gen = torch.Generator().manual_seed(0)
    edited, reference = torch.rand(3, 3, 64, 64, generator=gen), torch.rand(3, 3, 64, 64, generator=gen)
    reference[0] = edited[0]

    direct = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    direct.load_state_dict(metric.model.state_dict())
    with torch.no_grad():  # one image at a time: per-image values must not depend on the batch
        expected = torch.cat([direct(e[None] * 2 - 1, r[None] * 2 - 1).flatten() for e, r in zip(edited, reference)])

    out = metric(edited, reference)["lpips"]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert abs(float(out[0])) < 1e-6  # identical images
    assert (out[1:] > 1e-3).all()


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
def test_lpips_random_means_seeded_backbone_with_shipped_heads():
    metric = LPIPS(net="squeeze", weights="random", seed=5)
    state = metric.model.state_dict()
    heads = torch.load(Path(lpips.__file__).parent / "weights/v0.1/squeeze.pth", map_location="cpu", weights_only=True)
    for key, value in heads.items():
        torch.testing.assert_close(state[key], value)
    torch.manual_seed(5)
    seeded = lpips.LPIPS(net="squeeze", pnet_rand=True, verbose=False).state_dict()
    backbone = [k for k in state if k.startswith("net.")]
    assert backbone and all(torch.equal(state[k], seeded[k]) for k in backbone)
    other = LPIPS(net="squeeze", weights="random", seed=6).model.state_dict()
    assert not all(torch.equal(state[k], other[k]) for k in backbone)


# --- Directional CLIP -------------------------------------------------------------------


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_directional_clip_on_hand_built_embeddings(clip_metric, monkeypatch):
    images = {0: [1.0, 0.0, 0.0], 1: [0.0, 1.0, 0.0], 2: [0.6, 0.8, 0.0], 3: [0.0, 0.0, 1.0], 4: [1.0, 1e-8, 0.0]}
    texts = {"src": [1.0, 0.0, 0.0], "tgt": [0.0, 0.6, 0.8]}
    # Each image is flat with value id / 10; the patched encoders look the embeddings up.
    monkeypatch.setattr(
        clip_metric, "embed_images", lambda x: torch.tensor([images[round(float(v) * 10)] for v in x[:, 0, 0, 0]])
    )
    monkeypatch.setattr(clip_metric, "embed_texts", lambda t: torch.tensor([texts[s] for s in t]))

    def flat(*ids):
        return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4) / 10

    out = clip_metric(
        flat(1, 2, 3, 0, 4, 2), flat(0, 0, 0, 0, 0, 1),
        source_text=["src"] * 6, target_text=["tgt", "tgt", "tgt", "tgt", "tgt", "src"],
    )["directional_clip"].numpy()

    e = {k: np.array(v) for k, v in images.items()}
    dt = np.array(texts["tgt"]) - np.array(texts["src"])
    expected = [float(_unit(e[k] - e[0]) @ _unit(dt)) for k in (1, 2, 3)]
    np.testing.assert_allclose(out[:3], expected, atol=1e-12)
    # No image change, a change at float32 noise level, no text change: undefined -> NaN.
    assert np.isnan(out[3:]).all()


def test_embed_texts_averages_normalized_templates(clip_metric):
    """The mean of the normalized template embeddings, not normalized again: the difference
    of two is StyleGAN-NADA's mean of per-template differences (the open_clip-direct
    comparison of the whole score is in test_metric_references.py)."""
    texts = ["a bald man", "a woman with blond hair"]
    clip_metric._text_cache.clear()  # other tests may have cached these texts from other batches
    got = clip_metric.embed_texts(texts).double().numpy()
    tokenizer = open_clip.get_tokenizer(SMALL_CLIP)
    expected = []
    for text in texts:
        with torch.no_grad():
            emb = clip_metric.model.encode_text(tokenizer([t.format(text) for t in clip_metric.templates]))
        expected.append(_unit(emb.double().numpy()).mean(axis=0))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    assert len(clip_metric.templates) > 1 and (np.linalg.norm(got, axis=1) < 1 - 1e-3).all()
    # Cached per string: the same values come back without re-encoding.
    clip_metric.model.encode_text = None  # any call would now fail
    try:
        np.testing.assert_array_equal(clip_metric.embed_texts(texts[::-1]).numpy(), got[::-1].astype(np.float32))
    finally:
        del clip_metric.model.encode_text


def test_clip_image_embeddings_match_open_clip_eval_transform(clip_metric):
    cfg = clip_metric.model.visual.preprocess_cfg
    transform = open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
        resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
    )
    images = torch.rand(2, 3, 150, 190, generator=torch.Generator().manual_seed(1))
    pixels = torch.stack([transform(image) for image in images])
    torch.testing.assert_close(preprocess(images, cfg), pixels, atol=1e-5, rtol=0)
    with torch.no_grad():
        raw = clip_metric.model.encode_image(pixels).double().numpy()
    # L2-normalized before any difference is taken (StyleGAN-NADA convention).
    np.testing.assert_allclose(clip_metric.embed_images(images).double().numpy(), _unit(raw), atol=1e-5)


def test_directional_clip_needs_text_pairs(clip_metric):
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(DataError, match="source_text"):
        clip_metric(x, x, target_text=["a", "b"])
    with pytest.raises(DataError, match="2 strings"):
        clip_metric(x, x, source_text=["a"], target_text=["b"])


def test_default_clip_tokenizer_ships_with_open_clip():
    tokens = open_clip.get_tokenizer("ViT-B-32-quickgelu")(["a photo of a smiling person."])
    assert tokens.shape == (1, 77) and int(tokens[0, 0]) == 49406  # <start_of_text>


# --- weights missing offline ------------------------------------------------------------


class Downloads:
    """Stands in for a library's download function: records the call, fails like no network."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        raise self.error


def _unreachable() -> Downloads:
    return Downloads(URLError("[Errno -3] Temporary failure in name resolution"))


@pytest.mark.parametrize("hub_offline", ["1", "0"])
def test_facenet_weights_missing_offline(tmp_path, monkeypatch, hub_offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
    download = _unreachable()
    monkeypatch.setattr(inception_resnet_v1, "download_url_to_file", download)
    with pytest.raises(WeightsNotFoundError) as err:
        IdentitySimilarity()
    message = str(err.value)
    assert "20180402-114759-vggface2.pt" in message and str(tmp_path / "checkpoints") in message
    assert "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/" in message
    assert len(download.calls) == (0 if hub_offline == "1" else 1)  # offline: no network attempt at all


@pytest.mark.parametrize("hub_offline", ["1", "0"])
def test_lpips_weights_missing_offline(tmp_path, monkeypatch, hub_offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
    download = _unreachable()
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(WeightsNotFoundError) as err:
        LPIPS(net="alex")
    message = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert len(download.calls) == (0 if hub_offline == "1" else 1)


@pytest.mark.parametrize("hub_offline", ["1", "0"])
def test_clip_weights_missing_offline(tmp_path, monkeypatch, hub_offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", hub_offline)
    hub = Downloads(OSError("We couldn't connect to 'https://huggingface.co' to load this file"))
    url = _unreachable()
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", url)
    with pytest.raises(WeightsNotFoundError) as err:
        DirectionalCLIP(cache_dir=str(tmp_path))
    message = str(err.value)
    for part in ("ViT-B-32-quickgelu", "'openai'", "timm/vit_base_patch32_clip_224.openai", str(tmp_path)):
        assert part in message
    assert not url.calls  # the tag's hub copy is preferred
    assert (len(hub.calls) == 0) == (hub_offline == "1")
